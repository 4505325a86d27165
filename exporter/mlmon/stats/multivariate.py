"""Multivariate drift by data reconstruction: how badly a PCA fitted on the baseline rebuilds
live rows.

Per-feature tests miss a change in how features move together (a correlation that flips
leaves every marginal intact). Following NannyML's "data reconstruction with PCA", each row
is encoded, projected on the baseline's leading principal components and mapped back; the
Euclidean distance between the encoded row and its reconstruction is that row's error. Rows
from the baseline's joint distribution lie near the kept subspace; rows that break its
correlations do not, so the window mean of the error rises.

Where this differs from NannyML, and why:

- categoricals are one-hot encoded over their top categories, each block scaled to unit
  total variance (NannyML frequency-encodes them, which maps two equally common categories
  to the same number);
- the error mean and spread that set the threshold are measured on baseline rows the PCA
  never saw (NannyML uses in-sample chunks, whose errors are biased low);
- the threshold is derived for any window size from those statistics (NannyML needs its
  reference cut into chunks of the analysis chunk size), and only the upper one alarms.

Pure numpy/scipy: arrays in, numbers out. The exporter keeps, per time slice, the count,
sum and sum of squares of `errors`; `score`, `threshold` and `drifted` turn them into a
decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

import numpy as np
from scipy import special as _sp
from scipy import stats as _st

# NannyML's default: keep the fewest components that explain 65% of the encoded variance.
# Fewer components leave more of each row to the residual, where broken correlations show.
DEFAULT_VARIANCE = 0.65
DEFAULT_TOP_CATEGORIES = 10
# The threshold's distance above the baseline's mean error, in standard deviations of a
# window mean: NannyML's 3. For normal window means that is a one-sided false-alarm rate of
# 0.13%; the promise is at most 1%, and the room between the two absorbs what a few
# thousand held-out rows cannot pin down, their std and skew. Measured on 180 baselines of
# 1,000 to 20,000 rows, windows of 500 and 1,000 events: a threshold at the 1% quantile
# (z = 2.33) alarmed up to 3% of the time on some baselines, z = 3 on average 0.1% and at
# most 0.75%, but for one baseline of 1,000 rows whose held-out mean and std both came
# out low (2 standard errors, 14%): 4.5%.
Z = 3.0
# The error mean comes from held-out rows; the threshold starts from an upper bound on it
# at this confidence, so a baseline that happened to measure low does not alarm more.
BASELINE_CONFIDENCE = 0.95
# Bound on each standardised numeric value and on each one-hot weight, in standard
# deviations. A Gaussian feature passes 5 sigma once in ~1.7 million values, so it is left
# alone; a heavy-tailed one (amounts, durations) would otherwise let one row's error be 30,
# so that a single event in a window of a thousand could raise the alarm, and the error's
# spread and skew could not be measured on a few thousand baseline rows (measured with one
# log-normal feature among twelve: the held-out std 13% low, the skew a third of the
# truth). Values beyond it are the per-feature out-of-range counters' business.
CLIP = 5.0
# Half of these rows fit the PCA, the other half measure its errors; below this the
# held-out half's std and skew are guesses.
MIN_BASELINE_ROWS = 100


def _frozen(values: Any, shape: tuple[int, ...] | None = None) -> np.ndarray:
    out = np.array(values, dtype=np.float64)
    if shape is not None:
        out = out.reshape(shape)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class Encoding:
    """How a row becomes a vector: numeric features standardised with the baseline's mean and
    standard deviation and clipped to +-``clip`` (missing -> 0, the mean), then per
    categorical one column for each of its first ``cat_columns[g]`` category indices
    (``__other__``, the rest and missing -> all zeros), the block multiplied by
    ``cat_scale[g]``."""

    num_mean: np.ndarray  # [F]
    num_scale: np.ndarray  # [F], 1 where the baseline's std is 0 or undefined
    cat_columns: tuple[int, ...]  # [G] one-hot columns per categorical
    cat_scale: np.ndarray  # [G]
    clip: float = CLIP

    @cached_property
    def width(self) -> int:
        return len(self.num_mean) + sum(self.cat_columns)

    @cached_property
    def cat_offsets(self) -> np.ndarray:
        """The first encoded column of each categorical."""
        starts = np.concatenate(([0], np.cumsum(self.cat_columns, dtype=np.int64)))[:-1]
        return len(self.num_mean) + starts.astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_mean": self.num_mean.tolist(),
            "num_scale": self.num_scale.tolist(),
            "cat_columns": list(self.cat_columns),
            "cat_scale": self.cat_scale.tolist(),
            "clip": self.clip,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Encoding:
        return cls(
            num_mean=_frozen(d["num_mean"]),
            num_scale=_frozen(d["num_scale"]),
            cat_columns=tuple(int(c) for c in d["cat_columns"]),
            cat_scale=_frozen(d["cat_scale"]),
            clip=float(d["clip"]),
        )


@dataclass(frozen=True, eq=False)
class Reconstruction:
    """A baseline's PCA and the spread of its errors on held-out baseline rows."""

    encoding: Encoding
    center: np.ndarray  # [D] mean of the encoded rows the PCA was fitted on
    components: np.ndarray  # [k, D] orthonormal rows, largest variance first
    explained_variance_ratio: np.ndarray  # [k] each component's share of the total
    error_mean: float  # of the held-out rows' errors
    error_std: float
    error_skew: float
    error_count: int  # held-out rows
    fit_count: int  # rows the encoding and the PCA were fitted on

    @property
    def n_components(self) -> int:
        return len(self.explained_variance_ratio)

    @property
    def explained_variance(self) -> float:
        """Share of the baseline's encoded variance that the kept components explain."""
        return float(self.explained_variance_ratio.sum())

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (JSON floats round-trip exactly)."""
        return {
            "encoding": self.encoding.to_dict(),
            "center": self.center.tolist(),
            "components": self.components.tolist(),
            "explained_variance_ratio": self.explained_variance_ratio.tolist(),
            "error": {
                "mean": self.error_mean,
                "std": self.error_std,
                "skew": self.error_skew,
                "count": self.error_count,
            },
            "fit_count": self.fit_count,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Reconstruction:
        encoding = Encoding.from_dict(d["encoding"])
        ratio = _frozen(d["explained_variance_ratio"])
        err = d["error"]
        return cls(
            encoding=encoding,
            center=_frozen(d["center"]),
            components=_frozen(d["components"], (len(ratio), encoding.width)),
            explained_variance_ratio=ratio,
            error_mean=float(err["mean"]),
            error_std=float(err["std"]),
            error_skew=float(err["skew"]),
            error_count=int(err["count"]),
            fit_count=int(d["fit_count"]),
        )


def _inputs(x_num: Any, cat_idx: Any) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x_num, dtype=np.float64)
    c = np.asarray(cat_idx, dtype=np.int64)
    if x.ndim != 2 or c.ndim != 2 or x.shape[0] != c.shape[0]:
        raise ValueError(f"x_num {x.shape} and cat_idx {c.shape} must be 2-D with equal rows")
    return x, c


def encode(enc: Encoding, x_num: Any, cat_idx: Any) -> np.ndarray:
    """The encoded rows [N, D]. Non-finite numeric values count as missing."""
    x, c = _inputs(x_num, cat_idx)
    if x.shape[1] != len(enc.num_mean) or c.shape[1] != len(enc.cat_columns):
        raise ValueError(
            f"expected {len(enc.num_mean)} numeric and {len(enc.cat_columns)} categorical "
            f"columns, got {x.shape[1]} and {c.shape[1]}"
        )
    out = np.zeros((x.shape[0], enc.width))
    f = x.shape[1]
    with np.errstate(invalid="ignore", over="ignore"):
        z = (x - enc.num_mean) / enc.num_scale
    out[:, :f] = np.where(np.isfinite(z), np.clip(z, -enc.clip, enc.clip), 0.0)
    kept = np.asarray(enc.cat_columns, dtype=np.int64)
    rows, cols = np.nonzero((c >= 0) & (c < kept))
    out[rows, enc.cat_offsets[cols] + c[rows, cols]] = enc.cat_scale[cols]
    return out


def fit_encoding(
    x_num: np.ndarray, cat_idx: np.ndarray, cat_widths: Any, top_categories: int
) -> Encoding:
    """The encoding of a baseline. ``cat_widths[g]`` counts categorical g's category indices,
    ``__other__`` (the last) included.

    Each categorical block is scaled to a total variance of 1, the variance of one
    standardised numeric feature: unscaled, a categorical weighs 1 - sum(p^2) < 1 (a rare
    one almost nothing); standardising every one-hot column instead would give a
    ten-category feature ten times a numeric feature's weight and rare categories huge
    values (1/sqrt(p)). One feature, one unit of variance, so no kind of feature dominates
    the components or the error. The scale is capped at ``CLIP``: a nearly constant
    categorical would otherwise give its rare rows the weight of a 30-sigma value.
    """
    widths = [int(w) for w in cat_widths]
    if len(widths) != cat_idx.shape[1]:
        raise ValueError(f"{len(widths)} categorical widths for {cat_idx.shape[1]} columns")
    mean, std = _column_moments(x_num)
    columns = tuple(max(0, min(int(top_categories), w - 1)) for w in widths)
    unit = Encoding(_frozen(mean), _frozen(std), columns, _frozen(np.ones(len(widths))))
    onehot = encode(unit, x_num, cat_idx)[:, x_num.shape[1] :]
    block = np.repeat(np.arange(len(widths)), columns)
    block_var = np.bincount(block, weights=onehot.var(axis=0), minlength=len(widths))
    scale = np.minimum(1.0 / np.sqrt(np.where(block_var > 0, block_var, 1.0)), CLIP)
    return Encoding(unit.num_mean, unit.num_scale, columns, _frozen(scale))


def _column_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) std of each column's finite values; 0 and 1 where a column has
    none or is constant, so that it encodes to zeros rather than NaN."""
    ok = np.isfinite(x)
    n = ok.sum(axis=0)
    safe_n = np.maximum(n, 1)
    mean = np.where(ok, x, 0.0).sum(axis=0) / safe_n
    var = (np.where(ok, x - mean, 0.0) ** 2).sum(axis=0) / safe_n
    std = np.sqrt(var)
    # A constant column's std is rounding noise, which would blow that noise up to ~1.
    constant = std <= 1e-12 * np.maximum(np.abs(mean), 1.0)
    return mean, np.where(constant, 1.0, std)


