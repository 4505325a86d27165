"""Attribution drift (Clarify's NDCG over global attributions) against hand arithmetic,
scikit-learn's ndcg_score, and a linear model whose exact SHAP values have closed forms."""

from __future__ import annotations

import math
from math import log2

import numpy as np
import pytest
from mlmon.stats import attribution as attr
from sklearn.metrics import dcg_score, ndcg_score

TOL = 1e-12


def test_ndcg_of_clarify_documentation_example():
    """Clarify's college-admission example: training (SAT, GPA, class rank) = (0.70, 0.50,
    0.05), live = (0.10, 0.20, 0.70); the live order is class rank, GPA, SAT and each feature
    gains its training attribution. The documentation gives 0.69."""
    baseline = np.array([0.70, 0.50, 0.05])
    live = np.array([0.10, 0.20, 0.70])
    dcg = 0.05 / log2(2) + 0.50 / log2(3) + 0.70 / log2(4)
    idcg = 0.70 / log2(2) + 0.50 / log2(3) + 0.05 / log2(4)
    got = attr.ndcg(baseline, live)
    assert got == pytest.approx(dcg / idcg, abs=TOL)
    assert round(got, 2) == 0.69


def test_dcg_uses_base_two_discounts():
    """NDCG cannot tell the log base (it cancels in the ratio); DCG itself can."""
    got = attr.dcg(np.array([3.0, 2.0, 1.0, 0.0]), np.array([0.1, 0.2, 0.3, 0.4]))
    assert got == pytest.approx(0 / log2(2) + 1 / log2(3) + 2 / log2(4) + 3 / log2(5), abs=TOL)


def test_ndcg_top_k_cuts_both_dcg_and_idcg():
    baseline = np.array([4.0, 3.0, 2.0, 1.0])
    live = np.array([1.0, 2.0, 3.0, 4.0])
    dcg2 = 1.0 / log2(2) + 2.0 / log2(3)
    idcg2 = 4.0 / log2(2) + 3.0 / log2(3)
    assert attr.ndcg(baseline, live, k=2) == pytest.approx(dcg2 / idcg2, abs=TOL)


def test_ndcg_k_beyond_feature_count_is_all_features():
    baseline = np.array([4.0, 3.0, 2.0, 1.0])
    live = np.array([2.0, 4.0, 1.0, 3.0])
    full = attr.ndcg(baseline, live)
    assert full < 1.0
    assert attr.ndcg(baseline, live, k=4) == pytest.approx(full, abs=TOL)
    assert attr.ndcg(baseline, live, k=50) == pytest.approx(full, abs=TOL)
    with pytest.raises(ValueError):
        attr.ndcg(baseline, live, k=0)


def test_ndcg_ties_share_the_mean_discount_of_their_ranks():
    """Features 0 and 1 tie in the live window at ranks 1 and 2; each gets the mean of the
    two discounts, whichever order the features are numbered in."""
    baseline = np.array([3.0, 2.0, 1.0])
    live = np.array([5.0, 5.0, 1.0])
    dcg = (3.0 + 2.0) * (1 / log2(2) + 1 / log2(3)) / 2 + 1.0 / log2(4)
    idcg = 3.0 / log2(2) + 2.0 / log2(3) + 1.0 / log2(4)
    assert attr.ndcg(baseline, live) == pytest.approx(dcg / idcg, abs=TOL)
    for perm in ([1, 0, 2], [2, 1, 0], [2, 0, 1]):
        assert attr.ndcg(baseline[perm], live[perm]) == pytest.approx(dcg / idcg, abs=TOL)


def test_ndcg_tie_across_the_cut_averages_in_the_zero_discounts():
    """All three tie at ranks 1..3 with k = 1: discounts (1, 0, 0), each feature gets 1/3."""
    baseline = np.array([3.0, 2.0, 1.0])
    got = attr.ndcg(baseline, np.array([5.0, 5.0, 5.0]), k=1)
    assert got == pytest.approx(((3.0 + 2.0 + 1.0) / 3) / 3.0, abs=TOL)


