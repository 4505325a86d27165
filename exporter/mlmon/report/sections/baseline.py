"""The baseline's identity: the content hash each replica exports (`mlmon_model_info`), the
training rows behind it (`mlmon_baseline_rows`), when it was built or re-baselined
(`mlmon_baseline_created_timestamp_seconds`; absent for a profile built before profiles
carried a date), the task, how many replicas exported it and when Prometheus saw it in the
range."""

from __future__ import annotations

from mlmon.report.blocks import Note, Section, Table
from mlmon.report.context import Context, cell, text
from mlmon.report.series import by_labels
from mlmon.report.span import utc

NO_DATE = (
    "A baseline without a build date was built before profiles carried one (rebuild it with "
    "mlmon baseline to record it). \u201cFirst seen\u201d is the first step of this range at "
    "which Prometheus had the hash, so a hash already in use at the start of the range shows "
    "the range's start."
)


def _per_hash(ctx: Context, metric: str, sel: str) -> dict:
    """A per-model gauge joined to the baseline hash each replica exports."""
    return by_labels(
        ctx.over_range(
            f"max by (baseline_hash) ({metric}{sel}"
            " * ignoring (baseline_hash, task) group_left (baseline_hash)"
            f" mlmon_model_info{sel})"
        ),
        ("baseline_hash",),
    )


def build(ctx: Context) -> Section:
    sel = ctx.selector()
    replicas = ctx.over_range(f"count by (baseline_hash, task) (mlmon_model_info{sel})")
    rows_of = _per_hash(ctx, "mlmon_baseline_rows", sel)
    built_of = _per_hash(ctx, "mlmon_baseline_created_timestamp_seconds", sel)
    rows, undated = [], False
    for s in sorted(replicas, key=lambda s: s.first_time or 0.0):
        first, last = s.points[0][0], s.points[-1][0]
        rows_series = rows_of.get((s.label("baseline_hash"),))
        built = built_of.get((s.label("baseline_hash"),))
        undated = undated or not built or built.last is None
        rows.append(
            (
                text(s.label("baseline_hash") or "(none)"),
                text(s.label("task")),
                cell(rows_series.last if rows_series else None, "count"),
                cell(s.peak, "count"),
                text(utc(first) + (" (start of range)" if first <= ctx.span.start else "")),
                text(utc(last)),
                text(utc(built.last) if built and built.last is not None else "not recorded"),
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
    if undated:
        blocks.append(Note(NO_DATE))
    return Section("baseline", "Baseline", tuple(blocks))