def principal_axes(
    encoded: np.ndarray, variance: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre, components [k, D], explained variance ratios [k]) of the rows: the fewest
    leading components whose explained shares sum to at least ``variance``. Each component's
    largest entry is made positive, so that the same data gives the same signs."""
    center = encoded.mean(axis=0)
    _, s, vt = np.linalg.svd(encoded - center, full_matrices=False)
    var = s**2
    total = var.sum()
    if not total > 0:
        raise ValueError("the baseline has no variance to model: every row encodes alike")
    ratio = var / total
    k = min(int(np.searchsorted(np.cumsum(ratio), variance)) + 1, len(ratio))
    comps = vt[:k]
    signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])
    return center, comps * signs[:, None], ratio[:k]


def split_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random half of ``range(n)`` to fit on (the larger half when n is odd), and the rest
    to measure errors on."""
    order = np.random.default_rng(seed).permutation(n)
    cut = n - n // 2
    return np.sort(order[:cut]), np.sort(order[cut:])


def fit(
    x_num: Any,
    cat_idx: Any,
    cat_widths: Any,
    variance: float = DEFAULT_VARIANCE,
    top_categories: int = DEFAULT_TOP_CATEGORIES,
    seed: int = 0,
) -> Reconstruction:
    """Fit the encoding and the PCA on a random half of the baseline rows, and measure the
    error mean, spread and skew on the other half.

    In-sample errors are biased low (the components bend towards the very rows they are
    scored on), and a window of n events is held to within ~3 std/sqrt(n) of the mean: at
    n = 1,000 that is a tenth of a standard deviation, no more than the bias of a PCA fitted
    on a few thousand rows. Measured: thresholds from in-sample errors alarmed on windows
    of 1,000 baseline events 50% of the time on average for baselines of 1,000 rows, and
    up to 11% for 4,000 rows. The fitted half is not refitted on all rows afterwards: the
    published statistics then describe exactly the model that scores production, and a
    PCA of a few dozen dimensions is about as well determined by half the baseline as by
    all of it.
    """
    if not 0.0 < variance <= 1.0:
        raise ValueError(f"variance must be in (0, 1], got {variance}")
    x, c = _inputs(x_num, cat_idx)
    if x.shape[0] < MIN_BASELINE_ROWS:
        raise ValueError(f"{x.shape[0]} baseline rows; at least {MIN_BASELINE_ROWS} needed")
    if x.shape[1] + c.shape[1] == 0:
        raise ValueError("no features to model")
    fit_rows, held_rows = split_rows(x.shape[0], seed)
    enc = fit_encoding(x[fit_rows], c[fit_rows], cat_widths, top_categories)
    center, comps, ratio = principal_axes(encode(enc, x[fit_rows], c[fit_rows]), variance)
    held = _distances(encode(enc, x[held_rows], c[held_rows]), center, comps)
    std = float(held.std(ddof=1))
    skew = float(_st.skew(held)) if std > 0 else 0.0
    return Reconstruction(
        enc,
        _frozen(center),
        _frozen(comps),
        _frozen(ratio),
        error_mean=float(held.mean()),
        error_std=std,
        error_skew=skew,
        error_count=len(held_rows),
        fit_count=len(fit_rows),
    )


