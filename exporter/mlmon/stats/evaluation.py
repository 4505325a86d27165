"""Windowed performance of a model version, its fairness by group, and champion/challenger
comparison, from the count vectors of `state`. Pure: arrays in, reports out."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mlmon.core.baseline import OTHER
from mlmon.core.schema import ModelSchema
from mlmon.core.state import Layout
from mlmon.stats import divergences as stats
from mlmon.stats import performance as perf

NAN = float("nan")


@dataclass
class FairnessReport:
    attribute: str
    groups: list[str]
    predictions: np.ndarray
    metrics: perf.GroupFairness


@dataclass
class PerformanceReport:
    labelled: int
    reported: bool  # at least min_labels labelled predictions in the window
    accuracy: float = NAN
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)  # class -> metric
    roc_auc: float = NAN
    calibration_error: float = NAN
    brier: float = NAN
    regression: perf.RegressionMetrics | None = None
    estimates: perf.Estimates | None = None
    fairness: list[FairnessReport] = field(default_factory=list)


CLASS_METRICS = (
    "precision",
    "recall",
    "f1",
    "false_negative_rate",
    "false_positive_rate",
    "specificity",
)
MACRO = "__macro__"


def evaluate(
    schema: ModelSchema,
    layout: Layout,
    window: np.ndarray,
    fwindow: np.ndarray,
    groups: list[list[str]],
) -> PerformanceReport:
    v = Layout.view
    cfg = schema.config
    labelled = int(window[layout.labelled.start])
    rep = PerformanceReport(labelled=labelled, reported=labelled >= cfg.performance.min_labels)
    rep.estimates = _estimates(schema, layout, window, fwindow)
    if schema.prediction_classes is not None:
        rep.fairness = _fairness(schema, layout, window, groups)
    if not rep.reported:
        return rep
    if schema.prediction_classes is not None:
        ncls = len(schema.classes)
        conf = v(window, layout.conf)[:ncls, :ncls]  # predictions/labels outside the classes
        m = perf.classification(conf)  # count in `labelled` but in no class's metrics
        rep.accuracy = window[layout.correct.start] / labelled
        shown = [schema.positive_index] if schema.task == "binary" else range(ncls)
        for k in shown:
            rep.per_class[schema.classes[k]] = {
                name: float(getattr(m, name)[k]) for name in CLASS_METRICS
            }
        if schema.task == "multiclass":
            rep.per_class[MACRO] = {name: m.macro(getattr(m, name)) for name in CLASS_METRICS}
        if schema.score is not None:
            sl = v(window, layout.score_label)
            if sl.sum() > 0:
                if schema.task == "binary":
                    rep.roc_auc = perf.roc_auc(sl[:, 1], sl[:, 0])
                coarse_n = schema.score.coarse_counts(sl.sum(axis=1)[None, :])[0]
                coarse_pos = schema.score.coarse_counts(sl[:, 1][None, :])[0]
                rep.calibration_error = perf.expected_calibration_error(
                    v(fwindow, layout.score_label_sum), coarse_n, coarse_pos
                )
                rep.brier = fwindow[layout.brier_sum.start] / sl.sum()
    else:
        r = v(fwindow, layout.reg)
        rep.regression = perf.regression(labelled, *r)
    return rep


def _estimates(
    schema: ModelSchema, layout: Layout, window: np.ndarray, fwindow: np.ndarray
) -> perf.Estimates | None:
    if schema.prediction_classes is None or schema.score is None:
        return None
    n = Layout.view(window, layout.est_n)
    p = Layout.view(fwindow, layout.est_p)
    if n.sum() < schema.config.performance.min_labels:
        return None
    if schema.task == "binary":
        return perf.binary_estimates(p[1], n[1], p[0], n[0])
    acc = p[0] / n[0]
    return perf.Estimates(accuracy=acc, precision=NAN, recall=NAN, f1=NAN)


def _fairness(
    schema: ModelSchema, layout: Layout, window: np.ndarray, groups: list[list[str]]
) -> list[FairnessReport]:
    if schema.task != "binary":
        return []
    cfg = schema.config
    pos = schema.positive_index
    gp = Layout.view(window, layout.group_pred)  # [A, G, P]
    gc = Layout.view(window, layout.group_conf)  # [A, G, P, L]
    out = []
    for a, attr in enumerate(cfg.sensitive_attributes):
        names = groups[a]
        k = len(names)
        if k == 0:
            continue
        preds = gp[a, :k].sum(axis=-1)
        predicted_pos = gp[a, :k, pos]
        conf = gc[a, :k]
        actual_pos = conf[:, :, pos].sum(axis=-1)
        actual_neg = conf[:, :, : len(schema.classes)].sum(axis=(1, 2)) - actual_pos
        tp = conf[:, pos, pos]
        fp = conf[:, pos, : len(schema.classes)].sum(axis=-1) - tp
        ref_name = cfg.fairness.reference_groups.get(attr)
        ref = names.index(ref_name) if ref_name in names else None
        m = perf.fairness(
            predicted_pos, preds, tp, actual_pos, fp, actual_neg, cfg.fairness.min_samples, ref
        )
        out.append(FairnessReport(attr, names, preds, m))
    return out


@dataclass
class Comparison:
    champion: str
    challenger: str
    accuracy_difference: float  # challenger - champion
    p_value: float
    prediction_drift: dict[str, float]  # method -> value
    latency_ratio: float  # challenger's mean latency / champion's


def compare_versions(
    schema: ModelSchema, layout: Layout, windows: dict[str, tuple[np.ndarray, np.ndarray]]
) -> list[Comparison]:
    """The champion against every other version. The champion is the configured version,
    else the first version seen that has traffic in the window: ``windows`` come in the
    order their versions were first seen, so the roles do not flip with traffic share (a
    50% canary stays the challenger) and change only when the champion stops serving."""
    versions = {k: w for k, w in windows.items() if k != OTHER}
    if len(versions) < 2:
        return []
    champion = schema.config.performance.champion
    if champion not in versions:
        serving = (k for k, (w, _) in versions.items() if w[layout.events.start] > 0)
        champion = next(serving, next(iter(versions)))
    cw, cf = versions[champion]
    min_labels = schema.config.performance.min_labels
    out = []
    for name, (w, f) in sorted(versions.items()):
        if name == champion:
            continue
        diff = p = NAN
        if schema.prediction_classes is not None:
            n1, n2 = w[layout.labelled.start], cw[layout.labelled.start]
            if n1 >= min_labels and n2 >= min_labels:
                k1, k2 = w[layout.correct.start], cw[layout.correct.start]
                diff = k1 / n1 - k2 / n2
                _, p = perf.two_proportion_z_test(k1, n1, k2, n2)
        drift: dict[str, float] = {}
        need = schema.config.drift.min_samples
        if schema.score is not None:
            ref, live = Layout.view(cw, layout.score_bins), Layout.view(w, layout.score_bins)
            if ref.sum() >= need and live.sum() >= need:
                drift["ks"] = float(stats.ks(ref, live)[0][0])
        ref, live = Layout.view(cw, layout.pred_bins), Layout.view(w, layout.pred_bins)
        if ref.sum() >= need and live.sum() >= need:
            if schema.prediction_classes is not None:
                drift["js"] = float(stats.jensen_shannon(ref, live)[0])
            else:
                drift["ks"] = float(stats.ks(ref, live)[0][0])
        lat_ratio = NAN
        n1, n2 = w[layout.latency_observed.start], cw[layout.latency_observed.start]
        if n1 > 0 and n2 > 0:
            m1 = f[layout.latency_sum.start] / n1
            m2 = cf[layout.latency_sum.start] / n2
            lat_ratio = m1 / m2 if m2 > 0 else NAN
        out.append(Comparison(champion, name, diff, p, drift, lat_ratio))
    return out
