"""Multivariate drift by PCA reconstruction (mlmon.stats.multivariate) against independent
references: scikit-learn's PCA on an encoding built with scikit-learn's own scaler and
one-hot encoder, scipy's two-sample KS test for the marginals, exact gamma quantiles for the
threshold, and fresh samples (never the baseline rows) for detection and false alarms."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import warnings

import numpy as np
import pytest
from mlmon.stats import multivariate as mv
from scipy import stats as st
from sklearn.decomposition import PCA
from sklearn.preprocessing import OneHotEncoder, StandardScaler

# The "pair" table: features 0 and 1 correlated (rho), six independent features of assorted
# shapes, two categoricals (4 and 12 named categories: the second has more than the 10 that
# are encoded). Each categorical's width counts its `__other__` index too.
PAIR_CATEGORIES = (
    np.array([0.5, 0.3, 0.15, 0.05]),
    np.array([0.2, 0.15, 0.12, 0.1, 0.09, 0.08, 0.07, 0.06, 0.05, 0.04, 0.03, 0.01]),
)
PAIR_WIDTHS = tuple(len(p) + 1 for p in PAIR_CATEGORIES)
FLIPPED = (0, 1)

# The "factor" table: 12 numeric features driven by 3 latent factors plus noise (feature 2
# log-normal, feature 5 on another scale), and 3 categoricals: two that follow the factors
# (5 and 13 named categories) and one independent (5).
FACTOR_LOADINGS = np.random.default_rng(12345).normal(size=(12, 3))
FACTOR_WIDTHS = (6, 14, 6)
MISSING = 0.03


def _with_missing(
    rng: np.random.Generator, x: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    x[rng.random(x.shape) < MISSING] = np.nan
    c[rng.random(c.shape) < MISSING] = -1
    return x, c


def pair_table(
    rng: np.random.Generator, n: int, rho: float = 0.9, shift: dict[int, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    z = rng.standard_normal((n, 2))
    x = np.column_stack(
        [
            z[:, 0],
            2.0 + 3.0 * (rho * z[:, 0] + math.sqrt(1 - rho**2) * z[:, 1]),
            rng.standard_normal(n),
            rng.lognormal(0.0, 0.5, n),
            rng.uniform(-1.0, 1.0, n),
            rng.exponential(1.0, n),
            rng.standard_t(8, n),
            rng.gamma(3.0, 1.0, n),
        ]
    )
    for j, amount in (shift or {}).items():
        x[:, j] += amount
    c = np.column_stack([rng.choice(len(p), n, p=p) for p in PAIR_CATEGORIES])
    return _with_missing(rng, x, c.astype(np.int64))


def factor_table(
    rng: np.random.Generator, n: int, shift: dict[int, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    f = rng.standard_normal((n, 3))
    x = f @ FACTOR_LOADINGS.T + 0.5 * rng.standard_normal((n, 12))
    x[:, 2] = np.exp(0.5 * x[:, 2])
    x[:, 5] = 10.0 * x[:, 5] + 100.0
    for j, amount in (shift or {}).items():
        x[:, j] += amount
    a = np.digitize(f[:, 0] + 0.5 * rng.standard_normal(n), [-1.0, -0.3, 0.3, 1.0])
    b = np.clip(np.round(2.5 * (f[:, 1] + 0.7 * rng.standard_normal(n)) + 6.0), 0, 12)
    c = rng.choice(5, n, p=[0.45, 0.25, 0.15, 0.1, 0.05])
    return _with_missing(rng, x, np.column_stack([a, b, c]).astype(np.int64))


@pytest.fixture(scope="module")
def pair_fit() -> tuple[mv.Reconstruction, np.ndarray, np.ndarray]:
    x, c = pair_table(np.random.default_rng(1), 10_000)
    return mv.fit(x, c, PAIR_WIDTHS), x, c


@pytest.fixture(scope="module")
def factor_fit() -> tuple[mv.Reconstruction, np.ndarray, np.ndarray]:
    x, c = factor_table(np.random.default_rng(2), 6_000)
    return mv.fit(x, c, FACTOR_WIDTHS), x, c


def _window_score(rec: mv.Reconstruction, x: np.ndarray, c: np.ndarray) -> float:
    e = mv.errors(rec, x, c)
    return mv.score(len(e), float(e.sum()))


def _window_means(e: np.ndarray, n: int) -> np.ndarray:
    return e[: len(e) // n * n].reshape(-1, n).mean(axis=1)


# --- the PCA against scikit-learn ---------------------------------------------------------


def sklearn_encoding(
    x_fit: np.ndarray, c_fit: np.ndarray, widths: tuple[int, ...], x: np.ndarray, c: np.ndarray
) -> np.ndarray:
    """The documented encoding, built from scikit-learn parts fitted on the fit rows:
    StandardScaler (NaN ignored), clip, missing -> 0; a OneHotEncoder over the first
    min(10, width - 1) indices per categorical (unknown -> zeros), each block scaled to unit
    total variance (capped at the clip)."""
    scaler = StandardScaler().fit(x_fit)
    num = np.nan_to_num(np.clip(scaler.transform(x), -mv.CLIP, mv.CLIP), nan=0.0)
    blocks = [num]
    for g, width in enumerate(widths):
        kept = np.arange(min(mv.DEFAULT_TOP_CATEGORIES, width - 1))
        ohe = OneHotEncoder(categories=[kept], handle_unknown="ignore", sparse_output=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "unknown categories": wanted here
            fitted = ohe.fit_transform(c_fit[:, [g]])
            scale = min(1.0 / math.sqrt(fitted.var(axis=0).sum()), mv.CLIP)
            blocks.append(ohe.transform(c[:, [g]]) * scale)
    return np.hstack(blocks)


def test_pca_matches_sklearn_on_an_independently_built_encoding(factor_fit):
    rec, x, c = factor_fit
    fit_rows, held_rows = mv.split_rows(len(x), seed=0)
    assert sorted([*fit_rows, *held_rows]) == list(range(len(x)))
    assert rec.fit_count == len(fit_rows) == 3_000 and rec.error_count == len(held_rows)
    xf, cf = x[fit_rows], c[fit_rows]
    # the data exercise every branch of the encoding
    scaled = StandardScaler().fit_transform(xf)
    assert np.isnan(xf).any() and (cf == -1).any() and (np.abs(scaled) > mv.CLIP).any()
    assert (cf[:, 1] >= mv.DEFAULT_TOP_CATEGORIES).any()

    z_fit = sklearn_encoding(xf, cf, FACTOR_WIDTHS, xf, cf)
    np.testing.assert_allclose(mv.encode(rec.encoding, xf, cf), z_fit, rtol=0, atol=1e-12)
    pca = PCA(n_components=mv.DEFAULT_VARIANCE, svd_solver="full").fit(z_fit)
    assert rec.n_components == pca.n_components_
    assert 1 < rec.n_components < z_fit.shape[1]
    np.testing.assert_allclose(rec.explained_variance_ratio, pca.explained_variance_ratio_, 1e-9)
    assert rec.explained_variance >= mv.DEFAULT_VARIANCE
    assert rec.explained_variance - rec.explained_variance_ratio[-1] < mv.DEFAULT_VARIANCE
    np.testing.assert_allclose(rec.center, pca.mean_, rtol=0, atol=1e-12)
    signs = np.sign(np.sum(rec.components * pca.components_, axis=1))
    np.testing.assert_allclose(rec.components, pca.components_ * signs[:, None], atol=1e-9)

    def sklearn_errors(x_new: np.ndarray, c_new: np.ndarray) -> np.ndarray:
        z = sklearn_encoding(xf, cf, FACTOR_WIDTHS, x_new, c_new)
        return np.linalg.norm(z - pca.inverse_transform(pca.transform(z)), axis=1)

    x_new, c_new = factor_table(np.random.default_rng(8), 2_000)
    np.testing.assert_allclose(mv.errors(rec, x_new, c_new), sklearn_errors(x_new, c_new), 1e-9)
    held = sklearn_errors(x[held_rows], c[held_rows])
    assert rec.error_mean == pytest.approx(held.mean(), rel=1e-9)
    assert rec.error_std == pytest.approx(held.std(ddof=1), rel=1e-9)
    assert rec.error_skew == pytest.approx(st.skew(held), rel=1e-6)


def _row_error(d: dict, row: np.ndarray, cats: np.ndarray) -> float:
    """One row's error from the stored profile with plain Python: encode, subtract the
    centre, take away each component's share, measure what is left."""
    enc = d["encoding"]
    z = []
    for v, m, s in zip(row, enc["num_mean"], enc["num_scale"], strict=True):
        z.append(0.0 if math.isnan(v) else max(-enc["clip"], min(enc["clip"], (v - m) / s)))
    for g, kept in enumerate(enc["cat_columns"]):
        z.extend(enc["cat_scale"][g] if int(cats[g]) == j else 0.0 for j in range(kept))
    z = [a - b for a, b in zip(z, d["center"], strict=True)]
    residual = list(z)
    for comp in d["components"]:
        share = math.fsum(a * b for a, b in zip(z, comp, strict=True))
        residual = [r - share * v for r, v in zip(residual, comp, strict=True)]
    return math.sqrt(math.fsum(r * r for r in residual))


