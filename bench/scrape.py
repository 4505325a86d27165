"""/metrics of an exporter grown to a target number of series: in process, and as a client
sees it over HTTP from a real `mlmon serve`, each against a baseline measured in the same
run, interleaved.

    python bench/scrape.py [--series 10000] [--runs 30] [--against REF] [--json PATH]

One binary model (45 numeric, 5 categorical features) gets 600 events per version, version
after version, until it exports the target number of series. Then:

- in process: the exporter's render (collector + text blocks + renderer) with nothing
  changed since the last scrape, and after one event to every version (every block
  written again, drift recomputed); gzip level 1 of the text; prometheus_client's text
  writer alone on the same, already built families (`generate_latest` of fixed Metric
  objects); and the client library's whole path (collector -> Metric objects -> writer);
- over HTTP: the same versions posted to `mlmon serve`, then GET /metrics on a keep-alive
  connection, client-side wall time of the whole response, unchanged and changed as above.
  With ``--against REF`` a second exporter runs the package as it is at git ``REF`` (e.g.
  HEAD), on the same data, its scrapes interleaved with this tree's; the two texts are then
  compared line by line (the process's own metrics and the render times aside).

Figures are medians with p50/p90/p99 over the runs; ratios are of medians of this run.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from mlmon.core.config import load_config
from mlmon.demo import synthetic

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.suite import MODEL, setup, spec, summary

ROOT = Path(__file__).resolve().parents[1]


def stats(values: list[float]) -> dict[str, float]:
    out: dict[str, float] = dict(summary(values))
    for q in (50, 90, 99):
        out[f"p{q}"] = float(np.percentile(values, q))
    return out


class Served:
    """`mlmon serve` in a subprocess on 127.0.0.1 (with ``pythonpath`` first on the path:
    another checkout's package), and a keep-alive client connection to it."""

    def __init__(self, cfg: Path, pythonpath: str | None = None) -> None:
        env = dict(os.environ)
        if pythonpath:
            env["PYTHONPATH"] = os.pathsep.join([pythonpath, env.get("PYTHONPATH", "")])
        self.log = cfg.parent / f"exporter-{time.monotonic_ns()}.log"
        argv = [sys.executable, "-m", "mlmon", "serve", "--config", str(cfg)]
        self.proc = subprocess.Popen(
            [*argv, "--web.listen-address", "127.0.0.1:0"],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.package = subprocess.run(
            [sys.executable, "-c", "import mlmon; print(mlmon.__file__)"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        deadline = time.monotonic() + 30
        while not (m := re.search(r"on http://127\.0\.0\.1:(\d+)/", self.log.read_text())):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(self.log.read_text())
            time.sleep(0.05)
        self.conn = http.client.HTTPConnection("127.0.0.1", int(m.group(1)), timeout=60)
        while True:
            try:
                if self.call("GET", "/readyz")[0] == 200:
                    break
            except OSError:
                self.conn.close()
                time.sleep(0.05)

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        self.conn.request(method, path, body, headers)
        r = self.conn.getresponse()
        return r.status, r.read()

    def post(self, body: bytes) -> None:
        status, reply = self.call("POST", f"/v1/models/{MODEL}/predictions", body)
        if status != 200:
            raise RuntimeError(f"ingest answered {status}: {reply[:200]!r}")

    def text(self) -> list[str]:
        """The /metrics lines, but for those that move on their own (the process's CPU
        and memory, the render times)."""
        status, body = self.call("GET", "/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        moving = ("process_", "mlmon_scrape_render_seconds")

        def name(line: str) -> str:  # the metric name, of a sample or a HELP/TYPE line
            return line.split(" ", 3)[2] if line.startswith("# ") else line

        return [x for x in body.decode().splitlines() if not name(x).startswith(moving)]

    def scrape_ms(self) -> float:
        t0 = time.perf_counter()
        status, _ = self.call("GET", "/metrics")
        ms = (time.perf_counter() - t0) * 1e3
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return ms

    def stop(self) -> None:
        self.conn.close()
        self.proc.terminate()
        self.proc.wait(10)


def version_bodies(events: list[dict], versions: int) -> list[bytes]:
    """The events once per version, as row batches of 600."""
    out = []
    for v in range(versions):
        for e in events:
            e["version"] = f"v{v}"
        out.append(orjson.dumps({"events": events}))
    return out


def touch_body(events: list[dict], versions: int) -> bytes:
    """One event to every version: every version's block and drift change."""
    return orjson.dumps(
        {"events": [dict(events[v % len(events)], version=f"v{v}") for v in range(versions)]}
    )


def grow(mon: Any, registry: Any, events: list[dict], target: int) -> int:
    """Versions of 600 events each, until the exporter has ``target`` series (at most 100)."""
    m = mon.models[MODEL]
    versions = 0
    while True:
        for e in events:
            e["version"] = f"v{versions}"
        m.ingest(events)
        versions += 1
        n = sum(len(f.samples) for f in registry.collect())
        if n >= target or versions >= 100:
            return versions


def in_process(mon: Any, registry: Any, render: Callable[[], bytes], touch: list[dict], runs: int):
    """Render unchanged and changed, gzip, the writer alone, the client library's path."""
    from prometheus_client import generate_latest

    families = list(registry.collect())

    class Fixed:
        def collect(self):
            return families

    times: dict[str, list[float]] = {k: [] for k in ("render", "changed", "gz", "writer", "client")}

    def timed(key: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        times[key].append((time.perf_counter() - t0) * 1e3)
        return out

    text = render()  # the first scrape writes every block and label set
    for _ in range(runs):
        text = timed("render", render)
        timed("gz", lambda t=text: gzip.compress(t, compresslevel=1))
        timed("writer", lambda: generate_latest(Fixed()))  # type: ignore[arg-type]
        timed("client", lambda: generate_latest(registry))
        mon.models[MODEL].ingest(touch)
        timed("changed", render)
    return text, times


def over_http(servers: dict[str, Served], bodies: list[bytes], touch: bytes, runs: int):
    """Client-side ms of GET /metrics per server, unchanged and after `touch`, interleaved
    (the servers take turns going first)."""
    for s in servers.values():
        for body in bodies:
            s.post(body)
        s.scrape_ms()  # the first scrape writes every block and label set
    out: dict[str, dict[str, list[float]]] = {k: {"same": [], "changed": []} for k in servers}
    names = list(servers)
    for i in range(runs):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            out[name]["same"].append(servers[name].scrape_ms())
        for name in order:
            servers[name].post(touch)
            out[name]["changed"].append(servers[name].scrape_ms())
    return out


def checkout(ref: str, into: Path) -> str:
    """The exporter package as it is at git ``ref``, extracted into ``into``."""
    tar = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "exporter"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=tar, check=True)
    return str(into / "exporter")


def scrape(target_series: int, runs: int, against: str | None = None) -> dict[str, Any]:
    """The figures described at the top of this file, as a dict (see `main` for the keys);
    ``against`` a git ref to measure over HTTP beside this tree's exporter."""
    from mlmon.cli import build_exposition
    from mlmon.core.monitor import Monitor
    from prometheus_client.parser import text_string_to_metric_families

    with tempfile.TemporaryDirectory() as d:
        # enough versions allowed to grow past 50k series
        cfg = setup(Path(d), limits={"max_versions": 100})
        mon = Monitor(load_config(cfg))
        ev = synthetic.without_labels(synthetic.events(spec(), 600, seed=2))
        registry, render = build_exposition(mon)
        versions = grow(mon, registry, ev, target_series)
        touch = orjson.loads(touch_body(ev, versions))["events"]
        text, t = in_process(mon, registry, render, touch, runs)
        parsed = sum(len(f.samples) for f in text_string_to_metric_families(text.decode()))
        servers = {"this tree": Served(cfg)}
        if against:
            (Path(d) / "ref").mkdir()
            servers[against] = Served(cfg, checkout(against, Path(d) / "ref"))
        try:
            http = over_http(servers, version_bodies(ev, versions), touch_body(ev, versions), runs)
            texts = [s.text() for s in servers.values()]
        finally:
            for s in servers.values():
                s.stop()
    result: dict[str, Any] = {
        "series": parsed,
        "versions": versions,
        "render_ms": stats(t["render"]),
        "render_changed_ms": stats(t["changed"]),
        "writer_only_ms": stats(t["writer"]),
        "client_library_path_ms": stats(t["client"]),
        "gzip_level1_ms": stats(t["gz"]),
        "http_ms": stats(http["this tree"]["same"]),
        "http_changed_ms": stats(http["this tree"]["changed"]),
    }
    if against:
        result["against"] = {
            "ref": against,
            "package": servers[against].package,
            "http_ms": stats(http[against]["same"]),
            "http_changed_ms": stats(http[against]["changed"]),
            # lines of one exporter's text not in the other's (same data, same requests)
            "differing_lines": len(set(texts[0]) ^ set(texts[1])),
            "lines": len(texts[0]),
            "identical": texts[0] == texts[1],  # and in the same order
        }
    return result


def table(r: dict[str, Any]) -> str:
    med = {k: v["median"] for k, v in r.items() if isinstance(v, dict) and "median" in v}
    rows = [
        (
            "in-process render, unchanged",
            r["render_ms"],
            f"x{med['writer_only_ms'] / med['render_ms']:.1f} vs generate_latest alone",
        ),
        (
            "in-process render, every version changed",
            r["render_changed_ms"],
            f"x{med['writer_only_ms'] / med['render_changed_ms']:.1f} vs generate_latest alone",
        ),
        ("generate_latest alone (same families)", r["writer_only_ms"], ""),
        ("client library's whole path", r["client_library_path_ms"], ""),
        ("gzip level 1 of the text", r["gzip_level1_ms"], ""),
        (
            "GET /metrics over HTTP, unchanged",
            r["http_ms"],
            f"x{med['writer_only_ms'] / med['http_ms']:.1f} vs generate_latest alone",
        ),
        (
            "GET /metrics over HTTP, every version changed",
            r["http_changed_ms"],
            f"x{med['writer_only_ms'] / med['http_changed_ms']:.1f} vs generate_latest alone",
        ),
    ]
    if "against" in r:
        a = r["against"]
        for key, label in (("http_ms", "unchanged"), ("http_changed_ms", "every version changed")):
            ratio = a[key]["median"] / r[key]["median"]
            rows.append(
                (f"GET /metrics at {a['ref']}, {label}", a[key], f"x{ratio:.1f} faster now")
            )
    head = f"/metrics, {r['series']:,} series ({r['versions']} versions)"
    if "against" in r:
        a = r["against"]
        same = "identical" if a["identical"] else f"{a['differing_lines']} lines differ"
        head += f"; text against {a['ref']}'s ({a['lines']} lines): {same}"
    lines = [head, f"{'':<48} {'median':>8} {'p50':>8} {'p90':>8} {'p99':>8}  (ms)"]
    for label, s, note in rows:
        cells = " ".join(f"{s[k]:8.2f}" for k in ("median", "p50", "p90", "p99"))
        lines.append(f"{label:<48} {cells}  {note}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--series", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--against", help="a git ref to measure over HTTP beside this tree")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    r = scrape(args.series, max(args.runs, 30), args.against)
    print(table(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
