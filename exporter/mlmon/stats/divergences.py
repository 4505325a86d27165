"""Drift statistics over binned counts, vectorised over features.

Every function takes count arrays shaped ``[features, bins]`` (reference and live on the
same bins) and returns one value per feature. Padding bins that are empty on both sides
contribute nothing, so features with different numbers of bins share one array.
Pure numpy/scipy: no I/O, no HTTP, no Prometheus.
"""

from __future__ import annotations

import numpy as np
from scipy import special as _sp
from scipy import stats as _st

# PSI is undefined for an empty bin; floor proportions at this value (a common choice
# that keeps one empty bin from dominating the sum).
PSI_EPSILON = 1e-4


def _proportions(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = counts / n[..., None]
    return p, n


def reference_proportions(ref: np.ndarray) -> np.ndarray:
    """The reference's proportions, for callers that test many windows against it (pass
    as ``ref_p``)."""
    return _proportions(ref)[0]


def psi(
    ref: np.ndarray,
    live: np.ndarray,
    epsilon: float = PSI_EPSILON,
    ref_p: np.ndarray | None = None,
) -> np.ndarray:
    """Population stability index: sum((q - p) * ln(q / p)), proportions floored at epsilon."""
    p = ref_p if ref_p is not None else _proportions(ref)[0]
    q, _ = _proportions(live)
    both_empty = (p == 0) & (q == 0)
    p = np.maximum(p, epsilon)
    q = np.maximum(q, epsilon)
    terms = (q - p) * np.log(q / p)
    return np.where(both_empty, 0.0, terms).sum(axis=-1)


def _xlogy_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(a > 0, a * np.log(a / np.where(b > 0, b, 1.0)), 0.0)


def jensen_shannon(
    ref: np.ndarray, live: np.ndarray, ref_p: np.ndarray | None = None
) -> np.ndarray:
    """Jensen–Shannon distance with base-2 logarithms (0 identical .. 1 disjoint)."""
    p = ref_p if ref_p is not None else _proportions(ref)[0]
    q, _ = _proportions(live)
    m = (p + q) / 2.0
    div = (_xlogy_ratio(p, m).sum(axis=-1) + _xlogy_ratio(q, m).sum(axis=-1)) / 2.0
    return np.sqrt(np.maximum(div / np.log(2.0), 0.0))


KS_P_VALUES = ("kolmogorov", "kstwo")


def ks(
    ref: np.ndarray,
    live: np.ndarray,
    p_value: str = "kolmogorov",
    ref_cdf: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sample Kolmogorov–Smirnov statistic at the bin edges, and its p-value.

    The statistic equals ``scipy.stats.ks_2samp``'s on samples whose values are the bins'
    representative points: both empirical CDFs only step there. The p-value comes from
    Kolmogorov's limiting distribution at sqrt(n1 n2 / (n1 + n2)) D (``"kolmogorov"``: a
    few microseconds for all features), or from scipy's ``kstwo`` as ``ks_2samp(method=
    "asymp")`` computes it (``"kstwo"``: about 2 ms per feature at large n; the two differ
    by less than 0.01 from a few hundred values on, and far less where p is small).
    """
    ref = np.asarray(ref, dtype=np.float64)
    live = np.asarray(live, dtype=np.float64)
    n1 = ref.sum(axis=-1)
    n2 = live.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cdf1 = ref_cdf if ref_cdf is not None else np.cumsum(ref, axis=-1) / n1[..., None]
        cdf2 = np.cumsum(live, axis=-1) / n2[..., None]
        d = np.abs(cdf1 - cdf2).max(axis=-1)
        en = n1 * n2 / (n1 + n2)
        p = np.clip(ks_p_value(d, en, p_value), 0.0, 1.0)
    valid = (n1 > 0) & (n2 > 0)
    return np.where(valid, d, np.nan), np.where(valid, p, np.nan)


def ks_p_value(d: np.ndarray, en: np.ndarray, method: str = "kolmogorov") -> np.ndarray:
    """The p-value of KS statistics ``d`` at effective sample sizes ``en`` (n1 n2 /
    (n1 + n2)), by ``method`` (see `ks`); not clipped."""
    if method == "kstwo":
        return _st.kstwo.sf(d, np.maximum(np.round(en), 1.0))
    return _sp.kolmogorov(np.sqrt(en) * d)


def chi_squared_p_value(stat: np.ndarray, dof: np.ndarray) -> np.ndarray:
    """The p-value of chi-squared statistics with ``dof`` degrees of freedom; 1 where there
    are none (a single non-empty bin)."""
    return np.where(dof > 0, _sp.chdtrc(np.maximum(dof, 1), stat), 1.0)


def chi_squared(ref: np.ndarray, live: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chi-squared test of homogeneity on the 2 x bins table (reference, live), no continuity
    correction; bins empty on both sides are dropped. Returns (statistic, p-value)."""
    ref = np.asarray(ref, dtype=np.float64)
    live = np.asarray(live, dtype=np.float64)
    col = ref + live
    n1 = ref.sum(axis=-1, keepdims=True)
    n2 = live.sum(axis=-1, keepdims=True)
    total = n1 + n2
    with np.errstate(invalid="ignore", divide="ignore"):
        e1 = col * n1 / total
        e2 = col * n2 / total
        t1 = np.where(e1 > 0, (ref - e1) ** 2 / np.where(e1 > 0, e1, 1.0), 0.0)
        t2 = np.where(e2 > 0, (live - e2) ** 2 / np.where(e2 > 0, e2, 1.0), 0.0)
    stat = (t1 + t2).sum(axis=-1)
    dof = (col > 0).sum(axis=-1) - 1
    p = chi_squared_p_value(stat, dof)
    valid = (n1[..., 0] > 0) & (n2[..., 0] > 0)
    return np.where(valid, stat, np.nan), np.where(valid, p, np.nan)


