"""The conditions of a model's alerts, decided on one window of a `ModelMonitor` (what
`mlmon check` reports): per feature (drift, missing values, values outside the baseline),
per version (dataset, prediction, multivariate, embedding and attribution drift;
performance; fairness by group) and between versions (champion and challenger). Each is a
`Check`: the window's value, the limit the alert compares it with, and whether it holds.

A feature drifts as the exporter decides it (`stats.drift`): its corrected p-value is below
``drift_alpha`` and its effect (KS or PSI) reaches its floor. The rest compare the window's
value with the threshold the alert compares it with."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlmon.core.monitor import ModelMonitor, VersionView
from mlmon.core.state import Layout
from mlmon.stats.evaluation import MACRO

# Checks of one feature: shown in the feature table rather than the metric table.
PER_FEATURE = ("feature_drift", "missing_ratio_increase", "out_of_range_ratio", "unseen_category")


@dataclass(frozen=True)
class Check:
    """One quantity of one version compared with its limit. ``value`` None: not tested
    (too few values in the file); ``fails_if`` empty: shown for information only."""

    version: str
    metric: str
    subject: str
    value: float | None
    fails_if: str = ""
    holds: bool = False
    alert: str = ""  # the alert whose condition this is
    detail: str = ""  # the numbers compared, when it holds

    @property
    def status(self) -> str:
        if self.holds:
            return "FAIL"
        if self.value is None:
            return "not tested"
        return "ok" if self.fails_if else "info"


# ---------------------------------------------------------------- per feature


def feature_rows(
    mm: ModelMonitor, views: list[VersionView], stats: dict[str, Any]
) -> list[dict[str, Any]]:
    """Per version and feature: the drift test (as `/stats` reports it), its effect size
    (``score``: KS or PSI, what the floor is compared with), missing and outside ratios."""
    rows = []
    for view in views:
        version = view.snapshot.version
        quality = data_quality(mm, view)
        for i, (name, f) in enumerate(stats["versions"][version]["features"].items()):
            rows.append(
                {
                    "version": version,
                    "feature": name,
                    **{k: f[k] for k in ("kind", "present", "test", "p_value")},
                    "p_value_adjusted": f["p_value_adjusted"],
                    "score": _num(view.report.effect[i]) if view.report.reported[i] else None,
                    "drifted": f["drifted"],
                    "missing_ratio": f["missing_ratio"],
                    "outside_ratio": quality[name]["outside"],
                    "scores": f["scores"],
                }
            )
    return rows


def data_quality(mm: ModelMonitor, view: VersionView) -> dict[str, dict[str, Any]]:
    """Per feature: missing ratio (over the profiled events) and its baseline's; the share
    of present values outside the baseline (numeric: out of [min, max]; categorical: out of
    the vocabulary) and its baseline's; whether each has min_samples to stand on."""
    s, lay, w, v = mm.schema, mm.layout, view.snapshot.window, Layout.view
    num, cat = s.numeric, s.categorical
    ok = int(w[lay.ok_events.start])
    rows = max(s.baseline_rows, 1)
    present = np.concatenate([v(w, lay.num_bins).sum(axis=-1), v(w, lay.cat_bins).sum(axis=-1)])
    missing = np.concatenate([v(w, lay.num_missing), v(w, lay.cat_missing)])
    base_missing = np.concatenate([num.ref_missing, cat.ref_missing]) / rows
    outside = list(v(w, lay.num_below) + v(w, lay.num_above))
    base_outside = [0.0] * len(num)
    cat_live = v(w, lay.cat_bins)
    for j, cats in enumerate(cat.categories):
        other = len(cats) - 1
        outside.append(cat_live[j, other])
        base_outside.append(cat.ref_counts[j, other] / max(cat.ref_counts[j].sum(), 1))
    need = s.config.drift.min_samples
    return {
        name: {
            "missing": _ratio(missing[i], ok) if ok >= need else None,
            "base_missing": float(base_missing[i]),
            "outside": _ratio(outside[i], present[i]) if present[i] >= need else None,
            "base_outside": float(base_outside[i]),
        }
        for i, name in enumerate(num.names + cat.names)
    }


