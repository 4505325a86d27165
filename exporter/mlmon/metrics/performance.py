"""How right a model is, once labels arrive: the label join, labelled predictions and their
delay, confusion counts or regression errors, label-free estimates, and the windowed
accuracy, per-class metrics, calibration and regression errors."""

from __future__ import annotations

import numpy as np

from mlmon.core.baseline import OTHER
from mlmon.core.monitor import ModelMonitor, VersionView
from mlmon.core.state import ABS_ERROR_SCALE, LABEL_DELAY_BUCKETS, Layout
from mlmon.metrics.families import MV, Families
from mlmon.stats.evaluation import CLASS_METRICS, PerformanceReport
from mlmon.stats.performance import RegressionMetrics


def label_join(f: Families, m: ModelMonitor) -> None:
    """The label store of a model: labels by outcome, and the predictions still waiting."""
    store = m.labels
    with store.lock:
        outcomes = dict(store.outcomes)
        entries, evicted, expired = len(store._items), store.evicted, store.expired_unlabelled
    fam = f.counter(
        "mlmon_labels",
        "Labels received, by outcome of the join: matched, "
        "unmatched (no such prediction), expired, duplicate.",
        ["model", "outcome"],
    )
    for outcome, n in outcomes.items():
        fam.add_metric([m.name, outcome], n)
    f.gauge(
        "mlmon_label_store_entries", "Predictions waiting in the label store.", ["model"]
    ).add_metric([m.name], entries)
    f.counter(
        "mlmon_label_store_evicted",
        "Predictions pushed out of the full label store before their label came.",
        ["model"],
    ).add_metric([m.name], evicted)
    f.counter(
        "mlmon_label_store_expired",
        "Predictions whose time-to-live passed before their label came.",
        ["model"],
    ).add_metric([m.name], expired)


def baseline_error(f: Families, m: ModelMonitor) -> None:
    """A regression model's error on its baseline data, the reference of the live error
    (nothing for a profile without one: built without labels, or before the field existed)::

        mlmon_baseline_regression_error{metric="mae",model="demand"} 4.2
        mlmon_baseline_regression_error{metric="rmse",model="demand"} 5.9
    """
    ref = m.schema.profile.get("regression_error")
    if not ref:
        return
    fam = f.gauge(
        "mlmon_baseline_regression_error",
        "A regression model's MAE and RMSE on its baseline data (predictions against labels).",
        ["model", "metric"],
    )
    for metric in ("mae", "rmse"):
        fam.add_metric([m.name, metric], ref[metric])


def labelled(f: Families, m: ModelMonitor, view: VersionView, mv: list[str]) -> None:
    """Counters of the labelled predictions: how many, how late, how right."""
    s, lay, v = m.schema, m.layout, Layout.view
    t, ft, w = view.snapshot.total, view.snapshot.ftotal, view.snapshot.window
    f.counter("mlmon_labelled_predictions", "Predictions joined with their label.", MV).add_metric(
        mv, t[lay.labelled.start]
    )
    delay = v(t, lay.label_delay)
    f.histogram("mlmon_label_delay_seconds", "Time from prediction to label.", MV).add(
        mv,
        LABEL_DELAY_BUCKETS,
        np.cumsum(delay)[:-1],
        delay.sum(),
        ft[lay.label_delay_sum.start],
    )
    f.gauge(
        "mlmon_window_labels", "Labelled predictions inside the sliding window.", MV
    ).add_metric(mv, w[lay.labelled.start])
    if s.prediction_classes is not None:
        f.counter(
            "mlmon_correct_predictions", "Labelled predictions whose class was right.", MV
        ).add_metric(mv, t[lay.correct.start])
        _confusion(f, m, mv, v(t, lay.conf))
    else:
        _regression_errors(f, m, view, mv)


def binary_outcomes(c: np.ndarray, k: int) -> tuple[tuple[str, float], ...]:
    """tp, fp, fn and tn of class ``k`` in a confusion matrix (rows predicted, columns
    actual)."""
    tp = c[k, k]
    return (
        ("tp", tp),
        ("fp", c[k].sum() - tp),
        ("fn", c[:, k].sum() - tp),
        ("tn", c.sum() - c[k].sum() - c[:, k].sum() + tp),
    )


