"""Every drift statistic against an independent reference on the same binned data."""

from __future__ import annotations

import numpy as np
import pytest
from mlmon.stats import divergences as stats
from scipy import special
from scipy import stats as st
from scipy.spatial.distance import jensenshannon

TOL = 1e-9


@pytest.fixture()
def counts() -> tuple[np.ndarray, np.ndarray]:
    """Eight features x 12 bins of skewed counts with some empty bins on each side, and
    two padding bins that are empty on both sides (as for features with fewer bins)."""
    rng = np.random.default_rng(7)
    ref = rng.poisson(rng.gamma(2.0, 40.0, size=(8, 12))).astype(float)
    live = rng.poisson(rng.gamma(2.0, 30.0, size=(8, 12))).astype(float)
    ref[1, 3] = 0
    live[2, 5] = 0
    ref[4, 0] = live[4, 0] = 0
    ref[:, -2:] = live[:, -2:] = 0  # padding
    return ref, live


def test_psi_matches_closed_form(counts):
    ref, live = counts
    got = stats.psi(ref, live)
    for i in range(ref.shape[0]):
        keep = (ref[i] > 0) | (live[i] > 0)
        p = np.maximum(ref[i][keep] / ref[i].sum(), stats.PSI_EPSILON)
        q = np.maximum(live[i][keep] / live[i].sum(), stats.PSI_EPSILON)
        expected = float(np.sum((q - p) * np.log(q / p)))
        assert got[i] == pytest.approx(expected, abs=TOL)
    assert got.min() > 0


def test_psi_of_identical_distributions_is_zero(counts):
    ref, _ = counts
    assert np.allclose(stats.psi(ref, ref * 3), 0.0, atol=TOL)


def test_jensen_shannon_matches_scipy(counts):
    ref, live = counts
    got = stats.jensen_shannon(ref, live)
    for i in range(ref.shape[0]):
        assert got[i] == pytest.approx(jensenshannon(ref[i], live[i], base=2), abs=TOL)


def _expand(counts: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.repeat(points, counts.astype(int))


def test_ks_matches_ks_2samp_on_bin_points(counts):
    """A sample whose values are the bins' points has exactly the binned ECDF."""
    ref, live = counts
    points = np.cumsum(np.random.default_rng(3).uniform(0.5, 2.0, size=ref.shape[1]))
    d, p = stats.ks(ref, live, "kstwo")
    d2, p2 = stats.ks(ref, live)  # the default: Kolmogorov's limiting distribution
    for i in range(ref.shape[0]):
        res = st.ks_2samp(_expand(ref[i], points), _expand(live[i], points), method="asymp")
        assert d[i] == pytest.approx(res.statistic, abs=TOL)
        assert p[i] == pytest.approx(res.pvalue, abs=TOL)
        assert d2[i] == d[i]
        en = ref[i].sum() * live[i].sum() / (ref[i].sum() + live[i].sum())
        assert p2[i] == pytest.approx(special.kolmogorov(np.sqrt(en) * res.statistic), abs=TOL)
        assert p2[i] == pytest.approx(res.pvalue, abs=0.005)
    assert (p < 0.05).any() and (p > 1e-6).any(), "data should exercise a range of p-values"


def test_ks_equal_samples_and_empty_windows():
    ref = np.array([[5.0, 10.0, 5.0], [1.0, 1.0, 1.0]])
    live = np.array([[10.0, 20.0, 10.0], [0.0, 0.0, 0.0]])
    d, p = stats.ks(ref, live)
    assert d[0] == 0.0 and p[0] == pytest.approx(1.0)
    assert np.isnan(d[1]) and np.isnan(p[1])


def test_chi_squared_matches_chi2_contingency(counts):
    ref, live = counts
    stat, p = stats.chi_squared(ref, live)
    for i in range(ref.shape[0]):
        table = np.vstack([ref[i], live[i]])
        table = table[:, table.sum(axis=0) > 0]
        res = st.chi2_contingency(table, correction=False)
        assert stat[i] == pytest.approx(res.statistic, rel=TOL, abs=TOL)
        assert p[i] == pytest.approx(res.pvalue, abs=TOL)


def test_chi_squared_two_categories_has_no_continuity_correction():
    ref = np.array([[300.0, 700.0]])
    live = np.array([[380.0, 620.0]])
    stat, p = stats.chi_squared(ref, live)
    res = st.chi2_contingency(np.vstack([ref, live]), correction=False)
    assert stat[0] == pytest.approx(res.statistic, rel=TOL)
    assert p[0] == pytest.approx(res.pvalue, abs=TOL)


def test_wasserstein_matches_scipy_with_weights(counts):
    ref, live = counts
    rng = np.random.default_rng(5)
    points = np.cumsum(rng.uniform(0.1, 3.0, size=ref.shape))
    points = points.reshape(ref.shape)
    got = stats.wasserstein(ref, live, points)
    for i in range(ref.shape[0]):
        expected = st.wasserstein_distance(points[i], points[i], ref[i], live[i])
        assert got[i] == pytest.approx(expected, abs=TOL)


def test_wasserstein_closed_form_shift():
    """All mass moved by one bin of width 2.5 costs exactly 2.5."""
    ref = np.array([[0.0, 10.0, 0.0, 0.0]])
    live = np.array([[0.0, 0.0, 10.0, 0.0]])
    pts = np.array([[0.0, 1.0, 3.5, 4.0]])
    assert stats.wasserstein(ref, live, pts)[0] == pytest.approx(2.5, abs=TOL)


def test_benjamini_hochberg_matches_scipy():
    rng = np.random.default_rng(11)
    p = np.concatenate([rng.uniform(0, 1, 40), rng.uniform(0, 0.01, 10)])
    got = stats.adjust_p_values(p, "benjamini-hochberg")
    assert np.allclose(got, st.false_discovery_control(p, method="bh"), atol=TOL)


def test_bonferroni_and_nan_handling():
    p = np.array([0.01, np.nan, 0.2, 0.6])
    got = stats.adjust_p_values(p, "bonferroni")
    assert np.isnan(got[1])
    assert got[[0, 2, 3]] == pytest.approx([0.03, 0.6, 1.0])
    bh = stats.adjust_p_values(p, "benjamini-hochberg")
    assert bh[[0, 2, 3]] == pytest.approx(st.false_discovery_control(p[[0, 2, 3]]))
    assert np.array_equal(stats.adjust_p_values(p, "none")[[0, 2, 3]], p[[0, 2, 3]])
