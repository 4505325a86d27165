"""The windowed drift evaluation as it was before the fused implementation (one set of
numpy calls per block: numeric features, categorical features, predicted value or class,
score), frozen here as the reference that tests/test_drift_fused.py compares the exporter's
`mlmon.stats.drift.evaluate` with, and that bench/drift.py times it against.

Not part of the package: nothing in exporter/mlmon imports it. The divergence functions
are copied too, so later changes to `mlmon.stats.divergences` do not move the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mlmon.core.schema import CategoricalBlock, ModelSchema, NumericBlock
from mlmon.stats.drift import CATEGORICAL_METHODS, NUMERIC_METHODS, DriftReport, OutputDrift
from scipy import special as _sp
from scipy import stats as _st

PSI_EPSILON = 1e-4


# ------------------------------------------------------------------ divergences, as they were
def _proportions(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = counts / n[..., None]
    return p, n


def psi(ref: np.ndarray, live: np.ndarray, ref_p: np.ndarray | None = None) -> np.ndarray:
    p = ref_p if ref_p is not None else _proportions(ref)[0]
    q, _ = _proportions(live)
    both_empty = (p == 0) & (q == 0)
    p = np.maximum(p, PSI_EPSILON)
    q = np.maximum(q, PSI_EPSILON)
    terms = (q - p) * np.log(q / p)
    return np.where(both_empty, 0.0, terms).sum(axis=-1)


def _xlogy_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(a > 0, a * np.log(a / np.where(b > 0, b, 1.0)), 0.0)


def jensen_shannon(
    ref: np.ndarray, live: np.ndarray, ref_p: np.ndarray | None = None
) -> np.ndarray:
    p = ref_p if ref_p is not None else _proportions(ref)[0]
    q, _ = _proportions(live)
    m = (p + q) / 2.0
    div = (_xlogy_ratio(p, m).sum(axis=-1) + _xlogy_ratio(q, m).sum(axis=-1)) / 2.0
    return np.sqrt(np.maximum(div / np.log(2.0), 0.0))


def ks(
    ref: np.ndarray,
    live: np.ndarray,
    p_value: str = "kolmogorov",
    ref_cdf: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(ref, dtype=np.float64)
    live = np.asarray(live, dtype=np.float64)
    n1 = ref.sum(axis=-1)
    n2 = live.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cdf1 = ref_cdf if ref_cdf is not None else np.cumsum(ref, axis=-1) / n1[..., None]
        cdf2 = np.cumsum(live, axis=-1) / n2[..., None]
        d = np.abs(cdf1 - cdf2).max(axis=-1)
        en = n1 * n2 / (n1 + n2)
        if p_value == "kstwo":
            p = _st.kstwo.sf(d, np.maximum(np.round(en), 1.0))
        else:
            p = _sp.kolmogorov(np.sqrt(en) * d)
    p = np.clip(p, 0.0, 1.0)
    valid = (n1 > 0) & (n2 > 0)
    return np.where(valid, d, np.nan), np.where(valid, p, np.nan)


def chi_squared(ref: np.ndarray, live: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
    p = np.where(dof > 0, _sp.chdtrc(np.maximum(dof, 1), stat), 1.0)
    valid = (n1[..., 0] > 0) & (n2[..., 0] > 0)
    return np.where(valid, stat, np.nan), np.where(valid, p, np.nan)


def wasserstein(
    ref: np.ndarray,
    live: np.ndarray,
    points: np.ndarray,
    ref_cdf: np.ndarray | None = None,
    gaps: np.ndarray | None = None,
) -> np.ndarray:
    if ref_cdf is None:
        ref_cdf = np.cumsum(_proportions(ref)[0], axis=-1)
    if gaps is None:
        gaps = np.diff(np.asarray(points, dtype=np.float64), axis=-1)
    q, _ = _proportions(live)
    cdf_gap = np.abs(ref_cdf - np.cumsum(q, axis=-1))[..., :-1]
    return (cdf_gap * gaps).sum(axis=-1)


def adjust_p_values(p: np.ndarray, method: str) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0 or method == "none":
        out[ok] = p[ok]
        return out
    vals = p[ok]
    if method == "bonferroni":
        out[ok] = np.minimum(vals * m, 1.0)
        return out
    if method != "benjamini-hochberg":
        raise ValueError(f"unknown correction {method!r}")
    order = np.argsort(vals)
    ranked = vals[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(ranked, 1.0)
    out[ok] = adjusted
    return out


# ------------------------------------------------------------------ drift, as it was
@dataclass
class BlockScores:
    n: np.ndarray
    scores: dict[str, np.ndarray]
    p_value: np.ndarray
    effect: np.ndarray
    test: str


def numeric_scores(
    block: NumericBlock, live: np.ndarray, min_samples: int, p_value: str = "kolmogorov"
) -> BlockScores:
    ref = block.ref_counts
    n = live.sum(axis=-1)
    enough = n >= min_samples
    ref_c, live_c = block.ref_coarse, block.coarse_counts(live)
    d, p = ks(ref, live, p_value, ref_cdf=block.ref_ks_cdf)
    scores = {
        "psi": psi(ref_c, live_c, ref_p=block.ref_coarse_p),
        "js": jensen_shannon(ref_c, live_c, ref_p=block.ref_coarse_p),
        "ks": d,
        "wasserstein": wasserstein(
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
    stat, p = chi_squared(ref, live)
    scores = {
        "psi": psi(ref, live, ref_p=block.ref_p),
        "js": jensen_shannon(ref, live, ref_p=block.ref_p),
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
    p_adj = adjust_p_values(p, settings.correction)
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
