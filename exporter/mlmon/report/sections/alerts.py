"""The alerts that fired in the range, from Prometheus' own `ALERTS{alertstate="firing"}`
series: one row per firing interval, with when it fired and when it resolved, to within one
step of the range (the series is read at each step)."""

from __future__ import annotations

from dataclasses import dataclass

from mlmon.report.blocks import Note, Section, Table
from mlmon.report.context import Context, text
from mlmon.report.fetch import Prometheus
from mlmon.report.limits import MAX_TABLE_ROWS
from mlmon.report.series import Series
from mlmon.report.span import Span, utc
from mlmon.report.units import duration

# Labels every row shows in its own column, or that say nothing (the same on every row).
OWN_COLUMNS = {"__name__", "alertname", "alertstate", "severity", "model"}


@dataclass(frozen=True)
class Firing:
    labels: dict[str, str]
    fired: float  # the first step at which it was firing
    resolved: float | None  # the first step after it at which it was not; None: still firing
    since_start: bool  # already firing at the range's first step


def intervals(series: list[Series], span: Span) -> list[Firing]:
    """Runs of consecutive steps at which each alert series was firing."""
    out = []
    for s in series:
        run_start = previous = None
        for t, _ in s.points:
            if previous is not None and t - previous > 1.5 * span.step:
                out.append(_firing(s, run_start, previous + span.step, span))
                run_start = None
            run_start = t if run_start is None else run_start
            previous = t
        if run_start is not None and previous is not None:
            ended = previous + span.step <= span.end
            out.append(_firing(s, run_start, previous + span.step if ended else None, span))
    return sorted(out, key=lambda f: (f.fired, f.labels.get("alertname", "")))


def _firing(s: Series, start: float, resolved: float | None, span: Span) -> Firing:
    return Firing(s.labels, start, resolved, start < span.start + 0.5 * span.step)


def build(ctx: Context) -> Section:
    series = ctx.over_range(f"ALERTS{ctx.selector(alertstate='firing')}")
    return Section("alerts", "Alerts", _blocks(intervals(series, ctx.span), ctx.span))


def unlabelled(client: Prometheus, span: Span) -> Section:
    """Alerts without a model label (the exporter's own, Mlmon*), for the whole fleet."""
    series = client.range('ALERTS{alertstate="firing", model=""}', span.start, span.end, span.step)
    return Section("alerts", "Alerts without a model", _blocks(intervals(series, span), span))


def _blocks(firings: list[Firing], span: Span) -> tuple:
    if not firings:
        return (Note("No alert fired in the range."),)
    rows = [
        (
            text(f.labels.get("alertname", "")),
            text(f.labels.get("severity", "")),
            text(_other_labels(f.labels)),
            text(utc(f.fired) + (" (already firing)" if f.since_start else "")),
            text(utc(f.resolved) if f.resolved is not None else "still firing at the end"),
            text(duration((f.resolved if f.resolved is not None else span.end) - f.fired)),
        )
        for f in firings
    ]
    columns = ("alert", "severity", "labels", "fired", "resolved", "for")
    caption = f"Firing intervals, to within one step ({duration(span.step)})"
    dropped = max(0, len(rows) - MAX_TABLE_ROWS)
    return (Table(columns, tuple(rows[:MAX_TABLE_ROWS]), dropped, caption),)


def _other_labels(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in OWN_COLUMNS)
