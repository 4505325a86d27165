"""The demo: a credit-risk model's traffic, with drift that starts after a few minutes.

`mlmon demo` starts the exporter with the example config on 127.0.0.1 and feeds it
synthetic traffic until Ctrl-C. `mlmon demo --traffic-only --url URL` only sends traffic
to an exporter that runs elsewhere (as in docker-compose).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import requests

from . import synthetic
from .config import load_config

log = logging.getLogger("mlmon.demo")
MODEL = "credit-risk"
# After the drift starts, applicants earn less and carry more debt: two features move by
# one standard deviation, and the score distribution follows.
DRIFT = {"income": -1.0, "debt_ratio": 1.0}


def traffic(
    url: str, rate: float, drift_after: float, duration: float | None, stop: list[bool]
) -> int:
    """Send ``rate`` events per second in one-second batches; returns events sent."""
    spec = synthetic.credit_spec()
    http = requests.Session()
    start = time.monotonic()
    sent = 0
    rng = np.random.default_rng(0)
    for tick in itertools.count():
        if stop[0] or (duration is not None and time.monotonic() - start >= duration):
            break
        elapsed = time.monotonic() - start
        drifting = elapsed >= drift_after
        n = max(1, int(rng.poisson(rate)))
        events = synthetic.without_labels(
            synthetic.events(
                spec,
                n,
                seed=1000 + tick,
                shift=DRIFT if drifting else None,
                version="v1",
                id_prefix=f"t{tick}-",
            )
        )
        for e in events:
            e["latency_seconds"] = float(rng.gamma(2.0, 0.01))
        try:
            r = http.post(
                f"{url}/v1/models/{MODEL}/predictions",
                data=orjson.dumps({"events": events}),
                headers={"Content-Type": "application/json"},
                timeout=10,
            )
            if r.status_code != 200:
                log.warning("exporter answered %s: %s", r.status_code, r.text[:200])
            else:
                sent += n
        except requests.RequestException as e:
            log.warning("exporter unreachable: %s", e)
        if tick % 30 == 0:
            log.info("sent %d events%s", sent, " (drifting)" if drifting else "")
        time.sleep(max(0.0, start + tick + 1 - time.monotonic()))
    return sent


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the exporter exited during start-up")
        try:
            if requests.get(url + "/readyz", timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mlmon demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="examples/mlmon.yml")
    ap.add_argument("--url", help="send traffic to this exporter instead of starting one")
    ap.add_argument("--traffic-only", action="store_true")
    ap.add_argument("--rate", type=float, default=50.0, help="events per second")
    ap.add_argument(
        "--drift-after",
        type=float,
        default=180.0,
        help="seconds of clean traffic before the drift starts",
    )
    ap.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    stop = [False]

    def on_signal(signum: int, frame: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if args.traffic_only:
        traffic(
            args.url or "http://127.0.0.1:9797", args.rate, args.drift_after, args.duration, stop
        )
        return 0

    cfg = load_config(args.config)
    url = f"http://{cfg.server.listen_address}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlmon", "serve", "--config", str(Path(args.config))]
    )
    try:
        _wait_ready(url, proc)
        print(
            f"""
mlmon demo is running. Open:
  exporter landing page   {url}/
  model statistics (JSON) {url}/v1/models/{MODEL}/stats
  metrics                 {url}/metrics
Traffic: {args.rate:g} events/s; income and debt_ratio drift after {args.drift_after:g} s.
Press Ctrl-C to stop.
""",
            flush=True,
        )
        traffic(url, args.rate, args.drift_after, args.duration, stop)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    print("demo stopped")
    return 0