def test_errors_of_a_batch_equal_a_row_by_row_computation(pair_fit):
    rec, _, _ = pair_fit
    x, c = pair_table(np.random.default_rng(3), 300, rho=0.0)
    batch = mv.errors(rec, x, c)
    d = rec.to_dict()
    expected = [_row_error(d, x[i], c[i]) for i in range(len(x))]
    np.testing.assert_allclose(batch, expected, rtol=1e-10)
    one_by_one = [mv.errors(rec, x[i : i + 1], c[i : i + 1])[0] for i in range(len(x))]
    np.testing.assert_allclose(batch, one_by_one, rtol=1e-12)


def test_profile_round_trips_through_json_exactly(pair_fit):
    rec, _, _ = pair_fit
    back = mv.Reconstruction.from_dict(json.loads(json.dumps(rec.to_dict(), allow_nan=False)))
    x, c = pair_table(np.random.default_rng(4), 500)
    assert np.array_equal(mv.errors(back, x, c), mv.errors(rec, x, c))
    assert back.to_dict() == rec.to_dict()
    assert mv.threshold(back, 700) == mv.threshold(rec, 700)
    assert back.explained_variance == rec.explained_variance
    with pytest.raises(dataclasses.FrozenInstanceError):
        back.error_mean = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        back.components[0, 0] = 1.0


