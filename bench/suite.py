"""mlmon's benchmark suite: each figure a median over repeated runs (with min and max), each
comparison a ratio against a baseline measured in the same run on the same data.

    python -m bench              # the whole suite, ~5 minutes
    python -m bench --quick      # fewer and shorter runs (~3 minutes)
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


# ------------------------------------------------------------------ the suite
def ingest(cfg: Path, quick: bool) -> dict[str, Any]:
    """Ingest over HTTP in rounds, each a naive baseline and then a few seconds of load:
    a shared machine's speed drifts within seconds, so each round's figure is divided by
    its own baseline, and the ratio reported is the median of those."""
    rounds, seconds = (3, 2.0) if quick else (6, 3.0)
    events = synthetic.without_labels(synthetic.events(spec(), 20_000, seed=5, version="v1"))
    naive_runs: list[float] = []
    out: dict[str, Any] = {}
    exporter = Exporter(cfg)
    try:
        for key, bodies, per_body in (
            ("ingest_row_json_batch100", row_bodies(events, 100), 100),
            ("ingest_columnar_batch1000", columnar_bodies(events, 1000), 1000),
            ("single_event", row_bodies(events[:2000], 1), 1),
        ):
            runs, ratios = [], []
            for _ in range(rounds):
                naive = naive_events_per_second(cfg, events[:5_000], 1)["median"]
                run = http_ingest(exporter, bodies, per_body, seconds, 1)
                naive_runs.append(naive)
                runs.append(run)
                ratios.append(run["events_per_cpu_second"]["median"] / naive)
            out[key] = {k: summary([r[k]["median"] for r in runs]) for k in runs[0]} | {
                "ratio_to_naive": summary(ratios)
            }
    finally:
        exporter.stop()
    out["naive_observe"] = summary(naive_runs)
    return out


def rows_of(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The printed table: (figure, value, ratio against the same-run baseline, latency)."""
    naive = results["naive_observe"]["median"]
    out = [("naive observe() per feature, in-process", f"{naive:,.0f} events/s", "1.00", "")]
    for key, label in (
        ("ingest_row_json_batch100", "ingest, row JSON, batch 100 (HTTP)"),
        ("ingest_columnar_batch1000", "ingest, columnar, batch 1000 (HTTP)"),
    ):
        r = results[key]
        ev = r["events_per_cpu_second"]["median"]
        lat = f"p50 {r['p50_ms']['median']:.1f} ms, p99 {r['p99_ms']['median']:.1f} ms"
        ratio = r["ratio_to_naive"]
        out.append(
            (
                label,
                f"{ev:,.0f} events/CPU-s",
                f"{ratio['median']:.2f} x naive ({ratio['min']:.2f}-{ratio['max']:.2f})",
                lat,
            )
        )
    r = results["single_event"]
    rps = r["requests_per_cpu_second"]["median"]
    lat = f"p50 {r['p50_ms']['median']:.2f} ms, p99 {r['p99_ms']['median']:.2f} ms"
    out.append(("single-event requests (HTTP)", f"{rps:,.0f} req/CPU-s", "", lat))
    d = results["decoders"]
    for name in ("typed", "orjson + numpy gather"):
        x = d[name]
        out.append(
            (
                f"row decoding, batch {d['batch']}: {name}",
                f"{x['median_ms']:.2f} ms",
                f"{x['speedup_vs_row_checks']:.2f} x row checks "
                f"({d['row checks']['median_ms']:.2f} ms)",
                f"p99 {x['p99_ms']:.2f} ms",
            )
        )
    r = results["scrape"]
    writer = r["writer_only_ms"]["median"]
    for key, label in (("http_ms", "unchanged"), ("http_changed_ms", "every version changed")):
        x = r[key]
        out.append(
            (
                f"GET /metrics, {r['series']:,} series, {label}",
                f"{x['median']:.1f} ms",
                f"{writer / x['median']:.1f} x faster than generate_latest ({writer:.0f} ms)",
                f"p50 {x['p50']:.1f} ms, p99 {x['p99']:.1f} ms",
            )
        )
    r = results["drift"]
    x = r["all_tests_ms"]
    out.append(
        (
            "all drift tests, 50 features",
            f"{x['median']:.2f} ms",
            f"{r['speedup_vs_previous']:.2f} x previous; {r['speedup_vs_scipy']:.0f} x ks_2samp",
            f"p90 {x['p90']:.2f} ms, p99 {x['p99']:.2f} ms",
        )
    )
    r = results["proxy"]
    out.append(
        (
            "proxy added latency (10 rows x 50 features)",
            f"p50 {r['added_p50_ms']['median']:.2f} ms",
            f"direct p50 {r['direct_p50_ms']['median']:.2f} ms",
            f"added p99 {r['added_p99_ms']['median']:.2f} ms",
        )
    )
    return out


def main() -> int:
    from bench.decoders import measure as decoders
    from bench.drift import drift
    from bench.proxy import proxy_latency
    from bench.scrape import scrape

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--memory-10m", action="store_true")
    ap.add_argument("--json", default="bench/results/latest.json")
    args = ap.parse_args()
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {platform.platform()}",
        "date": time.strftime("%Y-%m-%d"),
    }
    with tempfile.TemporaryDirectory() as d:
        results.update(ingest(setup(Path(d)), args.quick))
    results["decoders"] = decoders(100, 100 if args.quick else 300)
    results["scrape"] = scrape(10_000, 10 if args.quick else 30)
    results["drift"] = drift(100)
    results["proxy"] = proxy_latency(1_000 if args.quick else 3_000, 2 if args.quick else 3)
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
    rows = rows_of(results)
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"\nmlmon benchmarks — {results['machine']}\n")
    for a, b, c, lat in rows:
        print(f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:<{widths[2]}}  {lat}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwrote {args.json}")
    return 0
