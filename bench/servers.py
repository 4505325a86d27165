"""Candidate HTTP servers for mlmon, measured side by side in the same run.

Exporter — server CPU per request (utime+stime of the server process from /proc, divided by
the requests it answered) and client-side p50/p99, for a POST of 100 row events, a POST of
one event, GET /metrics (about 10k series, gzip as Prometheus asks) and GET /readyz (no work
of mlmon's: the server's own cost), against:

  mlmon          the real `mlmon serve` (uvicorn + httptools behind mlmon's guard,
                 serving `ExporterApp`), unchanged
  aiohttp-web    aiohttp.web calling the same `mlmon.http.api.Api` methods in a thread pool
  uvicorn-h11    `ExporterApp` on uvicorn with h11 (no guard: it subclasses the httptools
                 protocol)

Proxy — the latency added to the requests of bench/proxy.py (same upstream, same 10-row
bodies, one keep-alive connection per target, the targets interleaved request by request),
and the CPU of the proxy process per request:

  mlmon              the real `mlmon serve --upstream ...` (uvicorn + httptools + guard,
                     aiohttp client, capture on), unchanged
  aiohttp-web        aiohttp.web + the pooled aiohttp ClientSession of mlmon's proxy
                     (`Forwarder`), no capture
  uvicorn-httptools  uvicorn + httptools + mlmon's guard + `Forwarder`, no capture

Every figure is a median over runs. Within a run the candidates take turns — in slices of
half a second (exporter), request by request (proxy) — and each is compared with the first
candidate by its ratio in the same run, because this machine's speed drifts within minutes.

    python bench/servers.py            # about 5 minutes on 2 cores
    python bench/servers.py --quick    # about 1 minute

Prints a table and writes bench/results/servers.json. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from mlmon.demo import synthetic

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.suite import MODEL, TICK, row_bodies, setup, spec, summary

SCRIPT = str(Path(__file__).resolve())
EXPORTERS = ("mlmon", "aiohttp-web", "uvicorn-h11")
PROXIES = ("mlmon", "aiohttp-web", "uvicorn-httptools")
IDLE_SECONDS = 3.0
SEED_VERSIONS = 9  # x 600 events: about 10.5k series on /metrics
LISTENING = r"listening on http://127\.0\.0\.1:(\d+)/"
SERVING = r"serving \d+ model\(s\) on http://127\.0\.0\.1:(\d+)/"
PROXY_ON = r"proxy on http://127\.0\.0\.1:(\d+)/"


# ================================================================== candidate servers
# Each runs as `python bench/servers.py --MODE ARG` and prints `listening on URL` once bound.


def _listen() -> tuple[socket.socket, int]:
    """A listening socket on 127.0.0.1 whose connections have TCP_NODELAY, as mlmon's own
    (`mlmon.http.server.listen`): uvicorn writes a response's head and body separately, and
    asyncio leaves Nagle's algorithm on for sockets from `socket.create_server`."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=1024)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock, sock.getsockname()[1]


