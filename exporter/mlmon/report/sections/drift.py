"""Drift over time: per feature (and per model output) the bundle's fleet-level drift over the
last hour -- KS for numeric features and scores, PSI for categories and classes -- per
version, against the model's floor for that method (the red line, as the alerts use it);
then the share of tested features that drifted against its limit."""

from __future__ import annotations

from dataclasses import dataclass

from mlmon.report.blocks import Block, Note, Section, Table
from mlmon.report.context import Context, cell, plot, text
from mlmon.report.limits import MAX_FEATURE_PLOTS, MAX_TABLE_ROWS
from mlmon.report.series import Series, at_times, crossed, group_by

_FEATURE = "model_version_feature:mlmon_feature_drift_{}:increase1h"
_OUTPUT = "model_version_output:mlmon_prediction_drift_{}:increase1h"
# (label that names the signal, method, threshold, recording rule)
SIGNALS = (
    ("feature", "ks", "drift_ks_min", _FEATURE.format("ks")),
    ("feature", "psi", "drift_psi_min", _FEATURE.format("psi")),
    ("output", "ks", "drift_ks_min", _OUTPUT.format("ks")),
    ("output", "psi", "drift_psi_min", _OUTPUT.format("psi")),
)
# Where a signal counts, as the alerts decide: a feature once tested (drift_min_samples of
# its values in the hour), an output once the hour holds that many profiled inferences.
# Before that, a drift value of a few dozen values is noise and is not drawn.
TESTED = {
    "feature": "and on (model, version, feature) "
    "(model_version_feature:mlmon_feature_drift_tested:increase1h{sel} == 1)",
    "output": "and on (model, version) (model_version:mlmon_profiled_events:increase1h{sel} "
    ">= on (model) group_left () model:mlmon_drift_min_samples:max)",
}


@dataclass
class Signal:
    """One feature (or output) by one method: its series per version and its floor."""

    name: str
    method: str
    series: list[Series]
    threshold: Series | None
    threshold_name: str

    @property
    def closeness(self) -> float:
        """Highest value over the floor in force at the time (the plots' order)."""
        limits = at_times(self.threshold)
        return max(
            (v / limits[t] if limits.get(t) else v for s in self.series for t, v in s.points),
            default=0.0,
        )


def build(ctx: Context) -> Section:
    signals = _signals(ctx)
    ranked = sorted(signals, key=lambda s: -s.closeness)
    blocks: list[Block] = []
    if not signals:
        blocks.append(
            Note(
                "No feature was tested in the range (a feature is tested once the "
                "preceding hour holds drift_min_samples of its values)."
            )
        )
    else:
        blocks.append(_table(ranked))
    blocks += [_plot(s) for s in ranked[:MAX_FEATURE_PLOTS]]
    if len(ranked) > MAX_FEATURE_PLOTS:
        blocks.append(
            Note(
                f"{len(ranked) - MAX_FEATURE_PLOTS} more features are in the table "
                f"only (at most {MAX_FEATURE_PLOTS} plots per model)."
            )
        )
    sel = ctx.selector()
    dataset = ctx.over_range(f"model_version:mlmon_drifted_features:ratio_increase1h{sel}")
    if dataset:
        limit = ctx.threshold("drifted_features_ratio_max")
        blocks.append(
            plot(
                "Share of tested features that drifted (dataset drift)",
                "share",
                dataset,
                ("version",),
                limit,
                "drifted_features_ratio_max",
            )
        )
    intro = (
        "Each plot is one feature's (or output's) drift over the preceding hour, per version, "
        "as the alerts compute it across replicas, drawn from when that hour held "
        "drift_min_samples values; the red line is the floor at which it counts as drifted. "
        "Features are ordered by how far they came above their floor."
    )
    return Section("drift", "Drift", tuple(blocks), intro)


def _signals(ctx: Context) -> list[Signal]:
    out = []
    for label, method, threshold_name, rule in SIGNALS:
        sel = ctx.selector()
        series = ctx.over_range(f"{rule}{sel} {TESTED[label].format(sel=sel)}")
        if not series:
            continue
        threshold = ctx.threshold(threshold_name)
        for name, group in group_by(series, label).items():
            shown = name if label == "feature" else f"prediction {name}"
            out.append(Signal(shown, method, group, threshold, threshold_name))
    return out


def _plot(s: Signal):
    return plot(
        f"{s.name} ({s.method.upper()})",
        "score",
        s.series,
        ("version",),
        s.threshold,
        s.threshold_name,
    )


def _table(signals: list[Signal]) -> Table:
    rows = []
    for sig in signals:
        limit = sig.threshold.last if sig.threshold is not None else None
        for s in sig.series:
            over = crossed(s, sig.threshold)
            rows.append(
                (
                    text(sig.name),
                    text(sig.method),
                    text(s.label("version")),
                    cell(s.peak, "score", over),
                    cell(s.last, "score", limit is not None and s.last >= limit),
                    cell(limit, "score"),
                    text("yes" if over else "no"),
                )
            )
    columns = ("feature", "method", "version", "highest", "at end", "threshold", "crossed")
    return Table(
        columns,
        tuple(rows[:MAX_TABLE_ROWS]),
        max(0, len(rows) - MAX_TABLE_ROWS),
        "Drift of every feature over the range",
    )
