"""Feature-attribution drift: does the live window rank features by importance as the
baseline did?

A feature's *global attribution* is its mean absolute attribution (SHAP value) over the
events that carry one. Drift is scored as SageMaker Clarify's model-explainability monitor
scores it, with NDCG, where the features are ranked by their live global attributions and
each feature's gain (relevance) is its *baseline* global attribution:

    DCG  = sum_{i=1..m} a(f'_i) / log2(i + 1)    f'_i: the i-th feature by live attribution
    iDCG = sum_{i=1..m} a(f_i)  / log2(i + 1)    f_i:  the i-th feature by baseline attribution
    NDCG = DCG / iDCG                            a(f): f's baseline attribution

over all m features (no cut-off), base-2 logarithms. 1 means the live ranking is the
baseline's; Clarify raises a violation when NDCG < 0.90. Weighting by the baseline
attribution makes a fall of an important feature cost more than the same fall of a minor one.
Sources:
https://docs.aws.amazon.com/sagemaker/latest/dg/clarify-model-monitor-feature-attribution-drift.html
(the formula, the 0.90 alert) and
https://docs.aws.amazon.com/sagemaker/latest/dg/clarify-model-monitor-model-attribution-drift-violations.html
(the nDCG, linked to scikit-learn's ``ndcg_score``, of the baseline's and the current global
SHAP values); a global SHAP value is the mean of absolute SHAP values over all instances
(``agg_method="mean_abs"``, the SageMaker SDK's default), per
https://docs.aws.amazon.com/sagemaker/latest/dg/clarify-model-monitor-shap-baseline.html

The documented formula leaves ties open; here features with equal live attributions share
the mean discount of the ranks they occupy (McSherry & Najork 2008), as ``ndcg_score`` does
by default, so the score does not depend on the order in which features are numbered.
Pure numpy: no I/O, no HTTP, no Prometheus.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def global_attributions(count: np.ndarray, abs_sum: np.ndarray) -> np.ndarray:
    """Each feature's mean absolute attribution, from the number of events that carried an
    attribution for it and the sum of their absolute values (elementwise, any shape).
    NaN where the count is 0: no data is not an attribution of 0."""
    count = np.asarray(count, dtype=np.float64)
    abs_sum = np.asarray(abs_sum, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = abs_sum / count
    return np.where(count > 0, mean, np.nan)


def _rank_discounts(size: int, k: int | None) -> np.ndarray:
    """1 / log2(rank + 1) for ranks 1..size, zero past rank k (DCG@k)."""
    discounts = 1.0 / np.log2(np.arange(2, size + 2, dtype=np.float64))
    if k is not None:
        discounts[k:] = 0.0
    return discounts


def _tie_averaged(scores: np.ndarray, discounts: np.ndarray) -> np.ndarray:
    """Each item's discount when items are ranked by descending score; items with equal
    scores share the mean discount of the ranks their group occupies, the expectation over
    every order of the tie, so the result cannot depend on how the items are numbered."""
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    group = np.cumsum(np.r_[True, ranked[1:] != ranked[:-1]]) - 1
    group_mean = np.bincount(group, weights=discounts) / np.bincount(group)
    shared = np.empty_like(discounts)
    shared[order] = group_mean[group]
    return shared


def dcg(relevance: np.ndarray, scores: np.ndarray, k: int | None = None) -> float:
    """Discounted cumulative gain of ``relevance`` in the order of descending ``scores``,
    base-2 discount, ties averaged, the top ``k`` ranks only (all when None)."""
    discounts = _tie_averaged(scores, _rank_discounts(scores.size, k))
    return float(np.dot(relevance, discounts))


def _usable(baseline: np.ndarray, live: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The features with a finite global attribution on both sides. A feature that no event
    of the window (or of the baseline) carried is left out of the comparison rather than
    ranked as if its attribution were 0."""
    baseline = np.asarray(baseline, dtype=np.float64)
    live = np.asarray(live, dtype=np.float64)
    if baseline.ndim != 1 or baseline.shape != live.shape:
        raise ValueError(f"need two vectors of equal length, got {baseline.shape} and {live.shape}")
    if (baseline < 0).any() or (live < 0).any():
        raise ValueError("global attributions are mean absolute values; got a negative one")
    keep = np.isfinite(baseline) & np.isfinite(live)
    return baseline[keep], live[keep]


