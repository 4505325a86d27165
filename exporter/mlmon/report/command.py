"""`mlmon report`: its flags (registered on the CLI's subparsers) and its run. The rest of the
package is imported only when the command runs."""

from __future__ import annotations

import argparse

from mlmon.report.limits import MAX_POINTS, QUERY_TIMEOUT_SECONDS


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser(
        "report",
        help="write a self-contained HTML audit report from Prometheus",
        description="Read a model's service, drift, performance, fairness, versions, alerts "
        "and baseline from Prometheus (with the mlmon rules loaded) over a time range, and "
        "write them as one static HTML file with inline SVG plots.",
    )
    r.add_argument("--prometheus", required=True, help="base URL of Prometheus (http://HOST:9090)")
    r.add_argument(
        "--model",
        action="append",
        default=None,
        help="a model to report (repeat for more; default: every model in the range)",
    )
    r.add_argument(
        "--from",
        dest="start",
        required=True,
        help="start: now-7d, seconds since the epoch, or ISO 8601 (UTC unless it has an offset)",
    )
    r.add_argument("--to", dest="end", default="now", help="end, in the same forms (default now)")
    r.add_argument("--output", required=True, help="the HTML file to write")
    r.add_argument(
        "--step",
        default=None,
        help=f"resolution such as 30s or 5m (default, and at least: the range over {MAX_POINTS})",
    )
    r.add_argument(
        "--query-timeout",
        dest="query_timeout",
        type=float,
        default=QUERY_TIMEOUT_SECONDS,
        help=f"seconds per query (default {QUERY_TIMEOUT_SECONDS:g})",
    )
    r.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    import time
    from pathlib import Path

    from mlmon.report.build import build_report
    from mlmon.report.fetch import Prometheus
    from mlmon.report.page import render
    from mlmon.report.span import parse_span

    span = parse_span(args.start, args.end, args.step, time.time())
    client = Prometheus(args.prometheus, args.query_timeout)
    report = build_report(client, span, args.model)
    html = render(report)
    out = Path(args.output)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(html, encoding="utf-8")
    os.replace(partial, out)  # a reader never sees half a report
    print(
        f"wrote {out}: {len(report.models)} model(s), {span.points} points per series "
        f"(step {span.step:g}s), {report.queries} queries, {len(html.encode()):,} bytes"
    )
    return 0
