"""Champion vs challenger: a model's versions side by side (traffic, accuracy, significance,
drift, latency)."""

from __future__ import annotations

from bundle.dashboards.board import MODEL, dashboard, variables
from bundle.dashboards.panels import Json, row, target, timeseries
from bundle.dashboards.queries import agg, th
from bundle.params import Params

REQUESTS = "model_version:mlmon_inference_requests:rate5m"
PAIR = "{{version}} vs {{champion}}"  # legend: a challenger and its champion


def against_champion(
    title: str, description: str, unit: str, fn: str, metric: str, by: str = "version, champion"
) -> Json:
    """One line per challenger of an exporter series that compares it with the champion."""
    legend = PAIR + (" {{method}}" if "method" in by else "")
    return timeseries(title, description, unit, [target(agg(fn, metric, MODEL, by), legend)], w=12)


def traffic_and_accuracy() -> list[Json]:
    return [
        row("Traffic and accuracy"),
        timeseries(
            "Traffic share",
            "Share of the model's inferences each version serves.",
            "percentunit",
            [
                target(
                    f"{agg('sum', REQUESTS, MODEL, 'version')}"
                    f" / scalar({agg('sum', REQUESTS, MODEL)})",
                    "{{version}}",
                )
            ],
            w=8,
        ),
        timeseries(
            "Accuracy by version",
            "Accuracy of each version's labelled predictions over "
            "the last day (fleet); red dashed: accuracy_min.",
            "percentunit",
            [
                target(
                    agg("min", "model_version:mlmon_accuracy:ratio_increase1d", MODEL, "version"),
                    "{{version}}",
                ),
                target(th("accuracy_min"), "minimum"),
            ],
            threshold_legend="minimum",
            w=8,
        ),
        timeseries(
            "p99 latency by version",
            "99th-percentile latency of each version.",
            "s",
            [
                target(
                    agg(
                        "max",
                        "model_version:mlmon_inference_latency_seconds:p99_rate5m",
                        MODEL,
                        "version",
                    ),
                    "{{version}}",
                )
            ],
            w=8,
        ),
    ]


def challengers() -> list[Json]:
    return [
        row("Challengers against the champion"),
        against_champion(
            "Accuracy difference",
            "Each challenger's windowed accuracy minus the champion's (negative: worse).",
            "percentunit",
            "min",
            "mlmon_version_accuracy_difference",
        ),
        timeseries(
            "Significance",
            "Two-proportion z-test p-value of the accuracy difference; "
            "below the red dashed line the difference counts as real.",
            "none",
            [
                target(
                    agg("min", "mlmon_version_accuracy_p_value", MODEL, "version, champion"), PAIR
                ),
                target(th("challenger_p_value_max"), "significance level"),
            ],
            threshold_legend="significance level",
            w=12,
            log_scale=True,
        ),
        against_champion(
            "Prediction drift between versions",
            "KS (scores) and Jensen-Shannon "
            "(classes) of each challenger's predictions against the champion's.",
            "none",
            "max",
            "mlmon_version_prediction_drift",
            by="version, champion, method",
        ),
        against_champion(
            "Latency ratio",
            "A challenger's mean latency divided by the champion's (1: as fast).",
            "none",
            "max",
            "mlmon_version_latency_ratio",
        ),
    ]


def build(p: Params) -> Json:
    return dashboard(
        p.dashboards["versions"].uid,
        "mlmon / Champion vs challenger",
        "Model versions side by side: traffic, accuracy, significance, drift, latency.",
        [*traffic_and_accuracy(), *challengers()],
        variables(p),
    )
