"""The demo: a credit-risk model's traffic, with drift that starts after a few minutes.

`mlmon demo` starts the whole bundle natively on 127.0.0.1 — the exporter with the example
config, Prometheus with the repository's rules, Alertmanager with its routes and templates,
and local receivers that print every notification — then feeds the exporter synthetic
traffic until Ctrl-C. `mlmon demo --traffic-only --url URL` only sends the traffic (as the
docker-compose stack's demo-model service does).

The workload: version v1 takes 90% of the traffic and a canary v2 10%; 1% of inferences
fail; `months_employed` is missing 2% of the time; ground-truth labels come back 10 seconds
later, shuffled, with a few for unknown ids. Until `--drift-after` seconds the model is
healthy and no alert fires (examples/mlmon.yml sets this model's F1 and false-negative
limits below its training values: F1 0.38, FNR 0.73). Then applicants earn less and carry
more debt (two features move by one standard deviation), 5% come from a country the model
never saw, a quarter of the outcomes no longer follow the scores (accuracy falls), the
model selects group f of `gender` less often than m, and the canary turns worse than v1
(a fifth of its answers wrong).
"""

from __future__ import annotations

import argparse
import http.client
import logging
import shutil
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np
import orjson

from mlmon.core.config import ConfigError, load_config, split_address
from mlmon.demo import stack, synthetic
from mlmon.demo.sinks import SmtpSink, WebhookSink

log = logging.getLogger("mlmon.demo")
MODEL = "credit-risk"
DRIFT = {"income": -1.0, "debt_ratio": 1.0}
FAILURES = ("timeout", "model_error")


