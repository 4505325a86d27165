"""The baseline's identity: the content hash each replica exports (`mlmon_model_info`), the
training rows behind it (`mlmon_baseline_rows`), the task, how many replicas exported it and
when Prometheus saw it in the range. The exporter does not export when a baseline was built
(the profile carries no date): the first time a hash was seen is what there is."""

from __future__ import annotations

from mlmon.report.blocks import Note, Section, Table
from mlmon.report.context import Context, cell, text
from mlmon.report.series import by_labels
from mlmon.report.span import utc

NO_DATE = (
    "The exporter does not export the date a baseline was built (the profile holds no date): "
    "\u201cfirst seen\u201d is the first step of this range at which Prometheus had the hash, "
    "so a hash already in use at the start of the range shows the range's start."
)


def build(ctx: Context) -> Section:
    sel = ctx.selector()
    replicas = ctx.over_range(f"count by (baseline_hash, task) (mlmon_model_info{sel})")
    rows_of = by_labels(
        ctx.over_range(
            f"max by (baseline_hash) (mlmon_baseline_rows{sel}"
            " * ignoring (baseline_hash, task) group_left (baseline_hash)"
            f" mlmon_model_info{sel})"
        ),
        ("baseline_hash",),
    )
    rows = []
    for s in sorted(replicas, key=lambda s: s.first_time or 0.0):
        first, last = s.points[0][0], s.points[-1][0]
        rows_series = rows_of.get((s.label("baseline_hash"),))
        rows.append(
            (
                text(s.label("baseline_hash") or "(none)"),
                text(s.label("task")),
                cell(rows_series.last if rows_series else None, "count"),
                cell(s.peak, "count"),
                text(utc(first) + (" (start of range)" if first <= ctx.span.start else "")),
                text(utc(last)),
                text("not exported"),
            )
        )
    columns = (
        "content hash",
        "task",
        "training rows",
        "replicas",
        "first seen",
        "last seen",
        "built",
    )
    blocks: list = [Table(columns, tuple(rows), caption="Baselines in use during the range")]
    if len(rows) > 1:
        blocks.append(
            Note(
                "More than one baseline was in use during the range (a re-baseline, "
                "or replicas that disagree): each row says when."
            )
        )
    if not rows:
        blocks = [Note("Prometheus has no mlmon_model_info for this model in the range.")]
    blocks.append(Note(NO_DATE))
    return Section("baseline", "Baseline", tuple(blocks))
