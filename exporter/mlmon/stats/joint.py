"""A window's multivariate drift decision, from what the exporter accumulates per slice
(events scored, sum and sum of squares of their reconstruction errors) and the baseline's
model (`multivariate.Reconstruction`, or an embedding's `embedding.Projection`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mlmon.stats import multivariate

METHOD = "pca_reconstruction"


@dataclass(frozen=True)
class JointReport:
    events: int  # events scored in the window
    score: float  # the window's mean reconstruction error (NaN: none)
    threshold: float  # the alarm threshold for a window of that many events
    reported: bool  # at least min_samples events
    drifted: bool  # reported and the score above the threshold


def report(rec: multivariate.ErrorSpread, sums: np.ndarray, min_samples: int) -> JointReport:
    n, total = float(sums[0]), float(sums[1])
    score = multivariate.score(n, total)
    upper = multivariate.threshold(rec, n) if n >= 1 else math.inf
    reported = n >= min_samples
    return JointReport(
        events=round(n),
        score=score,
        threshold=upper,
        reported=reported,
        drifted=reported and multivariate.drifted(score, upper),
    )