def demo_events(
    tick: int, n: int, drifting: bool, rng: np.random.Generator
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One second's events and the labels that will come back for them later."""
    rows = synthetic.events(
        synthetic.credit_spec(),
        n,
        seed=1000 + tick,
        shift=DRIFT if drifting else None,
        id_prefix=f"t{tick}-",
        attributions=True,  # the model server's SHAP values
    )
    events, labels = [], []
    for r in rows:
        e = {k: v for k, v in r.items() if k != "label"}
        e["version"] = "v2" if rng.random() < 0.1 else "v1"
        e["groups"] = {"gender": "f" if rng.random() < 0.5 else "m"}
        e["latency_seconds"] = float(rng.gamma(2.0, 0.02 if e["version"] == "v1" else 0.03))
        if (
            drifting
            and e["groups"]["gender"] == "f"
            and e["prediction"] == 1
            and rng.random() < 0.4
        ):
            e["prediction"] = 0  # ... and after the drift the model treats f unequally
        if rng.random() < 0.02:
            del e["features"]["months_employed"]
        if drifting and rng.random() < 0.05:
            e["features"]["country"] = "PL"
        if rng.random() < 0.01:
            e["error"] = str(rng.choice(FAILURES))
            e.pop("prediction")
            e.pop("scores")
            events.append(e)
            continue
        label = r["label"]
        if drifting and rng.random() < 0.25:
            label = 1 - label  # concept drift: the outcome no longer follows the score
        if drifting and e["version"] == "v2" and rng.random() < 0.2:
            e["prediction"] = 1 - label  # the canary turns worse: a fifth of its answers wrong
        events.append(e)
        labels.append({"id": e["id"], "label": label})
    return events, labels


def traffic(
    url: str,
    rate: float,
    drift_after: float,
    duration: float | None,
    stop: threading.Event,
    label_delay: float = 10.0,
) -> int:
    """Send about ``rate`` events per second in one-second batches, and their labels
    ``label_delay`` seconds later (shuffled, with a few for ids that never existed);
    returns events sent."""
    http = _Poster(url)
    rng = np.random.default_rng(0)
    start = time.monotonic()
    sent = tick = 0
    pending: list[tuple[float, list[dict[str, Any]]]] = []
    while not stop.is_set():
        elapsed = time.monotonic() - start
        if duration is not None and elapsed >= duration:
            break
        drifting = elapsed >= drift_after
        events, labels = demo_events(tick, max(1, int(rng.poisson(rate))), drifting, rng)
        pending.append((elapsed + label_delay, labels))
        due = [x for t, batch in pending if t <= elapsed for x in batch]
        pending = [(t, b) for t, b in pending if t > elapsed]
        if due:
            due = [due[i] for i in rng.permutation(len(due))]
            due.append({"id": f"unknown-{tick}", "label": 1})
        for path, body, key in (("predictions", events, "events"), ("labels", due, "labels")):
            if not body:
                continue
            try:
                status, text = http.post(f"/v1/models/{MODEL}/{path}", orjson.dumps({key: body}))
                if status != 200:
                    log.warning("exporter answered %s: %s", status, text[:200])
                elif path == "predictions":
                    sent += len(events)
            except OSError as e:
                log.warning("exporter unreachable: %s", e)
        if tick % 30 == 0:
            log.info("sent %d events%s", sent, " (drifting)" if drifting else "")
        tick += 1
        stop.wait(max(0.0, start + tick - time.monotonic()))
    return sent


class _Poster:
    """POSTs JSON to the exporter over one keep-alive connection (the standard library's
    client), reconnecting after an error."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: bytes) -> tuple[int, str]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self.conn.request(
                "POST", self.prefix + path, body, {"Content-Type": "application/json"}
            )
            response = self.conn.getresponse()
            return response.status, response.read().decode("utf-8", "replace")
        except (OSError, http.client.HTTPException) as e:
            self.conn.close()
            self.conn = None
            raise OSError(str(e)) from e


@dataclass
class DemoStack:
    exporter: stack.Server
    prometheus: stack.Server
    alertmanager: stack.Server
    webhooks: WebhookSink
    smtp: SmtpSink
    servers: list[stack.Server] = field(default_factory=list)

    def stop(self) -> None:
        for s in reversed(self.servers):
            s.stop()
        self.webhooks.close()
        self.smtp.close()


def start_stack(
    root: Path,
    config: Path,
    workdir: Path,
    exporter_port: int,
    prometheus_port: int,
    alertmanager_port: int,
    interval: str = "5s",
    alert_for: str = "1m",
    group_wait: str = "10s",
    notify: Callable[[str], None] | None = None,
    extra_targets: tuple[str, ...] = (),
    history: Path | None = None,
) -> DemoStack:
    """Exporter, Prometheus and Alertmanager on 127.0.0.1 with the repository's bundle;
    Prometheus also scrapes ``extra_targets`` (more exporters, HOST:PORT) as job mlmon,
    and starts with the blocks in ``history`` (`demo.history.build`) in its storage."""
    notify = notify or (lambda line: None)
    webhooks = WebhookSink(on_post=_alert_printer(notify))
    smtp = SmtpSink(on_message=lambda m: notify(f"email: {m['Subject']}"))
    servers: list[stack.Server] = []
    try:
        exporter = _start_exporter(config, workdir, exporter_port)
        servers.append(exporter)
        am_cfg = stack.alertmanager_config(
            root / "alertmanager/alertmanager.yml",
            workdir / "alertmanager",
            pager_url=webhooks.url + "/pager",
            chat_url=webhooks.url + "/chat",
            smtp=smtp.address,
            group_wait=group_wait,
            group_interval="30s",
            repeat_interval="4h",
        )
        am = stack.start_alertmanager(am_cfg, workdir / "alertmanager", alertmanager_port)
        servers.append(am)
        rules = stack.overlay_rules(
            root / "prometheus/rules", workdir / "rules", for_duration=alert_for,
            group_interval=interval,
        )  # fmt: skip
        prom_cfg = stack.prometheus_config(
            {"mlmon": [f"127.0.0.1:{exporter_port}", *extra_targets]},
            rules,
            alertmanager=f"127.0.0.1:{alertmanager_port}",
            interval=interval,
        )
        if history is not None:
            _install_blocks(history, workdir / "prometheus" / "data")
        prom = stack.start_prometheus(
            prom_cfg, workdir / "prometheus", prometheus_port, extra_args=(RETENTION,)
        )
        servers.append(prom)
    except BaseException:
        for server in reversed(servers):
            server.stop()
        webhooks.close()
        smtp.close()
        raise
    return DemoStack(exporter, prom, am, webhooks, smtp, servers)


# The seasonal anomaly bands compare an hour with the same hour of the last 4 weeks.
RETENTION = "--storage.tsdb.retention.time=35d"


def _install_blocks(blocks: Path, data: Path) -> None:
    """Copy the history's blocks into Prometheus's storage (before it starts)."""
    data.mkdir(parents=True, exist_ok=True)
    for block in blocks.iterdir():
        if block.is_dir() and not (data / block.name).exists():
            shutil.copytree(block, data / block.name)


def _alert_printer(notify: Callable[[str], None]) -> Callable[[str, dict[str, Any]], None]:
    """One line per alert of a webhook notification, one per chat attachment."""

    def on_post(path: str, body: dict[str, Any]) -> None:
        for a in body.get("alerts", []):
            notify(
                f"{path.strip('/')}: {a['status'].upper()} {a['labels'].get('alertname')} "
                f"{ {k: v for k, v in a['labels'].items() if k != 'alertname'} }"
            )
        for att in body.get("attachments", []):
            notify(f"chat: {att.get('title')}")

    return on_post


def _start_exporter(config: Path, workdir: Path, port: int) -> stack.Server:
    command = [sys.executable, "-m", "mlmon", "serve", "--config", str(config),
               "--web.listen-address", f"127.0.0.1:{port}"]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    return stack.Server("exporter", command, workdir / "exporter.log", url, "/readyz")


def _graph_link(ui: str, *queries: str) -> str:
    parts = "&".join(
        f"g{i}.expr={quote(q)}&g{i}.tab=0&g{i}.range_input=30m" for i, q in enumerate(queries)
    )
    return f"{ui}/graph?{parts}"


def _prometheus_ui(prometheus: str) -> str:
    """Where this Prometheus serves its pages: Debian's build has only the classic UI,
    under /classic (its /alerts is a 404)."""
    for prefix in ("", "/classic"):
        try:
            with urllib.request.urlopen(f"{prometheus}{prefix}/alerts", timeout=2) as r:
                if r.status == 200:
                    return prometheus + prefix
        except OSError:
            continue
    return prometheus


def _missing_bundle(root: Path) -> list[str]:
    """The repository files the native stack needs that `root` lacks."""
    needed = ("prometheus/rules", "alertmanager/alertmanager.yml", "alertmanager/templates")
    return [name for name in needed if not (root / name).exists()]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mlmon demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="examples/mlmon.yml")
    ap.add_argument(
        "--root", default=".", help="the repository (its prometheus/ and alertmanager/ folders)"
    )
    ap.add_argument("--workdir", default="demo-data", help="logs and data of the run")
    ap.add_argument(
        "--traffic-only",
        action="store_true",
        help="only send traffic to --url (an exporter that runs elsewhere)",
    )
    ap.add_argument("--url", default="http://127.0.0.1:9797")
    ap.add_argument("--rate", type=float, default=50.0, help="events per second")
    ap.add_argument(
        "--drift-after",
        type=float,
        default=120.0,
        help="seconds of clean traffic before the drift starts",
    )
    ap.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    ap.add_argument("--prometheus-port", type=int, default=9090)
    ap.add_argument("--alertmanager-port", type=int, default=9093)
    ap.add_argument(
        "--alert-for", default="1m", help="every alert's `for:` in the demo (the rules say 10-15m)"
    )
    ap.add_argument(
        "--history-days",
        type=float,
        default=0.0,
        help="first backfill this many days of past traffic with a daily cycle "
        "(22 give the seasonal anomaly bands their 3 weeks)",
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.traffic_only:
        traffic(args.url, args.rate, args.drift_after, args.duration, stop)
        return 0

    root = Path(args.root).resolve()
    missing = _missing_bundle(root)
    if missing:
        print(
            f"mlmon demo: {root} is not an mlmon repository (no {', '.join(missing)}). The "
            "demo runs the repository's rules and routes: run it from a clone, or pass "
            "--root PATH_TO_THE_CLONE (and --config). `mlmon demo --traffic-only --url URL` "
            "needs neither.",
            file=sys.stderr,
        )
        return 2
    try:
        _, exporter_port = split_address(load_config(args.config).server.listen_address)
    except ConfigError as e:
        print(f"mlmon demo: {e}\n(--config names the demo's config; the repository's is "
              "examples/mlmon.yml)", file=sys.stderr)  # fmt: skip
        return 2
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    blocks = _history(Path(args.config), workdir, args.history_days)
    demo = start_stack(
        root,
        Path(args.config),
        workdir,
        exporter_port,
        args.prometheus_port,
        args.alertmanager_port,
        alert_for=args.alert_for,
        notify=lambda line: print(f"  >> notification {line}", flush=True),
        history=blocks,
    )
    try:
        print(_banner(demo, workdir, args), flush=True)
        traffic(demo.exporter.url, args.rate, args.drift_after, args.duration, stop)
    finally:
        demo.stop()
    print("demo stopped")
    return 0


def _history(config: Path, workdir: Path, days: float) -> Path | None:
    """Blocks of ``days`` of past traffic, ending an hour before now; None for none."""
    if days <= 0:
        return None
    from mlmon.demo import history

    print(f"backfilling {days:g} days of history ...", flush=True)
    end = (time.time() // 3600 - 1) * 3600
    shutil.rmtree(workdir / "history", ignore_errors=True)
    started = time.monotonic()
    blocks, stats = history.build(load_config(config), workdir / "history", days, end)
    print(
        f"  {stats.events} events and {stats.labels} labels in {stats.steps} steps, "
        f"{time.monotonic() - started:.0f}s",
        flush=True,
    )
    return blocks


def _banner(demo: DemoStack, workdir: Path, args: argparse.Namespace) -> str:
    exp, am = demo.exporter.url, demo.alertmanager.url
    prom = _prometheus_ui(demo.prometheus.url)
    ks_link = _graph_link(
        prom,
        "model_version_feature:mlmon_feature_drift_ks:increase1h",
        "model:mlmon_threshold_drift_ks_min:max",
    )
    share_link = _graph_link(
        prom,
        "model_version:mlmon_drifted_features:ratio_increase1h",
        "model_version:mlmon_inference_error_ratio:ratio_rate5m",
    )
    return f"""
mlmon demo is running (logs in {workdir}). Open:
  exporter landing page   {exp}/
  model statistics (JSON) {exp}/v1/models/{MODEL}/stats
  Prometheus alerts       {prom}/alerts
  feature drift (KS)      {ks_link}
  drifted share, errors   {share_link}
  Alertmanager (API)      {am}/api/v2/alerts
                          or: amtool alert query --alertmanager.url={am}
Traffic: {args.rate:g} events/s (v1 90%, canary v2 10%); income and debt_ratio drift after
{args.drift_after:g} s, and MLModelFeatureDrift fires a few minutes later (alerts wait
{args.alert_for} here instead of 15m). Notifications print below. Ctrl-C stops everything.
"""
