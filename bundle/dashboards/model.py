"""Model overview: one model's service, inputs and predictions."""

from __future__ import annotations

from bundle.dashboards.board import MODEL, dashboard, variables
from bundle.dashboards.panels import Json, by_regex, row, stat, table, target, timeseries
from bundle.dashboards.queries import SEL, agg, rate, th, trends
from bundle.params import Params

REQUESTS = "model_version:mlmon_inference_requests:rate5m"
ERRORS = "model_version:mlmon_inference_error_ratio:ratio_rate5m"
LATENCY = "model_version:mlmon_inference_latency_seconds:{}_rate5m"
DRIFTED = "model_version_feature:mlmon_feature_drifted:increase1h"
FINITE = 'le!="+Inf"'  # the last bucket holds everything, live and baseline alike


def by_feature(title: str, description: str, unit: str, rule: str, limit: str) -> Json:
    """One line per feature of a per-feature rule, with the red line of threshold ``limit``."""
    targets = [target(agg("max", rule, by="feature"), "{{feature}}"), target(th(limit), "limit")]
    return timeseries(title, description, unit, targets, threshold_legend="limit", w=8)


def headline() -> list[Json]:
    return [
        row("Service"),
        stat(
            "Traffic",
            "Inferences per second, all selected versions; red at or below the model's "
            "request_rate_min (0 by default: a full stop).",
            "reqps",
            [target(agg("sum", REQUESTS), "now")],
            # MLModelNoTraffic fires at or below the minimum; a tile step is "from", so
            # green starts just above it
            limit=th("request_rate_min") + " + 1e-9",
            direction="below",
        ),
        stat(
            "Error ratio",
            "Share of failed inferences over 5 minutes; red above the model's error "
            "budget (error_ratio_max).",
            "percentunit",
            [target(agg("max", ERRORS), "now")],
            limit=th("error_ratio_max"),
        ),
        stat(
            "p99 latency",
            "99th-percentile inference latency reported by the model server; "
            "red above the model's latency_p99_seconds_max.",
            "s",
            [target(agg("max", LATENCY.format("p99")), "p99")],
            limit=th("latency_p99_seconds_max"),
        ),
        stat(
            "Drifted features",
            "Features whose fleet-wide drift over the last hour, in any selected version, "
            "is at least its floor (each counted once).",
            "short",
            [
                target(
                    f"count(max by (feature) ({DRIFTED}{{{SEL}}}) > 0) or on () vector(0)",
                    "drifted",
                )
            ],
            limit=1,  # any drifted feature: MLModelFeatureDrift fires for each
        ),
        table(
            "Firing alerts",
            "The alerts that fire for this model now, with their labels; each "
            "notification links its runbook.",
            "short",
            [target(f'ALERTS{{alertstate="firing", {MODEL}}}', "", instant=True, fmt="table")],
            [],
            [{"id": "organize", "options": {"excludeByName": {"Time": True, "__name__": True}}}],
            h=5,
        ),
    ]