def serve_aiohttp_exporter(config: str) -> None:
    """aiohttp.web answering the hot routes with `mlmon.http.api.Api`, built as `cmd_serve`
    builds it; the work runs in a pool of `server.threads` threads, as in `ExporterApp`."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from aiohttp import web
    from mlmon.cli import build_exposition
    from mlmon.core.config import load_config
    from mlmon.core.monitor import Monitor
    from mlmon.http.api import Api, Reply, json_reply
    from mlmon.http.auth import load_tokens

    cfg = load_config(config)
    monitor = Monitor(cfg)
    tokens = load_tokens(cfg)
    registry, render = build_exposition(monitor)
    api = Api(monitor, registry, tokens, render)
    pool = ThreadPoolExecutor(max_workers=cfg.server.threads, thread_name_prefix="bench-http")

    def respond(reply: Reply) -> web.Response:
        headers = [("Content-Type", reply.content_type), *reply.headers]
        return web.Response(status=reply.status, body=reply.body, headers=headers)

    def guarded(endpoint: str, handler: Any, *args: Any) -> Reply:
        try:
            return handler(*args)
        except Exception:
            counters = monitor.counters
            counters.count(counters.rejected, (endpoint, "internal_error"))
            return json_reply(
                {"error": "internal error", "reason": "internal_error", "details": []}, 500
            )

    async def predictions(request: web.Request) -> web.Response:
        refused = api.authorize("predictions", tokens.ingest, request.headers.get("Authorization"))
        if refused is not None:
            return respond(refused)
        body = await request.read()
        args = (
            request.match_info["model"],
            body,
            len(body),
            request.headers.get("Content-Type"),
            request.headers.get("Content-Encoding"),
            request.query.get("partial"),
        )
        loop = asyncio.get_running_loop()
        reply = await loop.run_in_executor(pool, guarded, "predictions", api.predictions, *args)
        return respond(reply)

    async def metrics(request: web.Request) -> web.Response:
        refused = api.authorize("metrics", tokens.metrics, request.headers.get("Authorization"))
        if refused is not None:
            return respond(refused)
        accept = request.headers.get("Accept-Encoding")
        loop = asyncio.get_running_loop()
        return respond(await loop.run_in_executor(pool, guarded, "metrics", api.metrics, accept))

    async def readyz(request: web.Request) -> web.Response:
        return web.Response(text="ready\n")

    app = web.Application(client_max_size=cfg.limits["max_body_bytes"])
    app.router.add_post("/v1/models/{model}/predictions", predictions)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/readyz", readyz)
    sock, port = _listen()
    print(f"aiohttp-web listening on http://127.0.0.1:{port}/", flush=True)
    web.run_app(app, sock=sock, access_log=None, print=None)


def serve_uvicorn_exporter(config: str, http: str) -> None:
    """`ExporterApp` built as `cmd_serve` builds it, on uvicorn with ``http`` (httptools or
    h11) and without mlmon's guard (which subclasses the httptools protocol)."""
    import logging

    import uvicorn
    from mlmon.cli import build_exposition
    from mlmon.core.config import load_config
    from mlmon.core.monitor import Monitor
    from mlmon.http.api import Api
    from mlmon.http.auth import load_tokens
    from mlmon.http.server import ExporterApp
    from mlmon.http.web import create_app

    cfg = load_config(config)
    monitor = Monitor(cfg)
    tokens = load_tokens(cfg)
    registry, render = build_exposition(monitor)
    api = Api(monitor, registry, tokens, render)
    app = ExporterApp(api, create_app(monitor, registry, tokens, api), cfg.server.threads)
    sock, port = _listen()
    print(f"uvicorn-{http} listening on http://127.0.0.1:{port}/", flush=True)
    config_ = uvicorn.Config(
        app, http=http, loop="asyncio", lifespan="off", log_config=None, access_log=False,
        server_header=False, timeout_keep_alive=61, backlog=1024,
    )  # fmt: skip
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    uvicorn.Server(config_).run(sockets=[sock])


