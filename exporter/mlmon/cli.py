"""Command line: `mlmon serve`, `baseline`, `check-config`, `check`, `report`, `backfill`,
`backtest`."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from mlmon import __version__
from mlmon.core.baseline import BaselineError, build_profile, read_training_data, write_profile
from mlmon.core.config import ConfigError, load_config, split_address
from mlmon.core.fleet import store_settings
from mlmon.history.command import register as register_history
from mlmon.report.command import register as register_report

if TYPE_CHECKING:
    from collections.abc import Callable

    import uvicorn
    from prometheus_client import CollectorRegistry

    from mlmon.capture.counters import ProxyStats
    from mlmon.core.config import Config
    from mlmon.core.monitor import Monitor
    from mlmon.http.auth import Tokens
    from mlmon.http.server import ExporterApp

log = logging.getLogger("mlmon")
STORE_POLL_SECONDS = 2.0  # how often runtime thresholds are read from the shared store


def build_exposition(
    monitor: Monitor, proxy: ProxyStats | None = None
) -> tuple[CollectorRegistry, Callable[[], bytes]]:
    """The registry (prometheus_client's view of every family) and the fast renderer of
    the same text that /metrics serves."""
    from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

    from mlmon.metrics.collector import MlmonCollector
    from mlmon.metrics.exposition import Renderer

    collector = MlmonCollector(monitor, proxy)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    process = CollectorRegistry(auto_describe=False)
    for reg in (registry, process):
        ProcessCollector(registry=reg)
        if proxy is not None:  # the proxy process's CPU, memory and files, read from /proc
            ProcessCollector(namespace="mlmon_proxy", pid=proxy.pid_of, registry=reg)
    renderer = Renderer()

    def render() -> bytes:
        started = time.perf_counter()
        text = renderer.render(collector.families()) + generate_latest(process)
        collector.render_times.observe(time.perf_counter() - started)
        return text

    return registry, render


def build_registry(monitor: Monitor, proxy: ProxyStats | None = None) -> CollectorRegistry:
    return build_exposition(monitor, proxy)[0]


@dataclass
class Service:
    """Everything `mlmon serve` runs, wired: the monitor, the exposition, the ASGI app and
    the uvicorn server behind its connection guard. Tests build the same thing."""

    monitor: Monitor
    registry: CollectorRegistry
    app: ExporterApp
    server: uvicorn.Server
    proxy_stats: ProxyStats | None


def build_service(
    cfg: Config, clock: Callable[[], float] | None = None, tokens: Tokens | None = None
) -> Service:
    """The exporter for ``cfg``; tokens from the config's files or the environment unless
    given."""
    from mlmon.capture.counters import ProxyStats
    from mlmon.core.monitor import Monitor
    from mlmon.http.api import Api
    from mlmon.http.auth import load_tokens
    from mlmon.http.guard import Guard
    from mlmon.http.server import ExporterApp, effective_limits, limits_of, make_server
    from mlmon.http.web import create_app

    monitor = Monitor(cfg, clock=clock) if clock is not None else Monitor(cfg)
    proxy_stats = ProxyStats() if cfg.proxy is not None else None
    tokens = tokens if tokens is not None else load_tokens(cfg)
    registry, render = build_exposition(monitor, proxy_stats)
    api = Api(monitor, registry, tokens, render)
    app = ExporterApp(api, create_app(monitor, registry, tokens, api), cfg.server.threads)
    limits = effective_limits(limits_of(cfg.server))
    counters = monitor.counters
    guard = Guard(limits, lambda reason: counters.count(counters.connections_closed, reason))
    return Service(monitor, registry, app, make_server(app, limits, guard), proxy_stats)


def cmd_serve(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.listen_address:
        split_address(args.listen_address)
        cfg = replace(cfg, server=replace(cfg.server, listen_address=args.listen_address))
    if args.threads:
        cfg = replace(cfg, server=replace(cfg.server, threads=args.threads))
    if args.upstream or args.proxy_listen_address:
        cfg = _with_proxy(cfg, args.upstream, args.proxy_listen_address)
    try:
        cfg = replace(cfg, store=store_settings(cfg.store, dict(os.environ)))
    except ValueError as e:
        raise ConfigError([str(e)]) from None
    service = build_service(cfg)
    monitor = service.monitor
    if cfg.proxy is not None and service.proxy_stats is not None:  # logged before `serving`
        from mlmon.capture.proxy import ProxyProcess

        proxy_port = ProxyProcess(cfg.proxy, monitor, service.proxy_stats).start()
        phost, _ = split_address(cfg.proxy.listen_address)
        log.info(
            "proxy on http://%s:%d/ forwarding to %s",
            phost if ":" not in phost else f"[{phost}]",
            proxy_port,
            cfg.proxy.upstream,
        )
    sock = bind(cfg.server.listen_address)
    host, bound = sock.getsockname()[:2]
    log.info(
        "mlmon %s serving %d model(s) on http://%s:%d/",
        __version__,
        len(monitor.models),
        host if sock.family == socket.AF_INET else f"[{host}]",
        bound,
    )
    if cfg.server.snapshot_dir is not None:
        _snapshot_periodically(monitor, cfg.server.snapshot_interval_seconds)
    if cfg.server.snapshot_dir is not None or monitor.shared is not None:
        # a snapshot, and the join records still queued (written by `finally` below)
        def on_term(signum: int, frame: object) -> None:
            monitor.write_snapshots()
            raise SystemExit(0)

        signal.signal(signal.SIGTERM, on_term)
    if monitor.shared is not None:
        log.info("sharing labels and thresholds through %s", monitor.shared.where)
        _every(STORE_POLL_SECONDS, monitor.refresh_overrides, "mlmon-store-poll")
    try:
        service.server.run(sockets=[sock])
    finally:
        service.app.pool.shutdown(wait=False)
        service.app.ingest.shutdown(wait=False)
        monitor.close()
    return 0


def bind(address: str) -> socket.socket:
    """A listening socket on HOST:PORT, bound here so that port 0 works (the log line
    says which port was chosen)."""
    from mlmon.http.server import listen

    return listen(*split_address(address))


def _with_proxy(cfg: Config, upstream: str | None, listen: str | None) -> Config:
    """The config with the proxy flags applied (a proxy section is created if needed)."""
    from mlmon.core.config import ProxySettings, upstream_address

    proxy = cfg.proxy
    if proxy is None:
        if upstream is None:
            raise ConfigError(["--proxy.listen-address needs --upstream or a proxy section"])
        model = cfg.models[0].name if len(cfg.models) == 1 else None
        proxy = ProxySettings(upstream=upstream, model=model)
    if upstream is not None:
        upstream_address(upstream)
        proxy = replace(proxy, upstream=upstream.rstrip("/"))
    if listen is not None:
        split_address(listen)
        proxy = replace(proxy, listen_address=listen)
    return replace(cfg, proxy=proxy)


def _snapshot_periodically(monitor: Monitor, interval: float) -> None:
    _every(interval, monitor.write_snapshots, "mlmon-snapshots")


def _every(interval: float, call: Callable[[], object], name: str) -> None:
    """Call ``call`` every ``interval`` seconds in a daemon thread."""

    def run() -> None:
        while True:
            time.sleep(interval)
            try:
                call()
            except Exception:  # logged; the next round tries again
                log.exception("%s failed", name)

    threading.Thread(target=run, name=name, daemon=True).start()


def cmd_baseline(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    model = cfg.model(args.model)
    if model is None:
        raise ConfigError(
            [f"no model named {args.model!r} (known: {', '.join(m.name for m in cfg.models)})"],
            args.config,
        )
    names = [f.name for f in model.features] if model.features is not None else None
    data = read_training_data(args.data, names, progress=not args.no_progress)
    profile = build_profile(model, data)
    out = Path(args.output) if args.output else model.baseline
    write_profile(profile, out)
    print(
        f"wrote {out}: {profile['rows']} rows, {len(profile['features'])} features, "
        f"{profile['hash']}"
    )
    if err := profile.get("regression_error"):
        print(
            f"baseline error over {err['count']} labelled rows: "
            f"MAE {err['mae']:.6g}, RMSE {err['rmse']:.6g}"
        )
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from mlmon.core.monitor import Monitor

    cfg = load_config(args.config)
    Monitor(cfg)
    print(f"{args.config}: OK, {len(cfg.models)} model(s)")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """A file through the live ingest code as one window: exit 1 when an alert's drift,
    performance or fairness condition holds, 2 when nothing could be tested."""
    from mlmon.core import batchcheck, checkreport

    result = batchcheck.run(load_config(args.config), args.model, args.data, args.labels)
    if args.json:
        checkreport.write_json(result, args.json)
    sys.stdout.write(checkreport.text(result))
    return result.exit_code


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mlmon",
        description="Monitoring for ML models in production: a Prometheus sidecar exporter.",
    )
    p.add_argument("--version", action="version", version=f"mlmon {__version__}")
    p.add_argument(
        "--log.level",
        dest="log_level",
        default="info",
        choices=["debug", "info", "warning", "error"],
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the exporter and its ingest API")
    s.add_argument("--config", "--config.file", dest="config", required=True)
    s.add_argument(
        "--web.listen-address",
        dest="listen_address",
        default=None,
        help="HOST:PORT to listen on (default from the config, else 127.0.0.1:9797)",
    )
    s.add_argument(
        "--web.threads",
        dest="threads",
        type=int,
        default=None,
        help="worker threads of the HTTP server (default 4)",
    )
    s.add_argument(
        "--upstream",
        default=None,
        help="run the capturing reverse proxy in front of this model server "
        "(http://HOST:PORT; overrides proxy.upstream)",
    )
    s.add_argument(
        "--proxy.listen-address",
        dest="proxy_listen_address",
        default=None,
        help="HOST:PORT of the proxy (default from the config, else 127.0.0.1:9798)",
    )
    s.set_defaults(func=cmd_serve)

    b = sub.add_parser("baseline", help="build a baseline profile from training data")
    b.add_argument("--config", "--config.file", dest="config", required=True)
    b.add_argument("--model", required=True)
    b.add_argument("--data", required=True, help="CSV with a header, or JSONL event rows")
    b.add_argument(
        "--output",
        help="where to write the profile (default: the model's baseline path from the config)",
    )
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=cmd_baseline)

    # `mlmon demo ...` is dispatched before parsing (see main); listed here for --help.
    sub.add_parser("demo", add_help=False, help="run the demo (see `mlmon demo --help`)")

    c = sub.add_parser("check-config", help="validate a config and its baselines")
    c.add_argument("--config", "--config.file", dest="config", required=True)
    c.set_defaults(func=cmd_check_config)

    k = sub.add_parser(
        "check",
        help="check a file of events (and labels) against the baseline, for CI: "
        "exit 1 when a drift, performance or fairness condition holds",
    )
    k.add_argument("--config", "--config.file", dest="config", required=True)
    k.add_argument("--model", help="the model to check (default: the config's only model)")
    k.add_argument("--data", required=True, help="CSV with a header, or JSONL events")
    k.add_argument("--labels", help='JSONL of {"id": ..., "label": ...}, joined by id')
    k.add_argument("--json", help="also write the result as JSON to this file")
    k.set_defaults(func=cmd_check)
    register_report(sub)  # `mlmon report`: exporter/mlmon/report/command.py
    register_history(sub)  # `mlmon backfill`, `mlmon backtest`: exporter/mlmon/history/
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"]:
        from mlmon.demo import runner as demo

        return demo.main(argv[1:])
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except (ConfigError, BaselineError, ValueError, OSError) as e:
        print(f"mlmon: error: {e}", file=sys.stderr)
        return 2