def _confusion(f: Families, m: ModelMonitor, mv: list[str], conf: np.ndarray) -> None:
    s = m.schema
    if s.task == "binary":
        n = len(s.classes)
        fam = f.counter(
            "mlmon_classification_outcomes",
            "Labelled predictions of a binary "
            "model by outcome (tp, fp, fn, tn of the positive class).",
            [*MV, "outcome"],
        )
        for outcome, value in binary_outcomes(conf[:n, :n], s.positive_index):
            fam.add_metric([*mv, outcome], value)
        return
    names = (*s.classes, OTHER)
    fam = f.counter(
        "mlmon_confusion",
        "Labelled predictions by predicted and actual class.",
        [*MV, "predicted", "actual"],
    )
    for i, pred in enumerate(names):
        for j, actual in enumerate(names):
            fam.add_metric([*mv, pred, actual], conf[i, j])


def _regression_errors(f: Families, m: ModelMonitor, view: VersionView, mv: list[str]) -> None:
    lay, v = m.layout, Layout.view
    edges = tuple(x * m.schema.error_scale for x in ABS_ERROR_SCALE)
    ae = v(view.snapshot.total, lay.abs_error)
    reg = v(view.snapshot.ftotal, lay.reg)
    f.histogram(
        "mlmon_regression_absolute_error",
        "Absolute error |prediction - label| of labelled predictions.",
        MV,
    ).add(mv, edges, np.cumsum(ae)[:-1], ae.sum(), reg[1])
    f.counter(
        "mlmon_regression_squared_error",
        "Sum of squared errors of labelled predictions.",
        MV,
    ).add_metric(mv, reg[2])


def estimated(f: Families, m: ModelMonitor, view: VersionView, mv: list[str]) -> None:
    """What the scores alone say about performance, before any label arrives."""
    est = view.performance.estimates
    if est is None:
        return
    for name in ("accuracy", "precision", "recall", "f1"):
        value = getattr(est, name)
        if not np.isnan(value):
            f.gauge(
                f"mlmon_estimated_{name}",
                f"Expected {name} from the scores alone "
                "(label-free, assumes calibrated scores), windowed.",
                MV,
            ).add_metric(mv, value)


def windowed(f: Families, m: ModelMonitor, view: VersionView, mv: list[str]) -> None:
    """Performance over the window, once it holds enough labels."""
    r = view.performance
    if not r.reported:
        return
    if m.schema.prediction_classes is not None:
        _classification(f, r, mv)
    elif r.regression is not None:
        _regression(f, r.regression, mv)


def _classification(f: Families, r: PerformanceReport, mv: list[str]) -> None:
    f.gauge("mlmon_accuracy", "Windowed accuracy of the labelled predictions.", MV).add_metric(
        mv, r.accuracy
    )
    for metric in CLASS_METRICS:
        fam = f.gauge(
            f"mlmon_{metric}",
            f"Windowed {metric.replace('_', ' ')} per class "
            "(binary: the positive class; multiclass: each class and "
            "__macro__).",
            [*MV, "class"],
        )
        for cls, values in r.per_class.items():
            if not np.isnan(values[metric]):
                fam.add_metric([*mv, cls], values[metric])
    for name, value, doc in (
        ("mlmon_roc_auc", r.roc_auc, "Windowed ROC AUC from binned scores."),
        (
            "mlmon_expected_calibration_error",
            r.calibration_error,
            "Windowed expected calibration error (10 score buckets).",
        ),
        ("mlmon_brier_score", r.brier, "Windowed Brier score of the tracked score."),
    ):
        if not np.isnan(value):
            f.gauge(name, doc, MV).add_metric(mv, value)


def _regression(f: Families, reg: RegressionMetrics, mv: list[str]) -> None:
    for name, value in (
        ("mae", reg.mae),
        ("rmse", reg.rmse),
        ("r2", reg.r2),
        ("bias", reg.bias),
    ):
        if not np.isnan(value):
            f.gauge(
                f"mlmon_regression_{name}",
                f"Windowed {name} of labelled predictions (bias: mean of prediction - label).",
                MV,
            ).add_metric(mv, value)