class Forwarder:
    """What both bare proxies do per request: the request rebuilt from its method, target,
    headers less hop-by-hop ones (mlmon's `_forwarded`) and body, sent through a
    ClientSession configured as mlmon's proxy configures its own; the response's status,
    headers less hop-by-hop ones and body back. No capture, no streaming."""

    def __init__(self, upstream: str) -> None:
        from mlmon.capture.counters import ProxyStats
        from mlmon.capture.proxy import Proxy
        from mlmon.core.config import ProxySettings

        self.proxy = Proxy(ProxySettings(upstream=upstream, model=MODEL), ProxyStats())

    async def __call__(
        self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        from mlmon.capture.proxy import _HOP_BY_HOP, _forwarded
        from yarl import URL

        url = URL(self.proxy.base + target.decode("latin-1"), encoded=True)
        async with self.proxy._session().request(
            method, url, headers=_forwarded(headers), data=body, allow_redirects=False,
            compress=None, chunked=None,
        ) as resp:  # fmt: skip
            out = [(k.lower(), v) for k, v in resp.raw_headers if k.lower() not in _HOP_BY_HOP]
            return resp.status, out, await resp.read()


def serve_aiohttp_proxy(upstream: str) -> None:
    from aiohttp import web

    forward = Forwarder(upstream)

    async def handle(request: web.Request) -> web.Response:
        headers = [(k.lower(), v) for k, v in request.raw_headers]
        target = request.raw_path.encode("latin-1")
        status, out, data = await forward(request.method, target, headers, await request.read())
        kept = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in out]
        # aiohttp.web frames the body itself
        kept = [(k, v) for k, v in kept if k != "content-length"]
        return web.Response(status=status, body=data, headers=kept)

    app = web.Application(client_max_size=10 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handle)
    sock, port = _listen()
    print(f"aiohttp-web proxy listening on http://127.0.0.1:{port}/", flush=True)
    web.run_app(app, sock=sock, access_log=None, print=None)


