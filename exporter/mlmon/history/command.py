"""The `mlmon backfill` and `mlmon backtest` commands: arguments, output, exit codes (0
done, 2 a file, rule or range that cannot be used)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlmon.core.values import parse_duration


def register(sub: Any) -> None:
    b = sub.add_parser(
        "backfill",
        help="replay a prediction log in event time into timestamped OpenMetrics "
        "(and Prometheus blocks)",
    )
    b.add_argument("--config", "--config.file", dest="config", required=True)
    b.add_argument("--model", required=True)
    b.add_argument("--data", required=True, help="the log: CSV with a header, or JSONL events")
    b.add_argument("--labels", help='JSONL of {"id", "label", "timestamp"}')
    b.add_argument("--output", required=True, help="the OpenMetrics file to write")
    b.add_argument("--step", default="1m", help="one sample per family and step (default 1m)")
    b.add_argument("--tsdb", help="also create Prometheus blocks here with promtool")
    b.add_argument("--job", default="mlmon", help="the job label of every series")
    b.add_argument("--instance", default="backfill", help="the instance label")
    b.set_defaults(func=cmd_backfill)

    t = sub.add_parser("backtest", help="when each alert would have fired over a past range")
    t.add_argument("--prometheus", required=True, help="the Prometheus with the raw series")
    t.add_argument("--rules", required=True, nargs="+", help="rule files or folders")
    t.add_argument("--from", dest="start", required=True, help="RFC 3339 or seconds")
    t.add_argument("--to", dest="end", required=True, help="RFC 3339 or seconds")
    t.add_argument("--step", default="1m", help="evaluation interval (default 1m)")
    t.add_argument("--json", help="also write the firings as JSON to this file")
    t.set_defaults(func=cmd_backtest)


def cmd_backfill(args: argparse.Namespace) -> int:
    from mlmon.core.batchfile import FileError
    from mlmon.core.config import load_config
    from mlmon.history import backfill
    from mlmon.history.replay import ReplayError

    try:
        req = backfill.BackfillRequest(
            model=args.model,
            data=Path(args.data),
            output=Path(args.output),
            labels=Path(args.labels) if args.labels else None,
            step=parse_duration(args.step),
            job=args.job,
            instance=args.instance,
            tsdb=Path(args.tsdb) if args.tsdb else None,
        )
        started = time.monotonic()
        stats = backfill.run(load_config(args.config), req)
    except (FileError, ReplayError, ValueError) as e:
        print(f"mlmon backfill: {e}", file=sys.stderr)
        return 2
    print(
        f"replayed {stats.events} events and {stats.labels} labels from {_iso(stats.first)} "
        f"to {_iso(stats.last)}: {stats.steps} steps of {args.step} written to {args.output} "
        f"in {time.monotonic() - started:.1f}s" + (f"; blocks in {args.tsdb}" if args.tsdb else "")
    )
    return 0


def cmd_backtest(args: argparse.Namespace) -> int:
    from mlmon.history import backtest, rules

    try:
        req = backtest.BacktestRequest(
            prometheus=args.prometheus,
            rules=[Path(r) for r in args.rules],
            start=parse_time(args.start),
            end=parse_time(args.end),
            step=parse_duration(args.step),
        )
        found = backtest.run(rules.load(req.rules), req, lambda m: print(m, file=sys.stderr))
    except (rules.RulesError, ValueError, OSError) as e:
        print(f"mlmon backtest: {e}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps(backtest.to_json(found, req), indent=1) + "\n")
    sys.stdout.write(table(found))
    return 0


def table(found: list[Any]) -> str:
    if not found:
        return "no alert would have fired\n"
    lines = [f"{'fired':<21}{'resolved':<21}alert and labels"]
    for f in found:
        labels = ",".join(f"{k}={v}" for k, v in sorted(f.labels.items()) if k != "alertname")
        end = _iso(f.resolved_at) if f.resolved_at is not None else "(still firing)"
        lines.append(f"{_iso(f.fired_at):<21}{end:<21}{f.alert}{{{labels}}}")
    return "\n".join(lines) + "\n"


def parse_time(text: str) -> float:
    """Seconds since the epoch, or an RFC 3339 time (a `Z` or an offset required)."""
    try:
        return float(text)
    except ValueError:
        pass
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError(f"{text!r}: give a time zone (Z or +hh:mm)")
    return t.timestamp()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
