"""Resident memory of a real `mlmon serve` process as the stream grows.

Starts the exporter on 127.0.0.1 with a 20-feature model (18 numeric, 2 categorical),
posts batches of events over HTTP (scraping /metrics along the way) and reads the
process's VmRSS at each checkpoint. Memory must not grow with the stream: the state is
fixed-size arrays, so RSS after 1M events should stay within 10% of RSS after 100k.

    python bench/memory.py                        # checkpoints 100k and 1M
    python bench/memory.py --checkpoints 100000,1000000,10000000
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import orjson
import requests
from mlmon.demo import synthetic

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.suite import Exporter
from bench.suite import setup as bench_setup

MODEL = "bench"


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def setup(tmp: Path, attributions: bool = False) -> Path:
    return bench_setup(tmp, synthetic.wide_spec(), attributions=attributions)


def bodies(batch: int, distinct: int = 16, attributions: bool = False) -> list[bytes]:
    spec = synthetic.wide_spec()
    out = []
    for k in range(distinct):
        evs = synthetic.without_labels(
            synthetic.events(
                spec,
                batch,
                seed=100 + k,
                version=f"v{k % 3}",
                shift={"x03": k / distinct},
                attributions=attributions,
            )
        )
        for i, e in enumerate(evs):
            e["latency_seconds"] = 0.001 * (i % 40)
        out.append(orjson.dumps({"events": evs}))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoints", default="100000,1000000")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--json", default="bench/results/memory.json")
    ap.add_argument(
        "--attributions", action="store_true", help="events and baseline carry attributions"
    )
    args = ap.parse_args()
    checkpoints = sorted(int(x) for x in args.checkpoints.split(","))
    with tempfile.TemporaryDirectory() as d:
        cfg = setup(Path(d), args.attributions)
        exporter = Exporter(cfg)
        proc = exporter.proc
        url = f"http://127.0.0.1:{exporter.port}"
        try:
            http = requests.Session()
            payloads = bodies(args.batch, attributions=args.attributions)
            headers = {"Content-Type": "application/json"}
            start_rss = rss_bytes(proc.pid)
            sent, rows, t0 = 0, [], time.monotonic()
            for cp in checkpoints:
                while sent < cp:
                    r = http.post(
                        f"{url}/v1/models/{MODEL}/predictions",
                        data=payloads[(sent // args.batch) % len(payloads)],
                        headers=headers,
                        timeout=60,
                    )
                    r.raise_for_status()
                    sent += args.batch
                    if sent % 100_000 == 0:
                        http.get(url + "/metrics", timeout=60).raise_for_status()
                rows.append(
                    {
                        "events": sent,
                        "rss_bytes": rss_bytes(proc.pid),
                        "elapsed_seconds": round(time.monotonic() - t0, 1),
                    }
                )
        finally:
            exporter.stop()
    base = rows[0]["rss_bytes"]
    print(f"{'events':>12} {'RSS MiB':>9} {'vs first':>9} {'elapsed s':>10}")
    for r in rows:
        r["ratio_to_first"] = round(r["rss_bytes"] / base, 4)
        print(
            f"{r['events']:>12,} {r['rss_bytes'] / 2**20:>9.1f} {r['ratio_to_first']:>9.3f} "
            f"{r['elapsed_seconds']:>10}"
        )
    result = {
        "machine": f"{platform.machine()}, {platform.python_version()}, "
        f"{__import__('os').cpu_count()} cores",
        "start_rss_bytes": start_rss,
        "batch": args.batch,
        "checkpoints": rows,
        "within_10_percent": all(r["ratio_to_first"] <= 1.10 for r in rows),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0 if result["within_10_percent"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