def serve_uvicorn_proxy(upstream: str) -> None:
    """uvicorn + httptools behind mlmon's guard (as the real proxy), with `Forwarder`."""
    import logging

    import uvicorn
    from mlmon.http.guard import Guard, Limits, guarded_protocol

    forward = Forwarder(upstream)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        parts = []
        while True:
            message = await receive()
            parts.append(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        query = scope["query_string"]
        target = scope["raw_path"] + (b"?" + query if query else b"")
        body = b"".join(parts)
        status, out, data = await forward(scope["method"], target, scope["headers"], body)
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": data})

    sock, port = _listen()
    print(f"uvicorn-httptools proxy listening on http://127.0.0.1:{port}/", flush=True)
    config = uvicorn.Config(
        app, http=guarded_protocol(Guard(Limits())), loop="asyncio", lifespan="off",
        log_config=None, access_log=False, server_header=False, date_header=False,
        timeout_keep_alive=61, backlog=1024,
    )  # fmt: skip
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    uvicorn.Server(config).run(sockets=[sock])


# ================================================================== harness
class Server:
    """A candidate server process; ready once its log shows every pattern and
    ``ready_path`` answers."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        patterns: list[str],
        tmp: Path,
        ready_path: str | None = "/readyz",
    ) -> None:
        self.name = name
        self.log = tmp / f"{re.sub(r'[^a-z0-9]+', '-', name)}-{time.monotonic_ns()}.log"
        self._fh = self.log.open("wb")
        self.proc = subprocess.Popen(argv, stdout=self._fh, stderr=subprocess.STDOUT)
        self.ports: list[int] = []
        deadline = time.monotonic() + 60
        while True:
            text = self.log.read_text()
            found = [re.search(p, text) for p in patterns]
            if all(found):
                self.ports = [int(m.group(1)) for m in found if m]
                break
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"{name} did not start:\n{text}")
            time.sleep(0.05)
        self.port = self.ports[0]
        while ready_path is not None:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                try:
                    c.request("GET", ready_path)
                    if c.getresponse().status == 200:
                        break
                finally:
                    c.close()
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"{name} not ready:\n{self.log.read_text()}")
            time.sleep(0.05)

    def cpu_seconds(self, pid: int | None = None) -> float:
        stat = Path(f"/proc/{pid or self.proc.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def children(self) -> list[int]:
        out = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            out += [int(p) for p in (task / "children").read_text().split()]
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._fh.close()


def _client(
    port: int,
    method: str,
    path: str,
    bodies: list[bytes],
    headers: dict[str, str],
    seconds: float,
    queue: mp.Queue,
) -> None:
    """One keep-alive connection sending requests in turn for ``seconds``."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        lat = []
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            t0 = time.perf_counter()
            conn.request(method, path, bodies[i % len(bodies)] if bodies else None, headers)
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                raise RuntimeError(f"{method} {path}: status {r.status}")
            lat.append(time.perf_counter() - t0)
            i += 1
        queue.put((i, lat, None))
    except Exception as e:
        queue.put((0, [], repr(e)))


def load(
    server: Server, workload: dict[str, Any], seconds: float, connections: int
) -> tuple[int, float, np.ndarray]:
    """Requests, server CPU seconds and client latencies (ms) of one timed slice."""
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    args = (server.port, workload["method"], workload["path"], workload["bodies"],
            workload["headers"], seconds, q)  # fmt: skip
    procs = [ctx.Process(target=_client, args=args) for _ in range(connections)]
    cpu0 = server.cpu_seconds()
    for p in procs:
        p.start()
    results = [q.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join(10)
    cpu = server.cpu_seconds() - cpu0
    errors = [r[2] for r in results if r[2]]
    if errors:
        raise RuntimeError(f"{server.name}: {errors[0]}")
    return sum(r[0] for r in results), cpu, np.concatenate([r[1] for r in results]) * 1e3


def _call(port: int, method: str, path: str, body: bytes | None = None, headers=None) -> bytes:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        c.request(method, path, body, headers or {})
        r = c.getresponse()
        data = r.read()
    finally:
        c.close()
    if r.status != 200:
        raise RuntimeError(f"{method} {path}: {r.status} {data[:200]!r}")
    return data


def _series(port: int) -> int:
    text = _call(port, "GET", "/metrics").decode()
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def exporter_bench(
    tmp: Path, names: list[str], runs: int, seconds: float, slices: int, connections: int
) -> dict[str, Any]:
    cfg = setup(tmp)
    events = synthetic.without_labels(synthetic.events(spec(), 20_000, seed=5, version="v1"))
    path = f"/v1/models/{MODEL}/predictions"
    json_headers = {"Content-Type": "application/json"}
    workloads = {
        "POST 100 events": {"method": "POST", "path": path, "headers": json_headers,
                            "bodies": row_bodies(events, 100)},
        "POST 1 event": {"method": "POST", "path": path, "headers": json_headers,
                         "bodies": row_bodies(events[:2000], 1)},
        "GET /metrics": {"method": "GET", "path": "/metrics", "bodies": [],
                         "headers": {"Accept-Encoding": "gzip"}},
        # no work of mlmon's: what the server itself costs per request
        "GET /readyz": {"method": "GET", "path": "/readyz", "bodies": [], "headers": {}},
    }  # fmt: skip
    serve = ["--config", str(cfg), "--web.listen-address", "127.0.0.1:0"]
    argv = {
        "mlmon": [sys.executable, "-m", "mlmon", "serve", *serve],
        "aiohttp-web": [sys.executable, SCRIPT, "--serve-aiohttp", str(cfg)],
        "uvicorn-h11": [sys.executable, SCRIPT, "--serve-uvicorn", str(cfg), "h11"],
    }  # fmt: skip
    servers: dict[str, Server] = {}
    try:
        for name in names:
            servers[name] = Server(
                name, argv[name], [SERVING if name.startswith("mlmon") else LISTENING], tmp
            )
        # the same state in every server: ~10k series, the label cache filled, warm paths
        seed = synthetic.without_labels(synthetic.events(spec(), 600, seed=2))
        for v in range(SEED_VERSIONS):
            for e in seed:
                e["version"] = f"v{v}"
            body = orjson.dumps({"events": seed})
            for s in servers.values():
                _call(s.port, "POST", path, body, json_headers)
        series = {n: _series(s.port) for n, s in servers.items()}
        replies: dict[str, set[bytes]] = {w: set() for w in workloads if w != "GET /metrics"}
        for s in servers.values():
            for wname, w in workloads.items():
                for i, b in enumerate((w["bodies"] or [None])[:20]):
                    reply = _call(s.port, w["method"], w["path"], b, w["headers"])
                    if i == 0 and wname in replies:
                        replies[wname].add(reply)
        if any(len(r) != 1 for r in replies.values()):
            raise RuntimeError(f"the candidates answer differently: {replies}")
        idle = idle_cpu({n: [(s, None)] for n, s in servers.items()})
        # A run is `slices` rounds; each round gives every workload and every candidate a
        # slice of seconds/slices, in an order rotated round by round, so that a change of
        # the machine's speed within the run falls on every candidate alike.
        raw: dict[str, dict[str, list[dict]]] = {w: {n: [] for n in names} for w in workloads}
        for r in range(runs):
            acc: dict[tuple[str, str], list] = {(w, n): [] for w in workloads for n in names}
            for k in range(slices):
                shift = (r * slices + k) % len(names)
                for wname, w in workloads.items():
                    for name in names[shift:] + names[:shift]:
                        acc[wname, name].append(
                            load(servers[name], w, seconds / slices, connections)
                        )
            for (wname, name), parts in acc.items():
                n = sum(p[0] for p in parts)
                lat = np.concatenate([p[2] for p in parts])
                raw[wname][name].append(
                    {
                        "requests": n,
                        "cpu_us": sum(p[1] for p in parts) / n * 1e6,
                        "p50_ms": float(np.percentile(lat, 50)),
                        "p99_ms": float(np.percentile(lat, 99)),
                    }
                )
            print(f"  exporter run {r + 1}/{runs} done", file=sys.stderr, flush=True)
    finally:
        for s in servers.values():
            s.stop()
    base = names[0]
    out: dict[str, Any] = {"series": series, "idle_cpu_ms_per_second": idle, "workloads": {}}
    for wname, by in raw.items():
        res = {}
        for name, rs in by.items():
            res[name] = {
                "cpu_us_per_request": summary([x["cpu_us"] for x in rs]),
                "requests_per_run": summary([float(x["requests"]) for x in rs]),
                "p50_ms": summary([x["p50_ms"] for x in rs]),
                "p99_ms": summary([x["p99_ms"] for x in rs]),
                f"cpu_ratio_vs_{base}": summary(
                    [x["cpu_us"] / b["cpu_us"] for x, b in zip(rs, by[base], strict=True)]
                ),
            }
        out["workloads"][wname] = res
    return out


def proxy_bench(tmp: Path, names: list[str], requests: int, runs: int) -> dict[str, Any]:
    """bench/proxy.py's measurement with several proxies: each request goes to the
    upstream directly and through every proxy, in an order rotated request by request."""
    from bench.proxy import ROWS, _upstream

    q: mp.Queue = mp.get_context("fork").Queue()
    upstream = mp.get_context("fork").Process(target=_upstream, args=(q,), daemon=True)
    upstream.start()
    up_port = q.get(timeout=10)
    up = f"http://127.0.0.1:{up_port}"
    d = tmp / "proxy"
    d.mkdir()
    cfg = setup(d)
    features = list(spec().config_features())
    cfg.write_text(
        cfg.read_text()
        + "proxy:\n"
        + f"  upstream: {up}\n"
        + "  listen_address: 127.0.0.1:0\n"
        + f"  models:\n    {MODEL}:\n      inputs: {json.dumps(features)}\n"
    )
    serve = [
        "--config",
        str(cfg),
        "--web.listen-address",
        "127.0.0.1:0",
        "--upstream",
        up,
        "--proxy.listen-address",
        "127.0.0.1:0",
    ]
    argv = {
        "mlmon": [sys.executable, "-m", "mlmon", "serve", *serve],
        "aiohttp-web": [sys.executable, SCRIPT, "--proxy-aiohttp", up],
        "uvicorn-httptools": [sys.executable, SCRIPT, "--proxy-uvicorn", up],
    }  # fmt: skip
    events = synthetic.events(spec(), 2_000, seed=3)
    rows = [[e["features"][n] for n in features] for e in events]
    bodies = [orjson.dumps({"instances": rows[i : i + ROWS]}) for i in range(0, len(rows), ROWS)]
    path = f"/v1/models/{MODEL}:predict"
    headers = {"Content-Type": "application/json"}
    servers: dict[str, Server] = {}
    try:
        for name in names:
            patterns = [PROXY_ON, SERVING] if name.startswith("mlmon") else [LISTENING]
            servers[name] = Server(name, argv[name], patterns, d, ready_path=None)
        pids = {n: s.proc.pid for n, s in servers.items()}
        for n in servers:  # mlmon's proxy is the exporter's child; capture is the exporter's
            if n.startswith("mlmon"):
                (pids[n],) = servers[n].children()
        conns = {"direct": http.client.HTTPConnection("127.0.0.1", up_port, timeout=30)}
        for n, s in servers.items():
            conns[n] = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        for conn in conns.values():  # warm up
            for b in bodies[:50]:
                conn.request("POST", path, b, headers)
                conn.getresponse().read()
        targets = list(conns)
        idle = idle_cpu(
            {
                n: [(s, pids[n])] + ([(s, None)] if n.startswith("mlmon") else [])
                for n, s in servers.items()
            }
        )
        stats: dict[str, dict[str, list[float]]] = {
            t: {"p50": [], "p99": [], "cpu_us": []} for t in targets
        }
        mlmons = [n for n in names if n.startswith("mlmon")]
        capture_cpu: dict[str, list[float]] = {n: [] for n in mlmons}
        for r in range(runs):
            lat: dict[str, list[float]] = {t: [] for t in targets}
            cpu0 = {n: servers[n].cpu_seconds(pids[n]) for n in names}
            cap0 = {n: servers[n].cpu_seconds() for n in mlmons}
            for i in range(requests):
                b = bodies[i % len(bodies)]
                k = i % len(targets)
                for t in targets[k:] + targets[:k]:
                    conn = conns[t]
                    t0 = time.perf_counter()
                    conn.request("POST", path, b, headers)
                    resp = conn.getresponse()
                    resp.read()
                    lat[t].append(time.perf_counter() - t0)
                    if resp.status != 200:
                        raise RuntimeError(f"{t}: status {resp.status}")
            for n in names:
                cpu = servers[n].cpu_seconds(pids[n]) - cpu0[n]
                stats[n]["cpu_us"].append(cpu / requests * 1e6)
            time.sleep(0.2)  # the last captures
            for n in mlmons:
                capture_cpu[n].append((servers[n].cpu_seconds() - cap0[n]) / requests * 1e6)
            for t in targets:
                a = np.array(lat[t]) * 1e3
                stats[t]["p50"].append(float(np.percentile(a, 50)))
                stats[t]["p99"].append(float(np.percentile(a, 99)))
            print(f"  proxy run {r + 1}/{runs} done", file=sys.stderr, flush=True)
        time.sleep(1.0)
        captured = {}
        for n in mlmons:
            text = _call(servers[n].ports[1], "GET", "/metrics").decode()
            m = re.search(r'mlmon_ingest_events_total\{model="bench"\} (\S+)', text)
            captured[n] = float(m.group(1)) if m else 0.0
    finally:
        for s in servers.values():
            s.stop()
        upstream.terminate()
    direct = stats["direct"]
    out: dict[str, Any] = {
        "requests_per_run": requests,
        "direct_p50_ms": summary(direct["p50"]),
        "direct_p99_ms": summary(direct["p99"]),
        "idle_cpu_ms_per_second": idle,
        "proxies": {},
    }
    base = names[0]

    def added(n: str, q: str) -> list[float]:
        return [p - d for p, d in zip(stats[n][q], direct[q], strict=True)]

    for n in names:
        out["proxies"][n] = {
            "proxied_p50_ms": summary(stats[n]["p50"]),
            "proxied_p99_ms": summary(stats[n]["p99"]),
            "added_p50_ms": summary(added(n, "p50")),
            "added_p99_ms": summary(added(n, "p99")),
            "proxy_process_cpu_us_per_request": summary(stats[n]["cpu_us"]),
            f"added_p50_ratio_vs_{base}": summary(
                [a / b for a, b in zip(added(n, "p50"), added(base, "p50"), strict=True)]
            ),
            f"cpu_ratio_vs_{base}": summary(
                [a / b for a, b in zip(stats[n]["cpu_us"], stats[base]["cpu_us"], strict=True)]
            ),
        }
    for n in mlmons:
        out["proxies"][n]["capture_cpu_us_per_request_exporter_process"] = summary(capture_cpu[n])
        out["proxies"][n]["rows_captured"] = captured[n]
        out["proxies"][n]["rows_sent"] = (50 + requests * runs) * ROWS
    return out


def idle_cpu(procs: dict[str, list[tuple[Server, int | None]]]) -> dict[str, float]:
    """CPU milliseconds per second of each candidate's processes with no request, measured
    together over IDLE_SECONDS: what a per-request figure carries when requests are few."""
    cpu0 = {n: sum(s.cpu_seconds(pid) for s, pid in ps) for n, ps in procs.items()}
    time.sleep(IDLE_SECONDS)
    return {
        n: (sum(s.cpu_seconds(pid) for s, pid in ps) - cpu0[n]) / IDLE_SECONDS * 1e3
        for n, ps in procs.items()
    }


def _git() -> dict[str, Any]:
    """The commit measured, and the files of the tree that differ from it."""
    root = Path(__file__).resolve().parents[1]

    def git(*a: str) -> str:
        r = subprocess.run(["git", *a], cwd=root, capture_output=True, text=True, timeout=30)
        return r.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "modified": git("status", "--short").splitlines()}


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("uvicorn", "httptools", "aiohttp", "h11")}