def errors(rec: Reconstruction, x_num: Any, cat_idx: Any) -> np.ndarray:
    """Each row's reconstruction error [N]: the Euclidean distance between the encoded row and
    its projection on the kept components, mapped back (O(N x D x k), no loop over rows)."""
    return _distances(encode(rec.encoding, x_num, cat_idx), rec.center, rec.components)


def _distances(encoded: np.ndarray, center: np.ndarray, components: np.ndarray) -> np.ndarray:
    z = encoded - center
    residual = z - (z @ components.T) @ components
    return np.sqrt(np.einsum("ij,ij->i", residual, residual))


def score(count: float, total: float) -> float:
    """A window's mean reconstruction error from its count and sum of errors; NaN when empty."""
    return float(total) / float(count) if count > 0 else math.nan


def spread(count: float, total: float, total_sq: float) -> float:
    """A window's sample standard deviation of errors from its count, sum and sum of squares;
    NaN below two events."""
    if count < 2:
        return math.nan
    var = (float(total_sq) - float(total) ** 2 / count) / (count - 1)
    return math.sqrt(max(var, 0.0))


class ErrorSpread(Protocol):
    """What a threshold needs of a baseline: its held-out errors' mean, spread, skew and
    count (a `Reconstruction`, or an embedding's `Projection`)."""

    @property
    def error_mean(self) -> float: ...
    @property
    def error_std(self) -> float: ...
    @property
    def error_skew(self) -> float: ...
    @property
    def error_count(self) -> int: ...


