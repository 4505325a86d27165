"""Embedding features through a projection: a PCA fitted on the baseline's vectors, whose
leading components are then monitored as ordinary numeric features, and whose
reconstruction error scores the embedding as a whole.

The components watch shifts inside the subspace the baseline spans; the error (the distance
from a vector to that subspace) watches vectors leaving it, the kind of input the baseline
never had. Its window mean is judged like the multivariate score (`stats.multivariate`):
against the mean and spread of the errors of baseline vectors the PCA was not fitted on.

Pure numpy: arrays in, arrays out. Each event costs one row of a matrix product,
O(dim x components), and its error O(dim) more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as _st

from mlmon.stats.multivariate import MIN_BASELINE_ROWS, split_rows

# An event's error is capped this many held-out standard deviations above the held-out
# mean: one absurd vector (finite numbers of 1e150) would otherwise make the window's mean
# infinite, or alone push it over the threshold. A baseline vector passes the cap about as
# often as a Gaussian passes 10 sigma, unless the errors are very heavy-tailed.
ERROR_CAP_SD = 10.0
# Below this unexplained share of the baseline's variance the components rebuild every
# vector (components = dim, or a rank-deficient embedding): the error is rounding noise
# and is not scored.
MIN_UNEXPLAINED = 1e-6


@dataclass(frozen=True)
class Projection:
    mean: np.ndarray  # [dim] the baseline's mean vector
    components: np.ndarray  # [k, dim] orthonormal principal axes, strongest first
    explained_variance_ratio: np.ndarray  # [k] share of the total variance of each axis
    # the reconstruction error of held-out baseline vectors (count 0: not scored)
    error_mean: float = 0.0
    error_std: float = 0.0
    error_skew: float = 0.0
    error_count: int = 0

    @property
    def dim(self) -> int:
        return self.mean.size

    @property
    def k(self) -> int:
        return self.components.shape[0]

    @property
    def scored(self) -> bool:
        """Whether the embedding's reconstruction error has a baseline to be judged by."""
        return self.error_count > 0

    @property
    def error_cap(self) -> float:
        return self.error_mean + ERROR_CAP_SD * self.error_std

    def project(self, x: np.ndarray) -> np.ndarray:
        """[n, dim] vectors to [n, k] coordinates on the baseline's axes."""
        return (x - self.mean) @ self.components.T

    def errors(self, x: np.ndarray, coords: np.ndarray) -> np.ndarray:
        """Each vector's distance to the baseline's subspace, from the vectors [n, dim] and
        their coordinates [n, k] (``project``): |x - mean|^2 - |coords|^2 is the squared
        residual, as the axes are orthonormal, so the reconstruction costs O(dim) more per
        vector, not another matrix product. Capped at ``error_cap``."""
        centred = x - self.mean
        with np.errstate(over="ignore", invalid="ignore"):
            sq = np.einsum("ij,ij->i", centred, centred) - np.einsum("ij,ij->i", coords, coords)
        out = np.sqrt(np.maximum(sq, 0.0))
        return np.where(np.isnan(sq), self.error_cap, np.minimum(out, self.error_cap))

    def to_dict(self) -> dict[str, Any]:
        doc = {
            "dim": self.dim,
            "components": self.k,
            "mean": [float(v) for v in self.mean],
            "axes": [[float(v) for v in row] for row in self.components],
            "explained_variance_ratio": [float(v) for v in self.explained_variance_ratio],
        }
        if self.scored:
            doc["error"] = {
                "mean": self.error_mean,
                "std": self.error_std,
                "skew": self.error_skew,
                "count": self.error_count,
            }
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Projection:
        err = doc.get("error") or {}
        return cls(
            mean=np.asarray(doc["mean"], dtype=np.float64),
            components=np.asarray(doc["axes"], dtype=np.float64).reshape(
                doc["components"], doc["dim"]
            ),
            explained_variance_ratio=np.asarray(doc["explained_variance_ratio"], dtype=np.float64),
            error_mean=float(err.get("mean", 0.0)),
            error_std=float(err.get("std", 0.0)),
            error_skew=float(err.get("skew", 0.0)),
            error_count=int(err.get("count", 0)),
        )


def principal_axes(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean [dim], axes [k, dim], explained variance ratios [k]) of the rows of ``x`` by SVD
    of the centred data; axes beyond the data's rank are zeros. Each axis's sign is fixed so
    its largest coordinate is positive, so the same data always gives the same profile."""
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    var = s**2
    total = var.sum()
    ratio = var / total if total > 0 else np.zeros_like(var)
    axes = np.zeros((k, x.shape[1]))
    kept = min(k, vt.shape[0])
    axes[:kept] = vt[:kept]
    signs = np.sign(axes[np.arange(k), np.argmax(np.abs(axes), axis=1)])
    axes *= np.where(signs == 0, 1.0, signs)[:, None]
    share = np.zeros(k)
    share[:kept] = ratio[:kept]
    return mean, axes, share


def fit(x: np.ndarray, k: int, seed: int = 0) -> Projection:
    """PCA of the rows of ``x`` ([n, dim], n >= 2) to ``k`` components.

    With at least MIN_BASELINE_ROWS rows the PCA is fitted on a random half of them
    (`multivariate.split_rows`) and the other half's reconstruction errors give the mean,
    spread and skew that the window's score is judged by: errors of the rows a PCA was
    fitted on are biased low, the more so the larger dim is. With fewer rows, or when the
    components leave under MIN_UNEXPLAINED of the variance, the PCA is fitted on every row
    and the error is not scored."""
    if x.shape[0] < MIN_BASELINE_ROWS:
        return Projection(*principal_axes(x, k))
    fit_rows, held_rows = split_rows(x.shape[0], seed)
    p = Projection(*principal_axes(x[fit_rows], k))
    if 1.0 - p.explained_variance_ratio.sum() < MIN_UNEXPLAINED:
        return Projection(*principal_axes(x, k))
    held = x[held_rows]
    centred = held - p.mean
    residual = centred - (centred @ p.components.T) @ p.components
    e = np.sqrt(np.einsum("ij,ij->i", residual, residual))
    std = float(e.std(ddof=1))
    return Projection(
        p.mean,
        p.components,
        p.explained_variance_ratio,
        error_mean=float(e.mean()),
        error_std=std,
        error_skew=float(_st.skew(e)) if std > 0 else 0.0,
        error_count=len(held_rows),
    )


def component_names(name: str, k: int) -> list[str]:
    """The numeric features an embedding's components are monitored as."""
    return [f"{name}.pc{j + 1}" for j in range(k)]
