"""mlmon's benchmark suite: each figure a median over repeated runs (with min and max), each
comparison a ratio against a baseline measured in the same run on the same data.

    python -m bench              # the whole suite, ~3 minutes
    python -m bench --quick      # fewer and shorter runs
    python -m bench --memory-10m # also resident memory after 10M events (~5 more minutes)

Writes bench/results/latest.json and prints a table.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml
from mlmon.core.baseline import build_profile, read_training_data, write_profile
from mlmon.core.config import load_config
from mlmon.demo import synthetic

MODEL = "bench"
TICK = os.sysconf("SC_CLK_TCK")


def spec() -> synthetic.TableSpec:
    return synthetic.wide_spec(n_numeric=45, n_categorical=5)


def setup(
    tmp: Path,
    table: synthetic.TableSpec | None = None,
    limits: dict[str, int] | None = None,
    attributions: bool = False,
) -> Path:
    """A config with one binary model and its baseline, from 20,000 synthetic rows (with
    attr_<feature> columns when ``attributions``)."""
    table = table or spec()
    data = tmp / "train.csv"
    synthetic.write_csv(synthetic.events(table, 20_000, seed=1, attributions=attributions), data)
    cfg = tmp / "mlmon.yml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {
                        "name": MODEL,
                        "task": "binary",
                        "positive_class": 1,
                        "baseline": "bench.json",
                        "features": table.config_features(),
                    }
                ],
                **({"limits": limits} if limits else {}),
            }
        )
    )
    m = load_config(cfg).models[0]
    write_profile(
        build_profile(m, read_training_data(data, list(table.config_features()), False)),
        m.baseline,
    )
    return cfg


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": len(values),
    }


# ------------------------------------------------------------------ naive baseline
def naive_events_per_second(cfg: Path, events: list[dict], runs: int) -> dict[str, float]:
    """prometheus_client's Histogram.observe() per numeric feature and Counter.inc() per
    categorical feature, per event, in-process, no HTTP, no parsing."""
    from mlmon.core.baseline import load_profile
    from prometheus_client import CollectorRegistry, Counter, Histogram

    profile = load_profile(load_config(cfg).models[0].baseline)
    out = []
    for _ in range(runs):
        reg = CollectorRegistry()
        hists, counters = {}, {}
        for name, p in profile["features"].items():
            if p["kind"] == "numeric":
                hists[name] = Histogram(
                    f"f_{name}", "h", buckets=p["edges"], registry=reg, labelnames=["model"]
                ).labels(MODEL)
            else:
                counters[name] = Counter(f"c_{name}", "c", ["model", "category"], registry=reg)
        t0 = time.process_time()
        for e in events:
            f = e["features"]
            for name, h in hists.items():
                h.observe(f[name])
            for name, c in counters.items():
                c.labels(MODEL, f[name]).inc()
        out.append(len(events) / (time.process_time() - t0))
    return summary(out)


# ------------------------------------------------------------------ HTTP load
class Exporter:
    def __init__(self, cfg: Path) -> None:
        self.log = cfg.parent / f"exporter-{time.monotonic_ns()}.log"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlmon",
                "serve",
                "--config",
                str(cfg),
                "--web.listen-address",
                "127.0.0.1:0",
            ],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            m = re.search(
                r"serving \d+ model\(s\) on http://127\.0\.0\.1:(\d+)/", self.log.read_text()
            )
            if m:
                self.port = int(m.group(1))
                break
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(self.log.read_text())
            time.sleep(0.05)
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/readyz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.05)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _load(port: int, bodies: list[bytes], seconds: float, queue: mp.Queue) -> None:
    """One connection posting the bodies in turn for ``seconds``: (requests, latencies)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    lat = []
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        t0 = time.perf_counter()
        conn.request("POST", f"/v1/models/{MODEL}/predictions", bodies[i % len(bodies)], headers)
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"status {r.status}")
        lat.append(time.perf_counter() - t0)
        i += 1
    queue.put((i, lat))


def http_ingest(
    exporter: Exporter,
    bodies: list[bytes],
    events_per_body: int,
    seconds: float,
    runs: int,
    connections: int = 2,
) -> dict[str, Any]:
    rates, p50, p99, rps = [], [], [], []
    for _ in range(runs):
        q: mp.Queue = mp.Queue()
        cpu0 = exporter.cpu_seconds()
        procs = [
            mp.Process(target=_load, args=(exporter.port, bodies, seconds, q))
            for _ in range(connections)
        ]
        t0 = time.monotonic()
        for p in procs:
            p.start()
        results = [q.get(timeout=seconds + 60) for _ in procs]
        for p in procs:
            p.join()
        wall = time.monotonic() - t0
        cpu = exporter.cpu_seconds() - cpu0
        n = sum(r[0] for r in results)
        lat = np.concatenate([r[1] for r in results])
        rates.append(n * events_per_body / cpu)
        rps.append(n / cpu)
        p50.append(float(np.percentile(lat, 50)) * 1e3)
        p99.append(float(np.percentile(lat, 99)) * 1e3)
        del wall
    return {
        "events_per_cpu_second": summary(rates),
        "requests_per_cpu_second": summary(rps),
        "p50_ms": summary(p50),
        "p99_ms": summary(p99),
    }


