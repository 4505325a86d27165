"""Model overview: one model's service, inputs and predictions."""

from __future__ import annotations

from bundle.dashboards.board import MODEL, dashboard, variables
from bundle.dashboards.panels import Json, by_regex, row, stat, target, timeseries
from bundle.dashboards.queries import agg, rate, th, trends
from bundle.params import Params

REQUESTS = "model_version:mlmon_inference_requests:rate5m"
ERRORS = "model_version:mlmon_inference_error_ratio:ratio_rate5m"
LATENCY = "model_version:mlmon_inference_latency_seconds:{}_rate5m"
DRIFTED = "model_version_feature:mlmon_feature_drifted:increase1h"


def by_feature(title: str, description: str, unit: str, rule: str, limit: str = "") -> Json:
    """One line per feature of a per-feature rule, with the red line of threshold ``limit``."""
    targets = [target(agg("max", rule, by="feature"), "{{feature}}")]
    if limit:
        targets.append(target(th(limit), "limit"))
    return timeseries(title, description, unit, targets, threshold_legend=limit and "limit", w=12)


def headline(p: Params) -> list[Json]:
    d = p.defaults
    return [
        row("Service"),
        stat(
            "Traffic",
            "Inferences per second, all selected versions.",
            "reqps",
            [target(agg("sum", REQUESTS), "now")],
            limit=None,
        ),
        stat(
            "Error ratio",
            "Share of failed inferences over 5 minutes; red above the error "
            "budget (error_ratio_max).",
            "percentunit",
            [target(agg("max", ERRORS), "now")],
            limit=d["error_ratio_max"],
        ),
        stat(
            "p99 latency",
            "99th-percentile inference latency reported by the model server; "
            "red above latency_p99_seconds_max.",
            "s",
            [target(agg("max", LATENCY.format("p99")), "p99")],
            limit=d["latency_p99_seconds_max"],
        ),
        stat(
            "Drifted features",
            "Features whose fleet-wide drift over the last hour is at least its floor.",
            "short",
            [target(agg("sum", DRIFTED), "drifted")],
            limit=1,  # any drifted feature
        ),
    ]


def service() -> list[Json]:
    return [
        timeseries(
            "Throughput",
            "Inferences per second by version, with the 3-day and 7-day averages for comparison.",
            "reqps",
            [target(agg("sum", REQUESTS, by="version"), "{{version}}"), *trends("sum", REQUESTS)],
            trends=True,
            w=8,
        ),
        timeseries(
            "Error ratio",
            "Failed share of inferences by version (5m). The red dashed "
            "line is the error budget; grey dotted lines are the 3-day and 7-day averages.",
            "percentunit",
            [
                target(agg("max", ERRORS, by="version"), "{{version}}"),
                target(th("error_ratio_max"), "budget"),
                *trends("max", ERRORS),
            ],
            threshold_legend="budget",
            trends=True,
            w=8,
        ),
        timeseries(
            "Latency",
            "p50, p90 and p99 inference latency; the red dashed line is the p99 limit.",
            "s",
            [
                *(target(agg("max", LATENCY.format(q)), q) for q in ("p50", "p90", "p99")),
                target(th("latency_p99_seconds_max"), "p99 limit"),
                *trends("max", LATENCY.format("p99")),
            ],
            threshold_legend="p99 limit",
            trends=True,
            w=8,
        ),
        timeseries(
            "Failures by reason",
            "Failed inferences per second by the reason the model server gave.",
            "reqps",
            [
                target(
                    agg("sum", "model_version_reason:mlmon_inference_failures:rate5m", by="reason"),
                    "{{reason}}",
                )
            ],
            w=12,
        ),
        timeseries(
            "Ingest",
            "Events accepted and refused by this model's exporters.",
            "reqps",
            [
                target(f"sum({rate('mlmon_ingest_events_total', MODEL)})", "accepted"),
                target(f"sum({rate('mlmon_ingest_rejected_events_total', MODEL)})", "refused"),
            ],
            w=12,
        ),
    ]