def ndcg(baseline: np.ndarray, live: np.ndarray, k: int | None = None) -> float:
    """Clarify's attribution-drift score: NDCG of the live ranking of features, each feature's
    baseline global attribution as its gain (see the module docstring). Both vectors hold
    global attributions in the same feature order; ``k`` limits DCG and iDCG to the top k
    ranks (None, as Clarify: every feature; k above the feature count is the same).

    Features without data on either side (NaN) are left out. NaN when nothing is left or the
    baseline attributions are all 0: with no baseline ranking there is nothing to drift from
    (scikit-learn returns 0 there, which would raise an alert). All-zero live attributions
    tie every feature, which scores as a ranking that carries no information: below 1 unless
    the baseline attributions are all equal.
    """
    if k is not None and k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    baseline, live = _usable(baseline, live)
    ideal = dcg(baseline, baseline, k) if baseline.size else 0.0
    if ideal == 0.0:
        return float("nan")
    return dcg(baseline, live, k) / ideal


def shift(baseline: np.ndarray, live: np.ndarray) -> np.ndarray:
    """Each feature's attribution shift, live minus baseline global attribution, in the
    model output's units; NaN where either side has no data. This is the per-feature series
    to export: one model's attributions share a unit, so shifts compare across features and,
    like NDCG, weigh a feature by how much it moves the output."""
    return np.asarray(live, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)


def relative_shift(baseline: np.ndarray, live: np.ndarray) -> np.ndarray:
    """live / baseline - 1 per feature: +inf where an attribution appears from a baseline of
    0, 0 where both are 0, NaN where either side has no data. For reading, not for alerting:
    features the model barely uses have tiny baselines and noisy, huge ratios."""
    baseline = np.asarray(baseline, dtype=np.float64)
    live = np.asarray(live, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = live / baseline - 1.0
    from_zero = np.where(live > 0, np.inf, 0.0)
    out = np.where(baseline > 0, ratio, from_zero)
    return np.where(np.isnan(baseline) | np.isnan(live), np.nan, out)


@dataclass(frozen=True)
class AttributionReport:
    """A version's attributions in the window, against the baseline's."""

    events: np.ndarray  # [F] events in the window that carried each feature's attribution
    live: np.ndarray  # [F] global attribution in the window (NaN: no events)
    shift: np.ndarray  # [F] live minus baseline (NaN where either is missing)
    ndcg: float  # NaN until reported
    reported: bool  # a baseline with attributions, and min_samples events in the window
    drifted: bool  # reported and ndcg below its threshold


def report(
    baseline: np.ndarray | None,
    events: np.ndarray,
    abs_sum: np.ndarray,
    min_samples: int,
    ndcg_min: float,
) -> AttributionReport:
    """The window's report from its per-feature counts and sums of |attribution|. NDCG is
    reported once the best-covered feature has ``min_samples`` attributions in the window
    (a ranking from a handful of events is noise) and the baseline has attributions."""
    live = global_attributions(events, abs_sum)
    base = baseline if baseline is not None else np.full(live.shape, np.nan)
    reported = baseline is not None and events.size > 0 and int(events.max()) >= min_samples
    score = ndcg(base, live) if reported else float("nan")
    reported = reported and score == score  # NaN when no feature is usable on both sides
    return AttributionReport(
        events=events,
        live=live,
        shift=shift(base, live),
        ndcg=score,
        reported=reported,
        drifted=bool(reported and score < ndcg_min),
    )
