"""Windowed drift of a model version: every test for every feature, and the decisions.

A feature counts as *drifted* only when its p-value, corrected across the model's features
(Benjamini–Hochberg by default), is below alpha **and** its effect size reaches a floor
(KS for numeric features, PSI for categorical ones). Large windows make tiny, harmless
shifts significant; the floor keeps those from paging anyone. No value is reported for a
feature until the window holds ``min_samples`` present values of it.

Pure: numpy arrays in, a `DriftReport` out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mlmon.core.schema import CategoricalBlock, ModelSchema, NumericBlock
from mlmon.stats import divergences as stats

NUMERIC_METHODS = ("psi", "js", "ks", "wasserstein")
CATEGORICAL_METHODS = ("psi", "js", "chi2")


@dataclass
class BlockScores:
    """Every method's value per column; NaN where the window is too small."""

    n: np.ndarray
    scores: dict[str, np.ndarray]
    p_value: np.ndarray  # of the block's test (KS or chi-squared)
    effect: np.ndarray  # the effect size compared with the floor
    test: str


@dataclass
class OutputDrift:
    output: str  # "value" (regression), "class", "score"
    n: int
    scores: dict[str, float]
    p_value: float
    drifted: bool


@dataclass
class DriftReport:
    features: tuple[str, ...]
    kinds: tuple[str, ...]
    n: np.ndarray
    scores: dict[str, np.ndarray]  # method -> [features], NaN where not applicable
    test: tuple[str, ...]
    p_value: np.ndarray
    p_adjusted: np.ndarray
    effect: np.ndarray
    drifted: np.ndarray
    reported: np.ndarray
    outputs: list[OutputDrift] = field(default_factory=list)

    @property
    def drifted_count(self) -> int:
        return int(self.drifted.sum())

    @property
    def tested_count(self) -> int:
        return int(self.reported.sum())


def numeric_scores(
    block: NumericBlock, live: np.ndarray, min_samples: int, p_value: str = "kolmogorov"
) -> BlockScores:
    ref = block.ref_counts
    n = live.sum(axis=-1)
    enough = n >= min_samples
    ref_c, live_c = block.ref_coarse, block.coarse_counts(live)
    d, p = stats.ks(ref, live, p_value, ref_cdf=block.ref_ks_cdf)
    scores = {
        "psi": stats.psi(ref_c, live_c, ref_p=block.ref_coarse_p),
        "js": stats.jensen_shannon(ref_c, live_c, ref_p=block.ref_coarse_p),
        "ks": d,
        "wasserstein": stats.wasserstein(
            ref, live, block.points, ref_cdf=block.ref_fine_cdf, gaps=block.point_gaps
        )
        / block.spread,
    }
    nan = np.full(n.shape, np.nan)
    scores = {k: np.where(enough, v, nan) for k, v in scores.items()}
    p = np.where(enough, p, nan)
    return BlockScores(n=n, scores=scores, p_value=p, effect=scores["ks"], test="ks")


def categorical_scores(block: CategoricalBlock, live: np.ndarray, min_samples: int) -> BlockScores:
    ref = block.ref_counts
    n = live.sum(axis=-1)
    enough = n >= min_samples
    stat, p = stats.chi_squared(ref, live)
    scores = {
        "psi": stats.psi(ref, live, ref_p=block.ref_p),
        "js": stats.jensen_shannon(ref, live, ref_p=block.ref_p),
        "chi2": stat,
    }
    nan = np.full(n.shape, np.nan)
    scores = {k: np.where(enough, v, nan) for k, v in scores.items()}
    p = np.where(enough, p, nan)
    return BlockScores(n=n, scores=scores, p_value=p, effect=scores["psi"], test="chi2")


def evaluate(
    schema: ModelSchema,
    num_live: np.ndarray,
    cat_live: np.ndarray,
    pred_live: np.ndarray,
    score_live: np.ndarray,
    thresholds: dict[str, float],
) -> DriftReport:
    """Drift of one version's window (counts on the schema's bins) against the baseline."""
    settings = schema.config.drift
    alpha = thresholds["drift_alpha"]
    floors = {"ks": thresholds["drift_ks_min"], "chi2": thresholds["drift_psi_min"]}
    num = numeric_scores(schema.numeric, num_live, settings.min_samples, settings.ks_p_value)
    cat = categorical_scores(schema.categorical, cat_live, settings.min_samples)
    f_num, f_cat = len(schema.numeric), len(schema.categorical)
    methods = dict.fromkeys(NUMERIC_METHODS + CATEGORICAL_METHODS)
    scores = {
        m: np.concatenate(
            [num.scores.get(m, np.full(f_num, np.nan)), cat.scores.get(m, np.full(f_cat, np.nan))]
        )
        for m in methods
    }
    p = np.concatenate([num.p_value, cat.p_value])
    effect = np.concatenate([num.effect, cat.effect])
    floor = np.concatenate([np.full(f_num, floors["ks"]), np.full(f_cat, floors["chi2"])])
    p_adj = stats.adjust_p_values(p, settings.correction)
    reported = ~np.isnan(p)
    with np.errstate(invalid="ignore"):
        drifted = reported & (p_adj < alpha) & (effect >= floor)
    report = DriftReport(
        features=schema.numeric.names + schema.categorical.names,
        kinds=("numeric",) * f_num + ("categorical",) * f_cat,
        n=np.concatenate([num.n, cat.n]),
        scores=scores,
        test=("ks",) * f_num + ("chi2",) * f_cat,
        p_value=p,
        p_adjusted=p_adj,
        effect=effect,
        drifted=drifted,
        reported=reported,
    )
    if schema.prediction_numeric is not None:
        bs = numeric_scores(
            schema.prediction_numeric, pred_live, settings.min_samples, settings.ks_p_value
        )
        report.outputs.append(_output("value", bs, alpha, floors["ks"]))
    if schema.prediction_classes is not None:
        bs = categorical_scores(schema.prediction_classes, pred_live, settings.min_samples)
        report.outputs.append(_output("class", bs, alpha, floors["chi2"]))
    if schema.score is not None and schema.score.ref_counts.sum() > 0:
        bs = numeric_scores(schema.score, score_live, settings.min_samples, settings.ks_p_value)
        report.outputs.append(_output("score", bs, alpha, floors["ks"]))
    return report


def _output(name: str, bs: BlockScores, alpha: float, floor: float) -> OutputDrift:
    p = float(bs.p_value[0])
    effect = float(bs.effect[0])
    drifted = bool(p < alpha and effect >= floor) if not np.isnan(p) else False
    return OutputDrift(
        output=name,
        n=int(bs.n[0]),
        scores={k: float(v[0]) for k, v in bs.scores.items()},
        p_value=p,
        drifted=drifted,
    )