def service() -> list[Json]:
    return [
        timeseries(
            "Throughput",
            "Inferences per second by version, each with its 3-day and 7-day averages; the "
            "red dashed line is the model's request_rate_min.",
            "reqps",
            [
                target(agg("sum", REQUESTS, by="version"), "{{version}}"),
                target(th("request_rate_min"), "minimum"),
                *trends("sum", REQUESTS, by="version", legend="{{version}}"),
            ],
            threshold_legend="minimum",
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
                *trends("max", ERRORS, by="version", legend="{{version}}"),
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


def drill_down(p: Params, floor: str) -> list[Json]:
    """A click on a feature's series opens that feature's drift dashboard."""
    url = (
        p.dashboard_path("feature-drift") + "?var-model=$model&var-version=$version&"
        "var-feature=${__field.labels.feature}&${__url_time_range}"
    )
    return [
        by_regex(
            f"^(?!{floor}$).*", [{"id": "links", "value": [{"title": "Feature drift", "url": url}]}]
        )
    ]


def feature_drift(p: Params, title: str, test: str, kind: str, floor: str) -> Json:
    rule = f"model_version_feature:mlmon_feature_drift_{test}:increase1h"
    return timeseries(
        title,
        f"Fleet {test.upper()} per {kind} feature over the last hour; the red line is the "
        "floor from which a feature counts as drifted. Click a series for the feature's "
        "drill-down.",
        "none",
        [target(agg("max", rule, by="feature"), "{{feature}}"), target(th(floor), "floor")],
        threshold_legend="floor",
        w=12,
        overrides=drill_down(p, "floor"),
    )


def inputs(p: Params) -> list[Json]:
    drifted = "model_version:mlmon_drifted_features:ratio_increase1h"
    return [
        row("Inputs"),
        timeseries(
            "Drifted share of features",
            "Share of tested features that drifted over the "
            "last hour, all replicas together, by version with its 3-day and 7-day averages. "
            "Above the red line the whole dataset counts as drifted.",
            "percentunit",
            [
                target(agg("max", drifted, by="version"), "{{version}}"),
                target(th("drifted_features_ratio_max"), "limit"),
                *trends("max", drifted, by="version", legend="{{version}}"),
            ],
            threshold_legend="limit",
            trends=True,
            w=12,
        ),
        feature_drift(p, "Feature drift (KS)", "ks", "numeric", "drift_ks_min"),
        feature_drift(p, "Categorical drift (PSI)", "psi", "categorical", "drift_psi_min"),
        *data_quality(),
    ]


def above_baseline(title: str, description: str, rule: str, baseline: str, limit: str) -> Json:
    """How far each feature's share rises above its baseline share, the quantity the
    alert compares with ``limit`` (the red line)."""
    live = agg("max", rule, by="feature")
    base = agg("max", baseline, 'model="$model"', "feature")
    return timeseries(
        title,
        description,
        "percentunit",
        [target(f"{live} - on (feature) {base}", "{{feature}}"), target(th(limit), "limit")],
        threshold_legend="limit",
        w=8,
    )


def data_quality() -> list[Json]:
    return [
        above_baseline(
            "Missing values above baseline",
            "How much more often each feature is missing than in the baseline (15m); the "
            "red line is missing_ratio_increase_max.",
            "model_version_feature:mlmon_feature_missing:ratio_rate15m",
            "model_feature:mlmon_feature_baseline_missing_ratio:max",
            "missing_ratio_increase_max",
        ),
        by_feature(
            "Out of range",
            "Share of each numeric feature's values outside the "
            "baseline's [min, max] (15m); the red line is the limit.",
            "percentunit",
            "model_version_feature:mlmon_feature_out_of_range:ratio_rate15m",
            limit="out_of_range_ratio_max",
        ),
        above_baseline(
            "Unseen categories above baseline",
            "How much larger the share of each categorical feature's values outside the "
            "baseline vocabulary is than the baseline's (15m); the red line is "
            "unseen_category_ratio_increase_max.",
            "model_version_feature:mlmon_feature_other_category:ratio_rate15m",
            "model_feature:mlmon_feature_baseline_other_category_ratio:max",
            "unseen_category_ratio_increase_max",
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
            "baseline, with the KS 3-day and 7-day averages; the red lines are the KS and PSI "
            "floors.",
            "none",
            [
                target(agg("max", drift.format("ks"), by="output"), "{{output}} KS"),
                target(agg("max", drift.format("psi"), by="output"), "{{output}} PSI"),
                target(th("drift_ks_min"), "KS floor"),
                target(th("drift_psi_min"), "PSI floor"),
                *trends("max", drift.format("ks"), by="output", legend="{{output}} KS"),
            ],
            threshold_legend=("KS floor", "PSI floor"),
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
            "between the two is score drift. One line per edge (the last, +Inf, is always "
            "100% and left out).",
            "percentunit",
            [
                target(
                    agg(
                        "max",
                        "model_version_le:mlmon_prediction_score_cdf:ratio_increase1h",
                        f"{SEL}, {FINITE}",
                        "le",
                    ),
                    "≤ {{le}}",
                ),
                target(
                    agg(
                        "max",
                        "model_le:mlmon_prediction_baseline_score_cdf:ratio",
                        f'model="$model", {FINITE}',
                        "le",
                    ),
                    "baseline ≤ {{le}}",
                ),
            ],
            w=24,
            baseline=True,
        ),
    ]


def joint_drift() -> list[Json]:
    """Multivariate and embedding drift and feature attributions: what per-feature drift
    cannot show."""
    score = "mlmon_multivariate_drift_score"
    return [
        row("Joint drift and explanations"),
        timeseries(
            "Multivariate drift",
            "Each version's mean reconstruction error over the window, by the baseline's "
            "principal components: it rises when the features stop moving together as in "
            "the baseline, even when each feature alone looks the same. The red line is the "
            "threshold for the window's size (the highest across the selected versions and "
            "replicas).",
            "none",
            [
                target(agg("max", score, by="version"), "{{version}}"),
                target(agg("max", "mlmon_multivariate_drift_threshold"), "threshold"),
            ],
            threshold_legend="threshold",
            w=6,
        ),
        timeseries(
            "Embedding drift",
            "For each embedding feature (text or image vectors), each version's mean distance "
            "of its vectors to the baseline's principal components: it rises when vectors "
            "unlike the baseline's arrive, which its components' own histograms cannot show. "
            "The red lines are each embedding's threshold for the window's size.",
            "none",
            [
                target(
                    agg("max", "mlmon_embedding_drift_score", by="feature, version"),
                    "{{feature}} {{version}}",
                ),
                target(
                    agg("max", "mlmon_embedding_drift_threshold", by="feature"),
                    "threshold {{feature}}",
                ),
            ],
            threshold_legend="^threshold .*",
            w=6,
        ),
        timeseries(
            "Attribution drift (NDCG)",
            "How well each version's ranking of features by attribution (mean |SHAP|) over "
            "the window agrees with the baseline's: 1 is the same ranking. Below the red line "
            "the features that drive the predictions have changed.",
            "none",
            [
                target(
                    agg(
                        "min",
                        "mlmon_attribution_drift_score",
                        f'{SEL}, method="ndcg"',
                        "version",
                    ),
                    "{{version}}",
                ),
                target(th("attribution_ndcg_min"), "minimum"),
            ],
            threshold_legend="minimum",
            w=6,
        ),
        timeseries(
            "Attribution shift",
            "Each feature's global attribution over the window minus the baseline's, in the "
            "model output's units (the largest across the selected versions): which features "
            "the model leans on more, or less.",
            "none",
            [target(agg("max", "mlmon_feature_attribution_shift", by="feature"), "{{feature}}")],
            w=6,
        ),
    ]


MODEL_SEL = 'job=~"$job", model="$model"'
# (title, the signal's recorded name without its last part, that part, unit, what it is)
BANDS = (
    ("Traffic", "model:mlmon_inference_requests", "rate1h", "reqps", "inferences per second"),
    ("Error ratio", "model:mlmon_inference_error_ratio", "ratio_rate1h", "percentunit",
     "the share of failed inferences"),
    ("p99 latency", "model:mlmon_inference_latency_seconds", "p99_rate1h", "s",
     "the 99th percentile of latency"),
    ("Mean prediction", "model_output:mlmon_prediction", "mean1h", "none",
     "the mean score (classifiers) or value (regression)"),
    ("Label arrival", "model:mlmon_labels", "rate1h", "reqps", "labels received per second"),
)  # fmt: skip


def seasonal_bands() -> list[Json]:
    """Each signal over the last hour, all versions together, against its seasonal
    prediction (the median of the same hour over the past weeks) and band."""
    panels = [row("Seasonal bands (the same hour, past weeks)")]
    for title, name, op, unit, what in BANDS:

        def rule(kind: str, name: str = name, op: str = op) -> str:
            return f"{name}:{kind}{op}" if kind else f"{name}:{op}"

        panels.append(
            timeseries(
                f"{title} against its band",
                f"{what[0].upper()}{what[1:]} over the last hour (all versions), the usual "
                "value for this hour of the week (the median of the past 4 weeks; it needs 3 "
                "of them) and the band the anomaly alerts compare it with (red lines).",
                unit,
                [
                    target(agg("max", rule(""), MODEL_SEL), "last hour"),
                    target(agg("max", rule("seasonal_"), MODEL_SEL), "usual"),
                    target(agg("max", rule("upper_"), MODEL_SEL), "band upper"),
                    target(agg("max", rule("lower_"), MODEL_SEL), "band lower"),
                ],
                threshold_legend=("band upper", "band lower"),
                w=8 if title != "Label arrival" else 16,
            )
        )
    return panels


def build(p: Params) -> Json:
    panels = [
        *headline(), *service(), *inputs(p), *predictions(), *joint_drift(), *seasonal_bands()
    ]  # fmt: skip
    return dashboard(
        p.dashboards["model"].uid,
        "mlmon / Model overview",
        "One model: service, inputs and predictions.",
        panels,
        variables(p),
    )