# --- detection ----------------------------------------------------------------------------


def test_a_flipped_correlation_crosses_the_threshold_while_marginals_stay(pair_fit):
    """Correlation +0.9 in the baseline, -0.9 in the stream: a window of 1,000 events is
    over the threshold while a two-sample KS test on either flipped feature is not
    significant at 0.05."""
    rec, xb, _ = pair_fit
    x, c = pair_table(np.random.default_rng(21), 1_000, rho=-0.9)
    ok = ~np.isnan(x[:, 0]) & ~np.isnan(x[:, 1])
    assert np.corrcoef(x[ok, 0], x[ok, 1])[0, 1] < -0.85
    for j in FLIPPED:
        base, live = xb[:, j][~np.isnan(xb[:, j])], x[:, j][~np.isnan(x[:, j])]
        assert st.ks_2samp(base, live).pvalue > 0.05, j
    assert mv.drifted(_window_score(rec, x, c), mv.threshold(rec, 1_000))


def test_the_flip_is_caught_reliably_from_a_hundred_events(pair_fit):
    """The smallest window that catches the flip reliably: measured on 20,000 windows for
    each of five baselines (1,000 to 10,000 rows), 50 events catch it 95-99% of the time,
    75 events 99.8% or more, 100 events always (20 events: 40-72%). Asserted here on 200
    windows of 100 and of 1,000 events."""
    rec, _, _ = pair_fit
    x, c = pair_table(np.random.default_rng(22), 200_000, rho=-0.9)
    e = mv.errors(rec, x, c)
    for n in (100, 1_000):
        means = _window_means(e[: 200 * n], n)
        assert len(means) == 200
        assert np.mean(means > mv.threshold(rec, n)) >= 0.99, n


