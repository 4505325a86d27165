"""Performance: labelled performance, calibration, label-free estimates and label flow."""

from __future__ import annotations

from bundle.dashboards.board import MODEL, dashboard, variables
from bundle.dashboards.panels import Json, row, stat, target, timeseries
from bundle.dashboards.queries import SEL, agg, rate, th, trends
from bundle.params import Params

ACCURACY = "model_version:mlmon_accuracy:ratio_increase1d"
DAY = "model_version:mlmon_{}:ratio_increase1d"  # fleet metrics over the last day
CALIBRATION = "mlmon_expected_calibration_error"
V = "{{version}}"  # legend: the version


def headline() -> list[Json]:
    return [
        row("Headline"),
        stat(
            "Accuracy (1d)",
            "Share of the last day's labelled predictions that were right, all "
            "replicas; red below accuracy_min.",
            "percentunit",
            [target(agg("min", ACCURACY), "accuracy")],
            limit=th("accuracy_min"),
            direction="below",
        ),
        stat(
            "F1 (1d)",
            "F1 of the positive class over the last day; red below f1_min.",
            "percentunit",
            [target(agg("min", DAY.format("f1")), "F1")],
            limit=th("f1_min"),
            direction="below",
        ),
        stat(
            "ROC AUC",
            "Each replica's windowed area under the ROC curve (worst replica).",
            "percentunit",
            [target(agg("min", "mlmon_roc_auc"), "AUC")],
            limit=0.5,  # no better than chance
            direction="below",
        ),
        stat(
            "Calibration error",
            "Windowed expected calibration error (worst replica); red above calibration_error_max.",
            "percentunit",
            [target(agg("max", CALIBRATION), "ECE")],
            limit=th("calibration_error_max"),
        ),
    ]


def regression_error() -> Json:
    return timeseries(
        "Regression error vs baseline",
        "A regression model's MAE and RMSE over the last day's labelled predictions "
        "(fleet) divided by the baseline data's; above the red dashed line "
        "(regression_error_ratio_max) its alert fires. Empty for classifiers.",
        "none",
        [
            target(
                agg(
                    "max",
                    "model_version_metric:mlmon_regression_error_ratio:ratio_increase1d",
                    by="version, metric",
                ),
                "{{version}} {{metric}}",
            ),
            target(th("regression_error_ratio_max"), "maximum"),
        ],
        threshold_legend="maximum",
        w=12,
    )


def over_time() -> list[Json]:
    return [
        row("Over time"),
        timeseries(
            "Accuracy: realised and estimated",
            "Realised accuracy of labelled "
            "predictions (last day, fleet) and each replica's label-free estimate from the "
            "scores. The estimate arrives at once; the realised value when the labels do. "
            "Red dashed: accuracy_min; grey dotted: 3-day and 7-day averages.",
            "percentunit",
            [
                target(agg("min", ACCURACY, by="version"), "{{version}} realised"),
                target(
                    agg("min", "mlmon_estimated_accuracy", by="version"), "{{version}} estimated"
                ),
                target(th("accuracy_min"), "minimum"),
                *trends("min", ACCURACY, by="version", legend="{{version}} realised"),
            ],
            threshold_legend="minimum",
            trends=True,
            w=12,
        ),
        timeseries(
            "Precision, recall, F1, FNR",
            "Positive-class metrics over the last day's "
            "labelled predictions (fleet). Red dashed: the F1 minimum (f1_min) and the "
            "false-negative-rate maximum (false_negative_rate_max).",
            "percentunit",
            [
                target(agg("min", DAY.format("precision")), "precision"),
                target(agg("min", DAY.format("recall")), "recall"),
                target(agg("min", DAY.format("f1")), "F1"),
                target(agg("max", DAY.format("false_negative_rate")), "FNR"),
                target(th("f1_min"), "F1 minimum"),
                target(th("false_negative_rate_max"), "FNR maximum"),
            ],
            threshold_legend=("F1 minimum", "FNR maximum"),
            w=12,
        ),
        timeseries(
            "Calibration",
            "Windowed expected calibration error and Brier score (worst "
            "replica); red dashed: calibration_error_max.",
            "none",
            [
                target(agg("max", CALIBRATION, by="version"), "{{version}} ECE"),
                target(agg("max", "mlmon_brier_score", by="version"), "{{version}} Brier"),
                target(th("calibration_error_max"), "ECE maximum"),
            ],
            threshold_legend="ECE maximum",
            w=12,
        ),
        regression_error(),
        timeseries(
            "Estimated vs realised (per replica window)",
            "Each replica's windowed "
            "estimates from the scores next to the realised values: a realised value that "
            "falls while its estimate holds is concept drift.",
            "percentunit",
            [
                target(
                    agg("max", "mlmon_estimated_precision", by="version"),
                    V + " precision estimated",
                ),
                target(agg("min", "mlmon_precision", by="version"), V + " precision realised"),
                target(agg("max", "mlmon_estimated_recall", by="version"), V + " recall estimated"),
                target(agg("min", "mlmon_recall", by="version"), V + " recall realised"),
            ],
            w=12,
        ),
    ]


def labels() -> list[Json]:
    delay = rate("mlmon_label_delay_seconds_bucket", SEL)
    return [
        row("Labels"),
        timeseries(
            "Labels by outcome",
            "Labels received per second: matched to a prediction, "
            "unmatched (unknown id), expired, duplicate.",
            "reqps",
            [target(f"sum by (outcome) ({rate('mlmon_labels_total', MODEL)})", "{{outcome}}")],
            w=12,
        ),
        timeseries(
            "Label delay",
            "Time from prediction to label: median and 90th percentile "
            "of the labels joined recently.",
            "s",
            [
                target(f"histogram_quantile({q}, sum by (le) ({delay}))", f"p{round(q * 100)}")
                for q in (0.5, 0.9)
            ],
            w=12,
        ),
    ]


def build(p: Params) -> Json:
    return dashboard(
        p.dashboards["performance"].uid,
        "mlmon / Performance",
        "Labelled performance, calibration, label-free estimates and label flow.",
        [*headline(), *over_time(), *labels()],
        variables(p),
    )