def wasserstein(
    ref: np.ndarray,
    live: np.ndarray,
    points: np.ndarray,
    ref_cdf: np.ndarray | None = None,
    gaps: np.ndarray | None = None,
) -> np.ndarray:
    """First Wasserstein distance between the binned distributions, each bin's mass placed at
    its representative point (``points``, non-decreasing along the last axis). ``ref_cdf``
    (the reference's cumulative proportions) and ``gaps`` (``diff(points)``) may be passed
    precomputed by callers that test many windows against one reference."""
    if ref_cdf is None:
        ref_cdf = np.cumsum(_proportions(ref)[0], axis=-1)
    if gaps is None:
        gaps = np.diff(np.asarray(points, dtype=np.float64), axis=-1)
    q, _ = _proportions(live)
    cdf_gap = np.abs(ref_cdf - np.cumsum(q, axis=-1))[..., :-1]
    return (cdf_gap * gaps).sum(axis=-1)


def adjust_p_values(p: np.ndarray, method: str) -> np.ndarray:
    """Multiple-testing correction across one model's features. NaN stays NaN and does not
    count towards the number of tests."""
    p = np.asarray(p, dtype=np.float64)
    ok = p == p  # not NaN
    m = int(np.count_nonzero(ok))
    if m == 0 or method == "none":
        return p.copy()
    every = m == p.size  # the usual case: no masking
    vals = p if every else p[ok]
    if method == "bonferroni":
        adjusted = np.minimum(vals * m, 1.0)
    elif method == "benjamini-hochberg":
        adjusted = _benjamini_hochberg(vals)
    else:
        raise ValueError(f"unknown correction {method!r}")
    if every:
        return adjusted
    out = np.full_like(p, np.nan)
    out[ok] = adjusted
    return out


def _benjamini_hochberg(vals: np.ndarray) -> np.ndarray:
    m = vals.size
    order = np.argsort(vals)
    ranked = vals[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(ranked, 1.0)
    return adjusted