def feature_checks(mm: ModelMonitor, view: VersionView) -> list[Check]:
    r, th, version = view.report, mm.thresholds, view.snapshot.version
    alpha, correction = th["drift_alpha"], mm.schema.config.drift.correction
    quality = data_quality(mm, view)
    out = []
    for i, name in enumerate(r.features):
        numeric = r.kinds[i] == "numeric"
        floor = th["drift_ks_min"] if numeric else th["drift_psi_min"]
        effect = _num(r.effect[i]) if r.reported[i] else None
        out.append(
            Check(
                version,
                "feature_drift",
                name,
                effect,
                f">= {floor:g} and p < {alpha:g}",
                bool(r.drifted[i]),
                "MLModelFeatureDrift",
                f"{'KS' if numeric else 'PSI'} {_g(effect)} >= {floor:g} and p "
                f"{_g(r.p_adjusted[i])} ({correction}) < {alpha:g}",
            )
        )
        out.append(_surge(version, name, quality[name], numeric, th))
        if quality[name]["missing"] is not None:
            out.append(_missing(version, name, quality[name], th))
    return [c for c in out if c is not None]


def _missing(version: str, name: str, q: dict[str, Any], th: dict[str, float]) -> Check:
    limit = th["missing_ratio_increase_max"]
    rise = q["missing"] - q["base_missing"]
    return Check(
        version,
        "missing_ratio_increase",
        name,
        rise,
        f"> {limit:g}",
        rise > limit,
        "MLModelMissingValueSurge",
        f"missing {_g(q['missing'])}, baseline {_g(q['base_missing'])}: +{_g(rise)} > {limit:g}",
    )


def _surge(
    version: str, name: str, q: dict[str, Any], numeric: bool, th: dict[str, float]
) -> Check | None:
    if q["outside"] is None:
        return None
    if numeric:
        limit = th["out_of_range_ratio_max"]
        value = q["outside"]
        detail = f"{_g(value)} of the values outside the baseline's [min, max] > {limit:g}"
        metric, alert = "out_of_range_ratio", "MLModelOutOfRangeSurge"
    else:
        limit = th["unseen_category_ratio_increase_max"]
        value = q["outside"] - q["base_outside"]
        detail = (
            f"unseen categories {_g(q['outside'])}, baseline {_g(q['base_outside'])}: "
            f"+{_g(value)} > {limit:g}"
        )
        metric, alert = "unseen_category", "MLModelUnseenCategorySurge"
    return Check(version, metric, name, value, f"> {limit:g}", value > limit, alert, detail)


# ---------------------------------------------------------------- per version


def drift_checks(mm: ModelMonitor, view: VersionView) -> list[Check]:
    """Dataset drift, prediction drift, multivariate, embedding and attribution drift."""
    r, th, version = view.report, mm.thresholds, view.snapshot.version
    limit = th["drifted_features_ratio_max"]
    ratio = r.drifted_count / r.tested_count if r.tested_count else None
    out = [
        Check(
            version,
            "drifted_features_ratio",
            f"{r.drifted_count}/{r.tested_count}",
            ratio,
            f"> {limit:g}",
            ratio is not None and ratio > limit,
            "MLModelDatasetDrift",
            f"{r.drifted_count} of {r.tested_count} tested features drifted: "
            f"{_g(ratio)} > {limit:g}",
        )
    ]
    for o in r.outputs:
        method, floor = (
            ("psi", th["drift_psi_min"]) if o.output == "class" else ("ks", th["drift_ks_min"])
        )
        effect = None if math.isnan(o.p_value) else _num(o.scores[method])
        out.append(
            Check(
                version,
                "prediction_drift",
                o.output,
                effect,
                f">= {floor:g} and p < {th['drift_alpha']:g}",
                o.drifted,
                "MLModelPredictionDrift",
                f"{method.upper()} {_g(effect)} >= {floor:g} and p {_g(o.p_value)} "
                f"< {th['drift_alpha']:g}",
            )
        )
    if view.joint is not None:
        out.append(_joint(version, "multivariate_drift", "inputs", view.joint))
    for name, report in view.embeddings:
        out.append(_joint(version, "embedding_drift", name, report))
    if mm.schema.attribution_baseline is not None:
        a, low = view.attribution, th["attribution_ndcg_min"]
        ndcg = _num(a.ndcg) if a.reported else None
        detail = f"NDCG {_g(ndcg)} < {low:g}"
        out.append(
            Check(
                version,
                "attribution_ndcg",
                "",
                ndcg,
                f"< {low:g}",
                a.drifted,
                "MLModelAttributionDrift",
                detail,
            )
        )
    return out


