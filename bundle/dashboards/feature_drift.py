"""Feature drift: per feature, live against baseline, drift over time, data quality."""

from __future__ import annotations

from typing import Any

from bundle.dashboards.board import dashboard, variables
from bundle.dashboards.panels import Json, row, target, timeseries
from bundle.dashboards.queries import SEL, agg, th, trends
from bundle.params import Params

SELF = SEL + ', feature=~"$feature"'
BASELINE = 'model="$model", feature=~"$feature"'


def against_baseline(
    title: str,
    description: str,
    by: str,
    live: str,
    baseline: str,
    legend: str,
    w: int = 12,
    limit: str = "",
    finite: bool = False,
    **kw: Any,
) -> Json:
    """A live per-feature share (solid) and the baseline's (grey), same legend; with
    ``limit`` (a threshold on the rise above the baseline) a red line per feature at the
    baseline's share plus that limit, where the feature's alert fires. With ``finite``,
    the +Inf bucket (always 100%) is left out."""
    extra = ', le!="+Inf"' if finite else ""
    base = agg("max", baseline, BASELINE + extra, by)
    targets = [
        target(agg("max", live, SELF + extra, by), legend),
        target(base, f"baseline {legend}"),
    ]
    if limit:
        targets.append(target(f"{base} + on () group_left () {th(limit)}", f"limit {legend}"))
    return timeseries(
        title,
        description,
        "percentunit",
        targets,
        w=w,
        baseline=True,
        threshold_legend="^limit .*" if limit else None,
        **kw,
    )


def drift_with_trends(title: str, description: str, rule: str, floor: str) -> Json:
    return timeseries(
        title,
        description,
        "none",
        [
            target(agg("max", rule, SELF, "feature"), "{{feature}}"),
            target(th(floor), "floor"),
            *trends("max", rule, SELF, "feature", "{{feature}}"),
        ],
        threshold_legend="floor",
        trends=True,
        w=12,
    )


def distribution() -> list[Json]:
    return [
        row("Distribution"),
        against_baseline(
            "Live vs baseline CDF: $feature",
            "Cumulative share of the feature's values at or below each "
            "histogram edge: the last hour (solid) against the baseline (dashed grey). "
            "The largest vertical gap is the KS distance. One panel per selected feature; "
            "the last edge (+Inf, always 100%) is left out.",
            "le",
            "model_version_feature_le:mlmon_feature_value_cdf:ratio_increase1h",
            "model_feature_le:mlmon_feature_baseline_cdf:ratio",
            "≤ {{le}}",
            finite=True,
            repeat="feature",
            repeatDirection="h",
            maxPerRow=2,
        ),
        against_baseline(
            "Category mix",
            "Share of each category over the last hour (solid) against the baseline (dashed grey).",
            "feature, category",
            "model_version_feature_category:mlmon_feature_category:ratio_increase1h",
            "model_feature_category:mlmon_feature_baseline_category_ratio:max",
            "{{feature}}={{category}}",
        ),
    ]


def drift_over_time() -> list[Json]:
    return [
        row("Drift over time"),
        drift_with_trends(
            "KS distance",
            "Fleet KS distance of each numeric feature over the last hour. "
            "Red dashed: the floor (drift_ks_min); grey dotted: 3-day and 7-day averages.",
            "model_version_feature:mlmon_feature_drift_ks:increase1h",
            "drift_ks_min",
        ),
        drift_with_trends(
            "PSI",
            "Fleet PSI of each categorical feature over the last hour. Red dashed: "
            "the floor (drift_psi_min); grey dotted: 3-day and 7-day averages.",
            "model_version_feature:mlmon_feature_drift_psi:increase1h",
            "drift_psi_min",
        ),
        timeseries(
            "Exporter drift scores",
            "Each replica's own windowed statistics, by method "
            "(psi, js, ks, wasserstein, chi2): the exporter's view, per replica.",
            "none",
            [
                target(
                    agg(
                        "max",
                        "mlmon_feature_drift_score",
                        SELF + ', method=~"psi|js|ks|wasserstein"',
                        "feature, method",
                    ),
                    "{{feature}} {{method}}",
                )
            ],
            w=12,
        ),
        timeseries(
            "Corrected p-values",
            "p-value of each feature's test after multiple-testing "
            "correction, per replica; below the red line (alpha) and with enough effect a "
            "feature counts as drifted.",
            "none",
            [
                target(
                    agg("min", "mlmon_feature_drift_adjusted_p_value", SELF, "feature"),
                    "{{feature}}",
                ),
                target('max(mlmon_threshold_drift_alpha{job=~"$job", model="$model"})', "alpha"),
            ],
            threshold_legend="alpha",
            w=12,
            log_scale=True,
        ),
    ]


def data_quality() -> list[Json]:
    out_of_range = "model_version_feature:mlmon_feature_out_of_range:ratio_rate15m"
    return [
        row("Data quality"),
        against_baseline(
            "Missing values",
            "Share of inferences where the feature is missing (15m), "
            "against the baseline's share (dashed grey); the red line is the baseline's "
            "share plus missing_ratio_increase_max, above which the feature's alert fires.",
            "feature",
            "model_version_feature:mlmon_feature_missing:ratio_rate15m",
            "model_feature:mlmon_feature_baseline_missing_ratio:max",
            "{{feature}}",
            w=8,
            limit="missing_ratio_increase_max",
        ),
        timeseries(
            "Out of range",
            "Share of values outside the baseline's [min, max] (15m); the red line is the limit.",
            "percentunit",
            [
                target(agg("max", out_of_range, SELF, "feature"), "{{feature}}"),
                target(th("out_of_range_ratio_max"), "limit"),
            ],
            threshold_legend="limit",
            w=8,
        ),
        against_baseline(
            "Unseen categories",
            "Share of values outside the baseline vocabulary (15m), "
            "against the baseline's __other__ share (dashed grey); the red line is the "
            "baseline's share plus unseen_category_ratio_increase_max, above which the "
            "feature's alert fires.",
            "feature",
            "model_version_feature:mlmon_feature_other_category:ratio_rate15m",
            "model_feature:mlmon_feature_baseline_other_category_ratio:max",
            "{{feature}}",
            w=8,
            limit="unseen_category_ratio_increase_max",
        ),
    ]


def build(p: Params) -> Json:
    return dashboard(
        p.dashboards["feature-drift"].uid,
        "mlmon / Feature drift",
        "Per feature: live against baseline, drift over time, data quality.",
        [*distribution(), *drift_over_time(), *data_quality()],
        variables(p, feature=True),
    )