def test_a_sliding_window_catches_the_flip_within_three_hundred_events(pair_fit):
    """2,000 baseline events, then flipped ones; a window of the last 1,000 events. No
    alarm before the change; the first one 100-150 events after it (measured over 1,000
    change points and five baselines: median 109-153, at most 266)."""
    rec, _, _ = pair_fit
    before = pair_table(np.random.default_rng(23), 2_000)
    after = pair_table(np.random.default_rng(24), 2_000, rho=-0.9)
    e = np.concatenate([mv.errors(rec, *before), mv.errors(rec, *after)])
    n = 1_000
    sums = np.convolve(e, np.ones(n), mode="valid")  # window ending at event n - 1 + i
    alarms = np.flatnonzero(sums / n > mv.threshold(rec, n)) + n - 1
    assert alarms.size and alarms[0] >= 2_000
    assert alarms[0] - 2_000 < 300


def test_a_one_sigma_shift_in_any_two_features_crosses_the_threshold(factor_fit):
    """Every pair of the 12 correlated numeric features, each shifted by one baseline
    standard deviation, in a window of 1,000 events. (Measured: every pair is caught in
    every window from 50 events on, for three baselines.) A shift breaks the features'
    relation with the others, which the kept components cannot rebuild."""
    rec, xb, _ = factor_fit
    sd = np.nanstd(xb, axis=0)
    upper = mv.threshold(rec, 1_000)
    rng = np.random.default_rng(30)
    for i, j in itertools.combinations(range(xb.shape[1]), 2):
        x, c = factor_table(rng, 1_000, shift={i: sd[i], j: sd[j]})
        assert mv.drifted(_window_score(rec, x, c), upper), (i, j)


def test_a_shift_along_a_kept_component_is_left_to_the_per_feature_tests(pair_fit):
    """What reconstruction cannot see: features 0 and 1 both moved by one standard
    deviation, along the baseline's first component, are rebuilt as well as before. KS
    sees each; the joint score stays under its threshold. (Likewise, whether a shift of
    two independent features shows depends on which of their equal-variance directions
    the PCA happened to keep: measured 0% to 100% of 1,000-event windows across eight
    baselines of this table.)"""
    rec, xb, _ = pair_fit
    sd = np.nanstd(xb, axis=0)
    x, c = pair_table(np.random.default_rng(31), 1_000, shift={0: sd[0], 1: sd[1]})
    for j in FLIPPED:
        assert st.ks_2samp(xb[:, j][~np.isnan(xb[:, j])], x[:, j][~np.isnan(x[:, j])]).pvalue < 1e-6
    assert not mv.drifted(_window_score(rec, x, c), mv.threshold(rec, 1_000))


# --- false alarms and the threshold -------------------------------------------------------


@pytest.mark.parametrize("table", [pair_table, factor_table], ids=["pair", "factor"])
def test_windows_of_baseline_data_alarm_at_most_one_percent_of_the_time(table):
    """Baselines of 1,000 and 4,000 rows (half fit the PCA, half measure it), three of each;
    300 windows of 500 and 300 of 1,000 fresh events from the same distribution. (Measured
    over 180 baselines of 1,000 to 20,000 rows: mean 0.1%, at most 0.75% for windows of 500
    and 1,000 events, but for one baseline of 1,000 rows whose held-out mean came out 2
    standard errors and std 14% low.)"""
    widths = PAIR_WIDTHS if table is pair_table else FACTOR_WIDTHS
    x, c = table(np.random.default_rng(50), 450_000)
    for rows, seed in itertools.product((1_000, 4_000), (100, 101, 102)):
        xb, cb = table(np.random.default_rng(seed), rows)
        rec = mv.fit(xb, cb, widths)
        e = mv.errors(rec, x, c)
        for n, fresh in ((500, e[:150_000]), (1_000, e[150_000:])):
            means = _window_means(fresh, n)
            assert len(means) == 300
            rate = np.mean(means > mv.threshold(rec, n))
            assert rate <= 0.01, (rows, seed, n, rate)