def _joint(version: str, metric: str, subject: str, r: Any) -> Check:
    alert = (
        "MLModelMultivariateDrift" if metric == "multivariate_drift" else "MLModelEmbeddingDrift"
    )
    limit = _num(r.threshold) if math.isfinite(r.threshold) else None
    return Check(
        version,
        metric,
        subject,
        _num(r.score) if r.reported else None,
        f"> {_g(limit)}" if limit is not None else "",
        r.drifted,
        alert,
        f"mean reconstruction error {_g(r.score)} > {_g(limit)} over {r.events} events",
    )


# What fails a classifier: (metric, how its value compares with the threshold, threshold,
# alert). The false-negative rate is the positive class's, so binary models only.
CLASSIFIER_LIMITS = (
    ("accuracy", "<", "accuracy_min", "MLModelAccuracyLow"),
    ("f1", "<", "f1_min", "MLModelF1Low"),
    ("false_negative_rate", ">", "false_negative_rate_max", "MLModelFalseNegativeRateHigh"),
    ("calibration_error", ">", "calibration_error_max", "MLModelCalibrationError"),
)


def performance_checks(mm: ModelMonitor, view: VersionView) -> list[Check]:
    """Accuracy, F1 (the positive class's, or macro for multiclass), false-negative rate
    and calibration (classifiers) or MAE and RMSE against the baseline's (regression),
    against their limits; AUC, Brier, R² as information. None of them before
    performance.min_labels labelled predictions."""
    s, p, th, version = mm.schema, view.performance, mm.thresholds, view.snapshot.version
    if s.prediction_classes is None:
        return _regression(mm, view)
    per = p.per_class.get((s.positive_class if s.task == "binary" else MACRO) or "", {})
    values = {
        "accuracy": p.accuracy,
        "f1": per.get("f1", math.nan),
        "false_negative_rate": per.get("false_negative_rate", math.nan),
        "calibration_error": p.calibration_error,
        "roc_auc": p.roc_auc,
        "brier": p.brier,
    }
    got = {k: _num(x) if p.reported else None for k, x in values.items()}
    out = [
        _limit(version, metric, got[metric], op, th[name], alert)
        for metric, op, name, alert in CLASSIFIER_LIMITS
        if metric != "false_negative_rate" or s.task == "binary"
    ]
    return out + [Check(version, k, "", got[k]) for k in ("roc_auc", "brier")]


def _regression(mm: ModelMonitor, view: VersionView) -> list[Check]:
    p, th, version = view.performance, mm.thresholds, view.snapshot.version
    reg = p.regression if p.reported else None
    ref = mm.schema.profile.get("regression_error") or {}
    limit = th["regression_error_ratio_max"]
    out = []
    for metric in ("mae", "rmse"):
        value = _num(getattr(reg, metric)) if reg is not None else None
        out.append(Check(version, metric, "", value))
        if ref.get(metric):
            ratio = value / ref[metric] if value is not None else None
            out.append(
                _limit(version, f"{metric}_ratio", ratio, ">", limit, "MLModelRegressionErrorHigh")
            )
    out.append(Check(version, "r2", "", _num(reg.r2) if reg is not None else None))
    return out