@pytest.mark.parametrize("seed", range(200))
def test_ndcg_matches_sklearn(seed):
    """y_true = baseline attributions (the gains), y_score = live attributions (the order);
    scikit-learn's default tie handling averages as ours does. Some seeds round the live
    values to force ties, some zero a few baseline features, k varies past the feature count."""
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 30))
    baseline = rng.gamma(0.8, 1.0, size=m)
    if seed % 3 == 0:
        baseline[rng.random(m) < 0.2] = 0.0
    live = baseline * rng.lognormal(0.0, 0.8, size=m)
    if seed % 2 == 0:
        live = np.round(live, 1)
    k = None if seed % 4 == 0 else int(rng.integers(1, m + 3))
    if baseline.sum() == 0:
        baseline[0] = 1.0
    expected = ndcg_score(baseline[None, :], live[None, :], k=k)
    assert attr.ndcg(baseline, live, k=k) == pytest.approx(expected, abs=TOL)
    assert attr.dcg(baseline, live, k=k) == pytest.approx(
        dcg_score(baseline[None, :], live[None, :], k=k), abs=TOL
    )


def test_identical_ranking_scores_one():
    baseline = np.array([0.9, 0.4, 0.35, 0.1, 0.02])
    assert attr.ndcg(baseline, baseline) == pytest.approx(1.0, abs=TOL)
    assert attr.ndcg(baseline, 3.0 * baseline**2) == pytest.approx(1.0, abs=TOL)


def test_reversed_ranking_of_skewed_baseline_is_drift():
    baseline = np.array([8.0, 4.0, 2.0, 1.0, 0.5])
    assert attr.ndcg(baseline, baseline[::-1].copy()) < 0.9


def test_features_without_data_are_left_out_not_zeroed():
    """Feature 3 (the most important) has no attributions in the window: the score is that of
    the other three, not of feature 3 ranked last."""
    baseline = np.array([3.0, 2.0, 1.0, 4.0])
    live = np.array([1.0, 2.0, 3.0, np.nan])
    dcg = 1.0 / log2(2) + 2.0 / log2(3) + 3.0 / log2(4)
    idcg = 3.0 / log2(2) + 2.0 / log2(3) + 1.0 / log2(4)
    assert attr.ndcg(baseline, live) == pytest.approx(dcg / idcg, abs=TOL)
    assert attr.ndcg(baseline, np.nan_to_num(live)) < dcg / idcg - 0.02


def test_features_without_baseline_data_are_left_out():
    baseline = np.array([np.nan, 2.0, 1.0, 3.0])
    live = np.array([5.0, 1.0, 2.0, 3.0])
    dcg = 3.0 / log2(2) + 1.0 / log2(3) + 2.0 / log2(4)
    idcg = 3.0 / log2(2) + 2.0 / log2(3) + 1.0 / log2(4)
    assert attr.ndcg(baseline, live) == pytest.approx(dcg / idcg, abs=TOL)
    assert math.isnan(attr.ndcg(np.array([1.0, np.nan]), np.array([np.nan, 1.0])))


def test_all_zero_baseline_has_no_score():
    """Nothing to drift from; scikit-learn scores this 0, which would page someone."""
    baseline = np.zeros(3)
    live = np.array([0.3, 0.2, 0.1])
    assert math.isnan(attr.ndcg(baseline, live))
    assert math.isnan(attr.ndcg(baseline, baseline))
    assert ndcg_score(baseline[None, :], live[None, :]) == 0.0


def test_all_zero_live_is_an_uninformative_ranking():
    """Every feature ties at ranks 1..3 and gains the mean of the three discounts."""
    baseline = np.array([3.0, 2.0, 1.0])
    mean_discount = (1 / log2(2) + 1 / log2(3) + 1 / log2(4)) / 3
    idcg = 3.0 / log2(2) + 2.0 / log2(3) + 1.0 / log2(4)
    got = attr.ndcg(baseline, np.zeros(3))
    assert got == pytest.approx((3.0 + 2.0 + 1.0) * mean_discount / idcg, abs=TOL)
    assert got < 1.0
    assert attr.ndcg(np.ones(3), np.zeros(3)) == pytest.approx(1.0, abs=TOL)