def threshold(
    rec: ErrorSpread, n: float, z: float = Z, confidence: float = BASELINE_CONFIDENCE
) -> float:
    """The upper alarm threshold for the mean error of a window of ``n`` events.

    mean + std * (q_n / sqrt(n) + z_c / sqrt(m)), m the number of held-out rows:

    - q_n is the quantile of a standardised window mean with the normal law's tail beyond
      ``z`` (Phi(-z)). Errors are distances, skewed to the right, and so is a mean of n of
      them (skew g / sqrt(n)): q_n comes from a Pearson type III (shifted gamma) law with
      that skew, exact for gamma-distributed errors and z itself for symmetric ones; the
      normal quantile would sit too low for small windows (g = 2, n = 10: 3.85, not 3);
    - z_c / sqrt(m), z_c the normal quantile at ``confidence``, makes the starting point
      an upper confidence bound of the baseline mean rather than the estimate itself.

    Only an upper threshold: rows rebuilt better than the baseline's are no reason to page.
    Infinite (never alarms) for an empty window.
    """
    if not n >= 1:
        return math.inf
    q = pearson3_isf(float(_sp.ndtr(-z)), rec.error_skew / math.sqrt(n))
    margin = float(_sp.ndtri(confidence)) / math.sqrt(rec.error_count)
    return rec.error_mean + rec.error_std * (q / math.sqrt(n) + margin)


# Below this skew a Pearson III law is the normal one to within rounding (scipy's own cut).
_NORMAL_SKEW = 1.6e-5


def pearson3_isf(tail: float, skew: float) -> float:
    """The value a standardised Pearson type III variable with this skew exceeds with
    probability ``tail``: for skew g > 0, (G - k) / sqrt(k) with G ~ Gamma(k = 4 / g^2),
    mirrored for g < 0. Equals ``scipy.stats.pearson3.isf`` at a thousandth of its cost,
    which matters at scrape time."""
    if abs(skew) < _NORMAL_SKEW:
        return float(-_sp.ndtri(tail))
    k = 4.0 / skew**2
    if skew > 0:
        return float((_sp.gammainccinv(k, tail) - k) / math.sqrt(k))
    return float((k - _sp.gammaincinv(k, tail)) / math.sqrt(k))


def drifted(window_score: float, upper: float) -> bool:
    """Whether a window's mean error is above the threshold (never for an empty window)."""
    return bool(window_score > upper)
