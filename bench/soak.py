"""A bounded soak test against a real `mlmon serve` on 127.0.0.1.

    python bench/soak.py --minutes 10 [--rate 5000]

Drives a mixed workload (row batches, columnar batches, single events, labels, scrapes)
at a steady rate, with a trickle of bad requests (malformed JSON, wrong types, unknown
models). At the end it checks that the events the exporter accepted equal the events sent
minus the bad ones, exactly, that resident memory stayed flat, and that the log has no
error; it writes bench/results/soak.json and exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlmon.demo import synthetic

from bench.suite import MODEL, Exporter, columnar_bodies, setup, spec


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=5000.0, help="events per second")
    ap.add_argument("--json", default="bench/results/soak.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        cfg = setup(Path(d))
        exporter = Exporter(cfg)
        proc, log, port = exporter.proc, exporter.log, exporter.port
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            json_h = {"Content-Type": "application/json"}

            def post(path: str, body: bytes) -> int:
                conn.request("POST", path, body, json_h)
                r = conn.getresponse()
                r.read()
                return r.status

            rows = synthetic.without_labels(
                synthetic.events(spec(), 20_000, seed=7, version="v1", id_prefix="s")
            )
            row_bodies = [
                orjson.dumps({"events": rows[i : i + 100]}) for i in range(0, 20_000, 100)
            ]
            col_bodies = columnar_bodies(rows, 500)
            bad = [
                b'{"events": [',
                orjson.dumps({"events": [{"features": {"x00": "x"}, "prediction": 1}]}),
                b"\xff\xfe",
            ]
            sent = bad_sent = labels_sent = 0
            rng = np.random.default_rng(0)
            end = time.monotonic() + args.minutes * 60
            memory = []
            t0 = time.monotonic()
            tick = 0
            while time.monotonic() < end:
                budget = args.rate  # events this second
                while budget > 0:
                    kind = rng.random()
                    if kind < 0.6:
                        b = row_bodies[int(rng.integers(len(row_bodies)))]
                        assert post(f"/v1/models/{MODEL}/predictions", b) == 200
                        sent += 100
                        budget -= 100
                    elif kind < 0.9:
                        b = col_bodies[int(rng.integers(len(col_bodies)))]
                        assert post(f"/v1/models/{MODEL}/predictions", b) == 200
                        sent += 500
                        budget -= 500
                    else:
                        e = rows[int(rng.integers(len(rows)))]
                        assert post(f"/v1/models/{MODEL}/predictions", orjson.dumps(e)) == 200
                        sent += 1
                        budget -= 1
                ids = [rows[int(i)]["id"] for i in rng.integers(len(rows), size=50)]
                post(
                    f"/v1/models/{MODEL}/labels",
                    orjson.dumps(
                        {"labels": [{"id": i, "label": int(rng.random() < 0.3)} for i in ids]}
                    ),
                )
                labels_sent += 50
                b = bad[tick % len(bad)]
                assert post(f"/v1/models/{MODEL}/predictions", b) == 400
                bad_sent += 1
                assert post("/v1/models/nope/predictions", row_bodies[0]) == 404
                bad_sent += 1
                conn.request("GET", "/metrics")
                conn.getresponse().read()
                if tick % 10 == 0:
                    memory.append((round(time.monotonic() - t0), rss(proc.pid)))
                tick += 1
                time.sleep(max(0.0, t0 + tick - time.monotonic()))
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
            accepted = float(
                re.search(r'mlmon_ingest_events_total\{model="bench"\} (\S+)', text).group(1)
            )
            rejected = sum(
                float(v)
                for v in re.findall(r"mlmon_ingest_rejected_requests_total\{[^}]*\} (\S+)", text)
            )
        finally:
            exporter.stop()
        errors = [
            line
            for line in log.read_text().splitlines()
            if " ERROR " in line or "Traceback" in line
        ]
    rss_mib = [m / 2**20 for _, m in memory]
    settled = rss_mib[len(rss_mib) // 5 :] or rss_mib  # after the first fifth (warm-up)
    growth = (settled[-1] - settled[0]) / settled[0] if settled else 0.0
    result = {
        "minutes": args.minutes,
        "rate": args.rate,
        "events_sent": sent,
        "events_accepted": accepted,
        "bad_requests_sent": bad_sent,
        "bad_requests_counted": rejected,
        "labels_sent": labels_sent,
        "rss_mib": [[t, round(m / 2**20, 1)] for t, m in memory],
        "rss_growth_after_warmup": round(growth, 4),
        "log_errors": errors[:10],
    }
    result["conserved"] = accepted == sent and rejected == bad_sent
    result["flat_memory"] = abs(growth) < 0.05
    result["ok"] = result["conserved"] and result["flat_memory"] and not errors
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rss_mib"}, indent=1))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
