"""The latency the capturing proxy adds: the same requests, interleaved, straight to a model
server and through `mlmon serve --upstream`, in the same run.

The model server is a minimal asyncio HTTP server answering a fixed TF Serving-style body,
so what is measured is the proxy (forwarding, pooling, capture hand-off), not a model.
Requests carry 10 rows of 50 features (row `instances`), one at a time on a keep-alive
connection each way.

    python bench/proxy.py [--requests 3000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing as mp
import re
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
from bench.suite import MODEL, setup, spec, summary

ROWS = 10


def _upstream(port_queue: mp.Queue) -> None:
    reply = orjson.dumps({"predictions": [0, 1] * (ROWS // 2)})
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    response = head % len(reply) + reply

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                m = re.search(rb"(?i)content-length:\s*(\d+)", raw)
                if m:
                    await reader.readexactly(int(m.group(1)))
                writer.write(response)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port_queue.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


def _start_exporter(cfg: Path) -> tuple[subprocess.Popen, int, Path]:
    log = cfg.parent / "proxy-exporter.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlmon", "serve", "--config", str(cfg),
         "--web.listen-address", "127.0.0.1:0"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        text = log.read_text()
        m = re.search(r"proxy on http://127\.0\.0\.1:(\d+)/", text)
        if m and "serving" in text:
            return proc, int(m.group(1)), log
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(text)
        time.sleep(0.05)


def proxy_latency(requests: int, runs: int) -> dict[str, Any]:
    """p50/p99 of direct and proxied calls, and the differences, per run."""
    q: mp.Queue = mp.Queue()
    upstream = mp.Process(target=_upstream, args=(q,), daemon=True)
    upstream.start()
    up_port = q.get(timeout=10)
    with tempfile.TemporaryDirectory() as d:
        cfg = setup(Path(d))
        names = list(spec().config_features())
        cfg.write_text(
            cfg.read_text()
            + "proxy:\n"
            + f"  upstream: http://127.0.0.1:{up_port}\n"
            + "  listen_address: 127.0.0.1:0\n"
            + f"  models:\n    {MODEL}:\n      inputs: {json.dumps(names)}\n"
        )
        proc, proxy_port, log = _start_exporter(cfg)
        events = synthetic.events(spec(), 2_000, seed=3)
        rows = [[e["features"][n] for n in names] for e in events]
        bodies = [
            orjson.dumps({"instances": rows[i : i + ROWS]}) for i in range(0, len(rows), ROWS)
        ]
        path = f"/v1/models/{MODEL}:predict"
        headers = {"Content-Type": "application/json"}
        out: dict[str, list[float]] = {k: [] for k in ("direct_p50_ms", "direct_p99_ms",
                                                       "proxied_p50_ms", "proxied_p99_ms",
                                                       "added_p50_ms", "added_p99_ms")}  # fmt: skip
        try:
            direct = http.client.HTTPConnection("127.0.0.1", up_port, timeout=10)
            proxied = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10)
            for conn in (direct, proxied):  # warm up
                for b in bodies[:50]:
                    conn.request("POST", path, b, headers)
                    conn.getresponse().read()
            for _ in range(runs):
                lat: dict[str, list[float]] = {"direct": [], "proxied": []}
                for i in range(requests):
                    b = bodies[i % len(bodies)]
                    for name, conn in (("direct", direct), ("proxied", proxied)):
                        t0 = time.perf_counter()
                        conn.request("POST", path, b, headers)
                        r = conn.getresponse()
                        r.read()
                        lat[name].append(time.perf_counter() - t0)
                        if r.status != 200:
                            raise RuntimeError(f"{name}: status {r.status}")
                for name in ("direct", "proxied"):
                    a = np.array(lat[name]) * 1e3
                    out[f"{name}_p50_ms"].append(float(np.percentile(a, 50)))
                    out[f"{name}_p99_ms"].append(float(np.percentile(a, 99)))
                out["added_p50_ms"].append(out["proxied_p50_ms"][-1] - out["direct_p50_ms"][-1])
                out["added_p99_ms"].append(out["proxied_p99_ms"][-1] - out["direct_p99_ms"][-1])
            # every proxied row was captured
            time.sleep(1.0)
            metrics = http.client.HTTPConnection("127.0.0.1", _metrics_port(log), timeout=10)
            metrics.request("GET", "/metrics")
            text = metrics.getresponse().read().decode()
            m = re.search(r'mlmon_ingest_events_total\{model="bench"\} (\S+)', text)
            captured = float(m.group(1)) if m else 0.0
        finally:
            proc.terminate()
            proc.wait(10)
            upstream.terminate()
    result: dict[str, Any] = {k: summary(v) for k, v in out.items()}
    result["requests_per_run"] = requests
    result["rows_captured"] = captured
    result["rows_sent"] = (50 + requests * runs) * ROWS
    return result


def _metrics_port(log: Path) -> int:
    m = re.search(r"serving \d+ model\(s\) on http://127\.0\.0\.1:(\d+)/", log.read_text())
    assert m
    return int(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    r = proxy_latency(args.requests, args.runs)
    print(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