def print_table(results: dict[str, Any]) -> None:
    print(f"\nmlmon HTTP server candidates — {results['machine']}")
    print(f"versions: {results['versions']}\n")
    ex = results.get("exporter")
    if ex:
        base = next(iter(ex["series"]))
        print(f"exporter (series on /metrics: {ex['series']}); medians of {results['runs']} runs")
        idle = ", ".join(f"{n} {v:.1f}" for n, v in ex["idle_cpu_ms_per_second"].items())
        print(f"idle CPU, ms per second: {idle}")
        head = ("workload", "server", "CPU µs/req", f"ratio vs {base}", "p50 ms", "p99 ms")
        print(f"{head[0]:<16} {head[1]:<18} {head[2]:>11} {head[3]:>28} {head[4]:>8} {head[5]:>8}")
        for wname, by in ex["workloads"].items():
            for name, r in by.items():
                ratio = r[f"cpu_ratio_vs_{base}"]
                print(
                    f"{wname:<16} {name:<18} {r['cpu_us_per_request']['median']:>11,.0f} "
                    f"{ratio['median']:>8.2f} ({ratio['min']:.2f}-{ratio['max']:.2f})"
                    f"{'':>10} {r['p50_ms']['median']:>8.2f} {r['p99_ms']['median']:>8.2f}"
                )
    px = results.get("proxy")
    if px:
        print(
            f"\nproxy, {px['requests_per_run']} requests x {results['proxy_runs']} runs; "
            f"direct p50 {px['direct_p50_ms']['median']:.3f} ms, "
            f"p99 {px['direct_p99_ms']['median']:.3f} ms"
        )
        idle = ", ".join(f"{n} {v:.1f}" for n, v in px["idle_cpu_ms_per_second"].items())
        print(f"idle CPU (proxy and exporter processes), ms per second: {idle}")
        base = next(iter(px["proxies"]))
        head = ("proxy", "added p50", "added p99", f"p50 ratio vs {base}", "proxy CPU µs/req")
        print(f"{head[0]:<18} {head[1]:>10} {head[2]:>10} {head[3]:>20} {head[4]:>17}")
        for name, r in px["proxies"].items():
            print(
                f"{name:<18} {r['added_p50_ms']['median']:>10.3f} "
                f"{r['added_p99_ms']['median']:>10.3f} "
                f"{r[f'added_p50_ratio_vs_{base}']['median']:>20.2f} "
                f"{r['proxy_process_cpu_us_per_request']['median']:>17,.0f}"
            )
        for name, r in px["proxies"].items():
            if "rows_captured" in r:
                cap = r["capture_cpu_us_per_request_exporter_process"]
                print(
                    f"{name} captured {r['rows_captured']:,.0f} of {r['rows_sent']:,} rows; "
                    f"capture CPU in its exporter process {cap['median']:,.0f} µs/request"
                )