def _limit(
    version: str, metric: str, value: float | None, op: str, limit: float, alert: str
) -> Check:
    holds = value is not None and (value < limit if op == "<" else value > limit)
    detail = f"{metric} {_g(value)} {op} {limit:g}"
    return Check(version, metric, "", value, f"{op} {limit:g}", holds, alert, detail)


def estimate_checks(view: VersionView) -> list[Check]:
    """The label-free estimates from the scores (information)."""
    est = view.performance.estimates
    if est is None:
        return []
    version = view.snapshot.version
    return [
        Check(version, f"estimated_{k}", "", _num(getattr(est, k)))
        for k in ("accuracy", "precision", "recall", "f1")
        if not math.isnan(getattr(est, k))
    ]


# What fails a sensitive group against the reference group: (metric, the p-value that
# must also be significant, how the value compares with the threshold, threshold, alert).
FAIRNESS_LIMITS = (
    ("disparate_impact", "selection_rate", "<", "disparate_impact_min", "MLModelDisparateImpact"),
    (
        "demographic_parity_difference",
        "selection_rate",
        "|>|",
        "demographic_parity_difference_max",
        "MLModelDemographicParityDifference",
    ),
    (
        "equal_opportunity_difference",
        "true_positive_rate",
        "|>|",
        "equal_opportunity_difference_max",
        "MLModelEqualOpportunityDifference",
    ),
)


def fairness_checks(mm: ModelMonitor, view: VersionView) -> list[Check]:
    """Per sensitive group against the reference group: disparate impact, demographic parity
    and equal opportunity differences, each when its gap is past its limit and significant."""
    th, version = mm.thresholds, view.snapshot.version
    out = []
    for fr in view.performance.fairness:
        m = fr.metrics
        for i, group in enumerate(fr.groups):
            if m.reference < 0 or i == m.reference:
                continue
            for metric, test, op, name, alert in FAIRNESS_LIMITS:
                p = float(getattr(m, f"{test}_p_value")[i])
                limits = (op, th[name], th["fairness_p_value_max"])
                value = _num(getattr(m, metric)[i])
                out.append(
                    _fair(version, f"{fr.attribute}={group}", metric, value, p, limits, alert)
                )
    return out


def _fair(
    version: str,
    subject: str,
    metric: str,
    value: float | None,
    p: float,
    limits: tuple[str, float, float],
    alert: str,
) -> Check:
    op, limit, pmax = limits
    past = value is not None and (value < limit if op == "<" else abs(value) > limit)
    shown = f"< {limit:g}" if op == "<" else f"|x| > {limit:g}"
    return Check(
        version,
        metric,
        subject,
        value,
        f"{shown} and p < {pmax:g}",
        bool(past and p < pmax),
        alert,
        f"{metric} {_g(value)} ({shown}) with p {_g(p)} < {pmax:g}",
    )


def comparison_checks(mm: ModelMonitor, views: list[VersionView]) -> list[Check]:
    """A challenger version significantly less accurate than the champion."""
    pmax = mm.thresholds["challenger_p_value_max"]
    out = []
    for c in mm.comparisons(views):
        diff = _num(c.accuracy_difference)
        holds = diff is not None and diff < 0 and c.p_value < pmax
        out.append(
            Check(
                c.challenger,
                "accuracy_difference",
                f"champion={c.champion}",
                diff,
                f"< 0 and p < {pmax:g}",
                bool(holds),
                "MLModelChallengerWorse",
                f"accuracy {_g(diff)} against {c.champion} with p {_g(c.p_value)} < {pmax:g}",
            )
        )
    return out


def _num(x: Any) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def _ratio(a: float, b: float) -> float | None:
    return float(a) / float(b) if b else None


def _g(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{float(x):.4g}"