def test_ndcg_rejects_what_cannot_be_a_global_attribution():
    assert attr.ndcg(np.array([0.4]), np.array([0.1])) == pytest.approx(1.0, abs=TOL)
    with pytest.raises(ValueError):
        attr.ndcg(np.array([0.4, -0.1]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError):
        attr.ndcg(np.array([0.4, 0.1]), np.array([0.1, 0.2, 0.3]))


def test_global_attributions_is_mean_absolute_value_nan_without_data():
    count = np.array([[3, 0, 1], [1, 0, 0]])  # two time slices
    abs_sum = np.array([[1.5, 0.0, 2.0], [0.5, 0.0, 0.0]])
    got = attr.global_attributions(count.sum(axis=0), abs_sum.sum(axis=0))
    np.testing.assert_allclose(got, [0.5, np.nan, 2.0])


def test_shift_absolute_and_relative():
    baseline = np.array([2.0, 2.0, 0.0, 0.0, np.nan])
    live = np.array([3.0, 1.0, 0.5, 0.0, 1.0])
    np.testing.assert_allclose(attr.shift(baseline, live), [1.0, -1.0, 0.5, 0.0, np.nan])
    np.testing.assert_allclose(
        attr.relative_shift(baseline, live), [0.5, -0.5, np.inf, 0.0, np.nan]
    )


# A linear model f(x) = sum_j c_j x_j with independent features: the exact SHAP value of
# feature j against the baseline data as background is c_j (x_j - mu_j), mu_j the baseline
# mean. For x_j ~ N(mu_j, sigma_j), E|phi_j| = |c_j| sigma_j sqrt(2 / pi).
COEF = np.array([1.0, -0.25, 0.6, 0.05, -0.1, 0.005])
SIGMA = np.array([1.0, 2.0, 0.5, 4.0, 1.0, 10.0])
MU = np.array([0.0, 5.0, -3.0, 100.0, 1.0, 20.0])
# |c| sigma = 1.0, 0.5, 0.3, 0.2, 0.1, 0.05: feature 2 is important but third.
SHIFTED, SHIFT_SIGMAS = 2, 4.0


def _exporter_window(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Counts and sums of |attribution| per feature as the exporter keeps them: per time
    slice, over the events that carry an attribution for the feature (10% do not), then
    summed over the window's slices."""
    phi = COEF * (x - MU)
    carried = rng.random(phi.shape) > 0.1
    slices = np.array_split(np.arange(len(phi)), 6)
    count = np.array([carried[s].sum(axis=0) for s in slices])
    abs_sum = np.array([np.where(carried[s], np.abs(phi[s]), 0.0).sum(axis=0) for s in slices])
    return count.sum(axis=0), abs_sum.sum(axis=0)


def _folded_normal_mean(delta: float, sigma: float) -> float:
    """E|X - mu| for X ~ N(mu + delta, sigma)."""
    phi_tail = 0.5 * math.erfc(delta / sigma / math.sqrt(2.0))
    gauss = sigma * math.sqrt(2.0 / math.pi) * math.exp(-(delta**2) / (2 * sigma**2))
    return gauss + delta * (1.0 - 2.0 * phi_tail)


def test_linear_model_mean_shift_of_an_important_feature_is_attribution_drift():
    rng = np.random.default_rng(11)
    n = 100_000
    count, abs_sum = _exporter_window(rng.normal(MU, SIGMA, size=(n, 6)), rng)
    baseline = attr.global_attributions(count, abs_sum)
    closed = np.abs(COEF) * math.sqrt(2.0 / math.pi) * SIGMA
    se = np.abs(COEF) * SIGMA * math.sqrt(1.0 - 2.0 / math.pi) / np.sqrt(count)
    assert np.all(np.abs(baseline - closed) < 5 * se)

    same = attr.global_attributions(*_exporter_window(rng.normal(MU, SIGMA, size=(n, 6)), rng))
    assert attr.ndcg(baseline, same) == pytest.approx(1.0, abs=TOL)

    delta = SHIFT_SIGMAS * SIGMA[SHIFTED]
    x = rng.normal(MU, SIGMA, size=(n, 6))
    x[:, SHIFTED] += delta
    count, abs_sum = _exporter_window(x, rng)
    live = attr.global_attributions(count, abs_sum)
    mean = abs(COEF[SHIFTED]) * _folded_normal_mean(delta, SIGMA[SHIFTED])
    var = COEF[SHIFTED] ** 2 * (SIGMA[SHIFTED] ** 2 + delta**2) - mean**2
    assert abs(live[SHIFTED] - mean) < 5 * math.sqrt(var / count[SHIFTED])
    assert live[SHIFTED] > 3 * closed[SHIFTED]
    assert np.argmax(live) == SHIFTED
    assert attr.ndcg(baseline, live) < 0.9
    assert attr.shift(baseline, live)[SHIFTED] == pytest.approx(mean - closed[SHIFTED], rel=0.02)