def inputs(p: Params) -> list[Json]:
    drifted = "model_version:mlmon_drifted_features:ratio_increase1h"
    ks = "model_version_feature:mlmon_feature_drift_ks:increase1h"
    drill_down = (
        p.dashboard_path("feature-drift") + "?var-model=$model&"
        "var-feature=${__field.labels.feature}&${__url_time_range}"
    )
    return [
        row("Inputs"),
        timeseries(
            "Drifted share of features",
            "Share of tested features that drifted over the "
            "last hour, all replicas together. Above the red line the whole dataset counts "
            "as drifted.",
            "percentunit",
            [
                target(agg("max", drifted, by="version"), "{{version}}"),
                target(th("drifted_features_ratio_max"), "limit"),
                *trends("max", drifted),
            ],
            threshold_legend="limit",
            trends=True,
            w=12,
        ),
        timeseries(
            "Feature drift (KS)",
            "Fleet KS distance per numeric feature over the last "
            "hour; the red line is the floor above which a feature counts as drifted. "
            "Click a series for the feature's drill-down.",
            "none",
            [
                target(agg("max", ks, by="feature"), "{{feature}}"),
                target(th("drift_ks_min"), "floor"),
            ],
            threshold_legend="floor",
            w=12,
            overrides=[
                by_regex(
                    "^(?!floor$).*",
                    [{"id": "links", "value": [{"title": "Feature drift", "url": drill_down}]}],
                )
            ],
        ),
        timeseries(
            "Categorical drift (PSI)",
            "Fleet PSI per categorical feature over the last hour; the red line is the floor.",
            "none",
            [
                target(
                    agg(
                        "max",
                        "model_version_feature:mlmon_feature_drift_psi:increase1h",
                        by="feature",
                    ),
                    "{{feature}}",
                ),
                target(th("drift_psi_min"), "floor"),
            ],
            threshold_legend="floor",
            w=12,
        ),
        *data_quality(),
    ]


def data_quality() -> list[Json]:
    return [
        by_feature(
            "Missing values",
            "Share of inferences where each feature is missing (15m).",
            "percentunit",
            "model_version_feature:mlmon_feature_missing:ratio_rate15m",
        ),
        by_feature(
            "Out of range",
            "Share of each numeric feature's values outside the "
            "baseline's [min, max] (15m); the red line is the limit.",
            "percentunit",
            "model_version_feature:mlmon_feature_out_of_range:ratio_rate15m",
            limit="out_of_range_ratio_max",
        ),
        by_feature(
            "Unseen categories",
            "Share of each categorical feature's values outside the baseline vocabulary (15m).",
            "percentunit",
            "model_version_feature:mlmon_feature_other_category:ratio_rate15m",
        ),
    ]


def predictions() -> list[Json]:
    drift = "model_version_output:mlmon_prediction_drift_{}:increase1h"
    return [
        row("Predictions"),
        timeseries(
            "Prediction drift",
            "KS of the score (classifiers) or value (regression) "
            "distribution and PSI of the class mix over the last hour, against the "
            "baseline; the red line is the KS floor.",
            "none",
            [
                target(agg("max", drift.format("ks"), by="output"), "{{output}} KS"),
                target(agg("max", drift.format("psi"), by="output"), "{{output}} PSI"),
                target(th("drift_ks_min"), "floor"),
                *trends("max", drift.format("ks")),
            ],
            threshold_legend="floor",
            trends=True,
            w=12,
        ),
        timeseries(
            "Predicted classes",
            "Share of each predicted class over the last hour "
            "(solid) against the baseline's share (dashed grey).",
            "percentunit",
            [
                target(
                    agg(
                        "max",
                        "model_version_class:mlmon_prediction_class:ratio_increase1h",
                        by="class",
                    ),
                    "{{class}}",
                ),
                target(
                    agg("max", "mlmon_prediction_baseline_class_ratio", MODEL, "class"),
                    "baseline {{class}}",
                ),
            ],
            w=12,
            baseline=True,
        ),
        timeseries(
            "Score distribution",
            "Cumulative share of scores at or below each bucket "
            "edge over the last hour (solid) and in the baseline (dashed grey); a gap "
            "between the two is score drift.",
            "percentunit",
            [
                target(
                    agg(
                        "max",
                        "model_version_le:mlmon_prediction_score_cdf:ratio_increase1h",
                        by="le",
                    ),
                    "≤ {{le}}",
                ),
                target(
                    agg(
                        "max",
                        "model_le:mlmon_prediction_baseline_score_cdf:ratio",
                        'model="$model"',
                        "le",
                    ),
                    "baseline ≤ {{le}}",
                ),
            ],
            w=24,
            baseline=True,
        ),
    ]


def build(p: Params) -> Json:
    panels = [*headline(p), *service(), *inputs(p), *predictions()]
    return dashboard(
        p.dashboards["model"].uid,
        "mlmon / Model overview",
        "One model: service, inputs and predictions.",
        panels,
        variables(p),
    )