def row_bodies(events: list[dict], batch: int) -> list[bytes]:
    return [
        orjson.dumps({"events": events[i : i + batch]})
        for i in range(0, len(events) - batch + 1, batch)
    ]


def columnar_bodies(events: list[dict], batch: int) -> list[bytes]:
    out = []
    for i in range(0, len(events) - batch + 1, batch):
        rows = events[i : i + batch]
        names = list(rows[0]["features"])
        out.append(
            orjson.dumps(
                {
                    "columns": {
                        "version": "v1",
                        "id": [r["id"] for r in rows],
                        "features": {n: [r["features"][n] for r in rows] for n in names},
                        "prediction": [r["prediction"] for r in rows],
                        "scores": [r["scores"]["1"] for r in rows],
                    }
                }
            )
        )
    return out


# ------------------------------------------------------------------ scrape
def scrape(target_series: int, runs: int) -> dict[str, Any]:
    """Render /metrics of a monitor grown to about ``target_series`` series: the exporter's
    path (collector + mlmon's renderer, after a first scrape has filled its label cache)
    against prometheus_client's text writer alone on the same, already built families, and
    the client library's whole path (collector -> Metric objects -> writer)."""
    import gzip

    from mlmon.cli import build_exposition
    from mlmon.core.monitor import Monitor
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    with tempfile.TemporaryDirectory() as d:
        # enough versions allowed to grow past 50k series
        cfg = setup(Path(d), limits={"max_versions": 100})
        mon = Monitor(load_config(cfg))
        m = mon.models[MODEL]
        ev = synthetic.without_labels(synthetic.events(spec(), 600, seed=2))
        registry, render = build_exposition(mon)
        versions = 0
        while True:
            for e in ev:
                e["version"] = f"v{versions}"
            m.ingest(ev)
            versions += 1
            n = sum(len(f.samples) for f in registry.collect())
            if n >= target_series or versions >= 100:
                break
        fast, writer_only, client, gz = [], [], [], []
        families = list(registry.collect())

        class Fixed:
            def collect(self):
                return families

        text = render()  # the first scrape fills the label cache
        for _ in range(runs):
            t0 = time.perf_counter()
            text = render()
            fast.append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            gzip.compress(text, compresslevel=1)
            gz.append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            generate_latest(Fixed())  # type: ignore[arg-type]
            writer_only.append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            generate_latest(registry)
            client.append((time.perf_counter() - t0) * 1e3)
        parsed = sum(len(f.samples) for f in text_string_to_metric_families(text.decode()))
    return {
        "series": parsed,
        "versions": versions,
        "render_ms": summary(fast),
        "writer_only_ms": summary(writer_only),
        "client_library_path_ms": summary(client),
        "gzip_level1_ms": summary(gz),
    }


