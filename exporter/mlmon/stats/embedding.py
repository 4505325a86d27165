"""Embedding features through a projection: a PCA fitted on the baseline's vectors, whose
leading components are then monitored as ordinary numeric features.

Pure numpy: arrays in, arrays out. Each event costs one row of a matrix product,
O(dim x components).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Projection:
    mean: np.ndarray  # [dim] the baseline's mean vector
    components: np.ndarray  # [k, dim] orthonormal principal axes, strongest first
    explained_variance_ratio: np.ndarray  # [k] share of the total variance of each axis

    @property
    def dim(self) -> int:
        return self.mean.size

    @property
    def k(self) -> int:
        return self.components.shape[0]

    def project(self, x: np.ndarray) -> np.ndarray:
        """[n, dim] vectors to [n, k] coordinates on the baseline's axes."""
        return (x - self.mean) @ self.components.T

    def to_dict(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "components": self.k,
            "mean": [float(v) for v in self.mean],
            "axes": [[float(v) for v in row] for row in self.components],
            "explained_variance_ratio": [float(v) for v in self.explained_variance_ratio],
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Projection:
        return cls(
            mean=np.asarray(doc["mean"], dtype=np.float64),
            components=np.asarray(doc["axes"], dtype=np.float64).reshape(
                doc["components"], doc["dim"]
            ),
            explained_variance_ratio=np.asarray(doc["explained_variance_ratio"], dtype=np.float64),
        )


def fit(x: np.ndarray, k: int) -> Projection:
    """PCA of the rows of ``x`` ([n, dim], n >= 2) to ``k`` components by SVD of the centred
    data. Each axis's sign is fixed so its largest coordinate is positive, so the same data
    always gives the same profile."""
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
    return Projection(mean=mean, components=axes, explained_variance_ratio=share)


def component_names(name: str, k: int) -> list[str]:
    """The numeric features an embedding's components are monitored as."""
    return [f"{name}.pc{j + 1}" for j in range(k)]
