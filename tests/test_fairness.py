"""Significance of fairness gaps: each group's selection rate and true-positive rate against
the reference group's, tested with scipy's chi-squared test of the 2x2 table."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats as st
from mlmon.stats import performance as perf


def _chi2_p(k1: float, n1: float, k2: float, n2: float) -> float:
    table = np.array([[k1, n1 - k1], [k2, n2 - k2]])
    return st.chi2_contingency(table, correction=False).pvalue


def test_vectorised_p_values_equal_the_chi_squared_test():
    rng = np.random.default_rng(3)
    n1 = rng.integers(50, 5_000, size=12).astype(float)
    k1 = np.floor(n1 * rng.uniform(0.05, 0.6, size=12))
    k2, n2 = 410.0, 2_300.0
    got = perf.z_test_p_values(k1, n1, k2, n2)
    want = [_chi2_p(a, b, k2, n2) for a, b in zip(k1, n1, strict=True)]
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    scalar = [perf.two_proportion_z_test(a, b, k2, n2)[1] for a, b in zip(k1, n1, strict=True)]
    assert got == pytest.approx(scalar, rel=1e-9, abs=1e-12)


def test_empty_and_degenerate_groups():
    got = perf.z_test_p_values(np.array([0.0, 0.0, 5.0]), np.array([0.0, 10.0, 10.0]), 0.0, 10.0)
    assert np.isnan(got[0]) and got[1] == 1.0 and got[2] < 0.05
    assert np.isnan(perf.z_test_p_values(np.array([1.0]), np.array([2.0]), 0.0, 0.0)).all()


def test_a_small_group_with_a_low_ratio_by_chance_is_not_significant():
    """Equal treatment, small groups, a rare positive: the ratio falls below four-fifths
    by chance, and the p-value says so."""
    # group 0: 12 positives of 100; group 1 (reference, most favoured): 17 of 100
    g = perf.fairness(
        predicted_pos=np.array([12.0, 17.0]),
        predictions=np.array([100.0, 100.0]),
        tp=np.array([8.0, 9.0]),
        actual_pos=np.array([30.0, 28.0]),
        fp=np.array([4.0, 8.0]),
        actual_neg=np.array([70.0, 72.0]),
        min_samples=50,
    )
    assert g.reference == 1
    assert g.disparate_impact[0] < 0.8
    assert g.selection_rate_p_value[0] == pytest.approx(_chi2_p(12, 100, 17, 100))
    assert g.selection_rate_p_value[0] > 0.05 and g.selection_rate_p_value[1] == 1.0
    assert g.true_positive_rate_p_value[0] == pytest.approx(_chi2_p(8, 30, 9, 28))


def test_a_real_gap_is_significant_and_groups_below_the_floor_have_none():
    g = perf.fairness(
        predicted_pos=np.array([300.0, 540.0, 3.0]),
        predictions=np.array([1_000.0, 1_000.0, 10.0]),
        tp=np.array([200.0, 300.0, 1.0]),
        actual_pos=np.array([400.0, 410.0, 4.0]),
        fp=np.array([100.0, 240.0, 2.0]),
        actual_neg=np.array([600.0, 590.0, 6.0]),
        min_samples=100,
    )
    assert g.reference == 1
    assert g.selection_rate_p_value[0] == pytest.approx(_chi2_p(300, 1000, 540, 1000))
    assert g.selection_rate_p_value[0] < 1e-6
    assert np.isnan(g.selection_rate_p_value[2]) and np.isnan(g.true_positive_rate_p_value[2])