def test_threshold_is_the_exact_quantile_of_a_gamma_window_mean(pair_fit):
    """For errors Gamma(a, s), a window mean of n is Gamma(n a, s / n): the skew-aware
    threshold (with no allowance for the baseline's own uncertainty) is its quantile with
    the normal tail beyond z. The normal quantile would sit a whole window standard
    deviation too low at n = 5 (3 instead of 3.98)."""
    rec, _, _ = pair_fit
    a, s = 1.5, 0.7
    gamma = dataclasses.replace(
        rec, error_mean=a * s, error_std=math.sqrt(a) * s, error_skew=2 / math.sqrt(a)
    )
    tail = st.norm.sf(mv.Z)
    for n in (1, 5, 20, 100, 1_000, 10_000):
        exact = st.gamma(n * a, scale=s / n).isf(tail)
        assert mv.threshold(gamma, n, confidence=0.5) == pytest.approx(exact, rel=1e-9), n
    allowance = mv.threshold(gamma, 50) - mv.threshold(gamma, 50, confidence=0.5)
    expected = st.norm.ppf(mv.BASELINE_CONFIDENCE) * gamma.error_std / math.sqrt(rec.error_count)
    assert allowance == pytest.approx(expected, rel=1e-9)
    # symmetric errors: the plain z-sigma threshold
    normal = dataclasses.replace(rec, error_skew=0.0)
    plain = rec.error_mean + rec.error_std * mv.Z / math.sqrt(400)
    assert mv.threshold(normal, 400, confidence=0.5) == pytest.approx(plain, rel=1e-12)


def test_pearson3_quantile_equals_scipy():
    skews = (-4.0, -1.0, -0.01, -1e-5, 0.0, 1e-5, 2e-5, 1e-3, 0.3, 1.0, 2.5, 10.0, 40.0)
    for skew, tail in itertools.product(skews, (0.5, 0.1, 0.01, st.norm.sf(3.0), 1e-6)):
        expected = st.pearson3.isf(tail, skew)
        assert mv.pearson3_isf(tail, skew) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_window_score_spread_and_decision_from_accumulated_sums(pair_fit):
    rec, _, _ = pair_fit
    x, c = pair_table(np.random.default_rng(5), 800)
    e = mv.errors(rec, x, c)
    halves = (e[:300], e[300:])  # two time slices, summed as the exporter does
    count = sum(len(h) for h in halves)
    total = sum(float(h.sum()) for h in halves)
    total_sq = sum(float((h**2).sum()) for h in halves)
    assert mv.score(count, total) == pytest.approx(e.mean(), rel=1e-12)
    assert mv.spread(count, total, total_sq) == pytest.approx(e.std(ddof=1), rel=1e-9)
    # empty windows: no score, no threshold, no alarm
    assert math.isnan(mv.score(0, 0.0)) and math.isnan(mv.spread(1, 1.0, 1.0))
    assert mv.threshold(rec, 0) == math.inf
    assert not mv.drifted(mv.score(0, 0.0), mv.threshold(rec, 0))
    # upper only: rows rebuilt better than the baseline's never alarm
    limits = [mv.threshold(rec, n) for n in (10, 100, 1_000, 10_000)]
    assert all(a > b > rec.error_mean for a, b in itertools.pairwise(limits))
    assert not mv.drifted(0.0, limits[-1])


def test_inputs_are_checked_and_edge_shapes_work():
    rng = np.random.default_rng(6)
    x, c = pair_table(rng, 500)
    with pytest.raises(ValueError, match="at least"):
        mv.fit(x[:99], c[:99], PAIR_WIDTHS)
    with pytest.raises(ValueError, match="widths"):
        mv.fit(x, c, PAIR_WIDTHS[:1])
    with pytest.raises(ValueError, match="no variance"):
        mv.fit(np.ones((100, 3)), np.zeros((100, 1), dtype=np.int64), (1,))
    rec = mv.fit(x, c, PAIR_WIDTHS)
    with pytest.raises(ValueError, match="numeric"):
        mv.errors(rec, x[:, :5], c)
    # numeric only, categorical only, and a categorical that is all `__other__`
    numeric = mv.fit(x, np.zeros((500, 0), dtype=np.int64), ())
    assert numeric.encoding.width == 8 and mv.errors(numeric, x[:3], c[:3, :0]).shape == (3,)
    only = mv.fit(np.zeros((500, 0)), np.column_stack([c, np.zeros(500, int)]), (*PAIR_WIDTHS, 1))
    assert only.encoding.cat_columns == (4, 10, 0)
    assert np.all(
        np.isfinite(mv.errors(only, np.zeros((2, 0)), np.array([[-1, 11, 0], [3, 99, 0]])))
    )