def main() -> int:
    modes = {
        "--serve-aiohttp": lambda a: serve_aiohttp_exporter(a[0]),
        "--serve-uvicorn": lambda a: serve_uvicorn_exporter(a[0], a[1]),
        "--proxy-aiohttp": lambda a: serve_aiohttp_proxy(a[0]),
        "--proxy-uvicorn": lambda a: serve_uvicorn_proxy(a[0]),
    }
    if len(sys.argv) > 1 and sys.argv[1] in modes:
        modes[sys.argv[1]](sys.argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer and shorter runs")
    ap.add_argument("--runs", type=int, help="exporter runs (default 7, quick 2)")
    ap.add_argument(
        "--seconds",
        type=float,
        help="seconds per candidate and workload in an exporter run (default 2.5)",
    )
    ap.add_argument(
        "--slices", type=int, help="slices each exporter run is cut into (default 5, quick 2)"
    )
    ap.add_argument("--connections", type=int, default=2, help="exporter client connections")
    ap.add_argument("--proxy-runs", type=int, help="proxy runs (default 3, quick 2)")
    ap.add_argument(
        "--proxy-requests", type=int, help="requests per proxy run (default 2000, quick 500)"
    )
    ap.add_argument(
        "--exporters", default=",".join(EXPORTERS), help="exporter candidates, first = baseline"
    )
    ap.add_argument(
        "--proxies", default=",".join(PROXIES), help="proxy candidates, first = baseline"
    )
    ap.add_argument("--json", default="bench/results/servers.json")
    args = ap.parse_args()
    runs = args.runs or (2 if args.quick else 7)
    seconds = args.seconds or (1.0 if args.quick else 2.5)
    slices = args.slices or (2 if args.quick else 5)
    requests = args.proxy_requests or (500 if args.quick else 2000)
    proxy_runs = args.proxy_runs or (2 if args.quick else 3)
    exporters = [n for n in args.exporters.split(",") if n]
    proxies = [n for n in args.proxies.split(",") if n]
    for n in exporters:
        if n not in EXPORTERS:
            ap.error(f"unknown exporter candidate {n!r}")
    for n in proxies:
        if n not in PROXIES:
            ap.error(f"unknown proxy candidate {n!r}")
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {platform.platform()}",
        "date": time.strftime("%Y-%m-%d"),
        "versions": _versions(),
        "git": _git(),
        "runs": runs,
        "seconds_per_run": seconds,
        "slices_per_run": slices,
        "connections": args.connections,
        "proxy_runs": proxy_runs,
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as d:
        if exporters:
            results["exporter"] = exporter_bench(
                Path(d), exporters, runs, seconds, slices, args.connections
            )
        if proxies:
            results["proxy"] = proxy_bench(Path(d), proxies, requests, proxy_runs)
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    print_table(results)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {args.json} ({results['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