# ------------------------------------------------------------------ drift
def drift(runs: int) -> dict[str, Any]:
    """All windowed tests for 50 features (binned) against scipy's ks_2samp per feature on
    the raw windows of the same data (10,000 values each side)."""
    from mlmon.core.monitor import Monitor
    from mlmon.core.state import Layout
    from scipy.stats import ks_2samp

    with tempfile.TemporaryDirectory() as d:
        cfg = setup(Path(d))
        mon = Monitor(load_config(cfg))
        m = mon.models[MODEL]
        live = synthetic.without_labels(
            synthetic.events(spec(), 10_000, seed=3, shift={"x03": 0.5})
        )
        m.ingest(live)
        w = m.state.snapshot()[0].window
        train = synthetic.events(spec(), 10_000, seed=1)
        names = list(spec().numeric)
        raw_ref = {n: np.array([e["features"][n] for e in train]) for n in names}
        raw_live = {n: np.array([e["features"][n] for e in live]) for n in names}
        ours, scipy_t = [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            m._drift(w)
            ours.append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            for n in names:
                ks_2samp(raw_ref[n], raw_live[n])
            scipy_t.append((time.perf_counter() - t0) * 1e3)
        del Layout
    return {
        "features": 50,
        "all_tests_ms": summary(ours),
        "scipy_ks_2samp_45_numeric_ms": summary(scipy_t),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--memory-10m", action="store_true")
    ap.add_argument("--json", default="bench/results/latest.json")
    args = ap.parse_args()
    runs, seconds = (2, 2.0) if args.quick else (3, 5.0)
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {platform.platform()}",
        "date": time.strftime("%Y-%m-%d"),
    }
    with tempfile.TemporaryDirectory() as d:
        cfg = setup(Path(d))
        events = synthetic.without_labels(synthetic.events(spec(), 20_000, seed=5, version="v1"))
        # The baseline is measured before each ingest figure and summarised over all of
        # them: on a shared machine speed drifts within a run, and a ratio against one
        # early measurement would carry that drift.
        naive_runs: list[float] = []

        def naive() -> None:
            naive_runs.append(naive_events_per_second(cfg, events[:5_000], 1)["median"])

        exporter = Exporter(cfg)
        try:
            naive()
            results["ingest_row_json_batch100"] = http_ingest(
                exporter, row_bodies(events, 100), 100, seconds, runs
            )
            naive()
            results["ingest_columnar_batch1000"] = http_ingest(
                exporter, columnar_bodies(events, 1000), 1000, seconds, runs
            )
            naive()
            results["single_event"] = http_ingest(
                exporter, row_bodies(events[:2000], 1), 1, seconds, runs
            )
            naive()
        finally:
            exporter.stop()
        results["naive_observe"] = summary(naive_runs)
    results["scrape"] = {str(n): scrape(n, max(runs, 5)) for n in (1_000, 10_000, 50_000)}
    results["drift"] = drift(max(runs * 10, 30))
    from bench.proxy import proxy_latency

    results["proxy"] = proxy_latency(1_000 if args.quick else 3_000, runs)
    naive = results["naive_observe"]["median"]
    rows = [
        ("naive observe() per feature, in-process", f"{naive:,.0f} events/s", ""),
    ]
    for key, label in (
        ("ingest_row_json_batch100", "ingest, row JSON, batch 100 (HTTP)"),
        ("ingest_columnar_batch1000", "ingest, columnar, batch 1000 (HTTP)"),
    ):
        r = results[key]
        ev = r["events_per_cpu_second"]["median"]
        rows.append(
            (
                label,
                f"{ev:,.0f} events/s per core",
                f"x{ev / naive:.1f} vs naive; p50 {r['p50_ms']['median']:.1f} ms, "
                f"p99 {r['p99_ms']['median']:.1f} ms",
            )
        )
    r = results["single_event"]
    rows.append(
        (
            "single-event requests",
            f"{r['requests_per_cpu_second']['median']:,.0f} req/s per core",
            f"p50 {r['p50_ms']['median']:.2f} ms, p99 {r['p99_ms']['median']:.2f} ms",
        )
    )
    for r in results["scrape"].values():
        rows.append(
            (
                f"/metrics, {r['series']:,} series",
                f"{r['render_ms']['median']:.1f} ms",
                f"x{r['writer_only_ms']['median'] / r['render_ms']['median']:.1f} faster than "
                f"generate_latest alone ({r['writer_only_ms']['median']:.1f} ms); gzip "
                f"{r['gzip_level1_ms']['median']:.1f} ms",
            )
        )
    r = results["drift"]
    rows.append(
        (
            "all drift tests, 50 features",
            f"{r['all_tests_ms']['median']:.2f} ms",
            f"x{r['scipy_ks_2samp_45_numeric_ms']['median'] / r['all_tests_ms']['median']:.0f}"
            f" faster than ks_2samp on raw windows "
            f"({r['scipy_ks_2samp_45_numeric_ms']['median']:.0f} ms)",
        )
    )
    r = results["proxy"]
    rows.append(
        (
            "proxy added latency (10 rows x 50 features)",
            f"p50 {r['added_p50_ms']['median']:.2f} ms, p99 {r['added_p99_ms']['median']:.2f} ms",
            f"direct p50 {r['direct_p50_ms']['median']:.2f} ms, p99 "
            f"{r['direct_p99_ms']['median']:.2f} ms; captured {r['rows_captured']:,.0f} of "
            f"{r['rows_sent']:,} rows",
        )
    )
    if args.memory_10m:
        res = subprocess.run(
            [
                sys.executable,
                "bench/memory.py",
                "--checkpoints",
                "1000000,10000000",
                "--json",
                "bench/results/memory-10m.json",
            ]
        )
        results["memory_10m_exit"] = res.returncode
    width = max(len(r[0]) for r in rows)
    print(f"\nmlmon benchmarks — {results['machine']}\n")
    for a, b, c in rows:
        print(f"{a:<{width}}  {b:>26}  {c}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {args.json}")
    return 0
