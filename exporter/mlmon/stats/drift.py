"""Windowed drift of a model version: every test for every feature, and the decisions.

A feature counts as *drifted* only when its p-value, corrected across the model's features
(Benjamini–Hochberg by default), is below alpha **and** its effect size reaches a floor
(KS for numeric features, PSI for categorical ones). Large windows make tiny, harmless
shifts significant; the floor keeps those from paging anyone. No value is reported for a
feature until the window holds ``min_samples`` present values of it.

Pure: numpy arrays in, a `DriftReport` out (the reference side of each schema is laid out
once and kept, `drift_plan`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mlmon.core.schema import ModelSchema
from mlmon.stats import divergences as stats
from mlmon.stats import drift_plan

NUMERIC_METHODS = ("psi", "js", "ks", "wasserstein")
CATEGORICAL_METHODS = ("psi", "js", "chi2")


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


def evaluate(
    schema: ModelSchema,
    num_live: np.ndarray,
    cat_live: np.ndarray,
    pred_live: np.ndarray,
    score_live: np.ndarray,
    thresholds: dict[str, float],
) -> DriftReport:
    """Drift of one version's window (counts on the schema's bins) against the baseline.

    Every test of every feature and output is one row of one padded matrix
    (`drift_plan`), so a window costs a fixed number of numpy calls whatever the number
    of features; the reference side is laid out once per baseline."""
    live = (num_live, cat_live, pred_live, score_live)
    plan = drift_plan.plan_for(schema, live)
    settings = schema.config.drift
    counts = np.zeros((plan.rows, plan.width), dtype=num_live.dtype)
    for source, rows, cols in plan.fills:
        counts[rows, cols] = live[source]
    with np.errstate(invalid="ignore", divide="ignore"):
        values, n = _row_values(plan, counts, settings.min_samples, settings.ks_p_value)
        report = _feature_report(plan, values, n, settings.correction, thresholds)
    report.outputs.extend(_outputs(plan, values, n, thresholds))
    return report


_LOG2 = np.log(2.0)
_sum = np.add.reduce  # ndarray.sum without its Python wrapper


def _row_values(
    plan: drift_plan.DriftPlan, counts: np.ndarray, min_samples: int, ks_p_value: str
) -> tuple[np.ndarray, np.ndarray]:
    """[VALUES, rows] every value of every row (NaN where the row's kind has none, where
    it has fewer than min_samples values, and for a test's statistic and p-value where
    either side is empty), and [rows] the number of values in each row."""
    cum = np.cumsum(counts, axis=1, out=counts)  # counts are integers: exact
    n_col = cum[:, -1:]
    n = n_col[:, 0].copy()  # the report keeps it: not a view that holds the whole matrix
    out = np.full((len(drift_plan.VALUES), plan.rows), np.nan)
    a = plan.numeric_rows
    bounds = cum.take(plan.bucket_index)
    buckets = bounds[:, 1:] - bounds[:, :-1]
    _psi_js(plan, buckets / n_col, out)
    _ks_wasserstein(plan, cum[:a], n_col[:a], ks_p_value, out[:, :a])
    _chi_squared(plan, buckets[a:], n_col[a:], out[:, a:])
    enough = n >= min_samples
    tested = enough & (n > 0) & plan.n1_pos
    return np.where(np.where(plan.needs_both, tested, enough), out, np.nan), n


def _ks_wasserstein(
    plan: drift_plan.DriftPlan, cum: np.ndarray, n_col: np.ndarray, method: str, out: np.ndarray
) -> None:
    """KS statistic (out[2]) and p-value (out[5]), Wasserstein distance in units of the
    baseline's spread (out[3]) of the numeric rows, as `divergences.ks` and
    `divergences.wasserstein` compute them, equal to rounding: the live CDF here is the
    cumulative counts over the total, as KS has it, where `wasserstein` summed
    proportions, and the gaps between points come divided by the spread already. One
    buffer serves the whole chain (fewer cold cache lines after other work)."""
    gap = np.divide(cum, n_col)
    np.abs(np.subtract(plan.ref_cdf, gap, out=gap), out=gap)
    d = gap.max(axis=1, out=out[2])
    _sum(np.multiply(gap, plan.spread_gaps, out=gap), axis=1, out=out[3])
    n1, n2 = plan.n1_num, n_col[:, 0]
    p = stats.ks_p_value(d, n1 * n2 / (n1 + n2), method)
    np.clip(p, 0.0, 1.0, out=out[5])


def _psi_js(plan: drift_plan.DriftPlan, q: np.ndarray, out: np.ndarray) -> None:
    """PSI (out[0]) and Jensen–Shannon distance (out[1]) of the live proportions ``q``
    per bucket, as `divergences.psi` and `divergences.jensen_shannon` compute them. A
    bucket empty on both sides adds (eps - eps) * log(1) = 0 to PSI, so PSI needs no
    mask. (scipy's ``rel_entr`` would fold each Jensen–Shannon side into one call, but
    its logarithm is not numpy's, and a distance near 0 amplifies that difference.)"""
    p, pf = plan.ref_p, plan.ref_p_floor
    qf = np.maximum(q, stats.PSI_EPSILON)
    _sum((qf - pf) * np.log(qf / pf), axis=1, out=out[0])
    m = (p + q) / 2.0
    p_terms = _sum(np.where(plan.ref_p_pos, p * np.log(p / m), 0.0), axis=1)
    q_terms = _sum(np.where(q > 0, q * np.log(q / m), 0.0), axis=1)
    div = (p_terms + q_terms) / 2.0
    # `jensen_shannon` takes m as 1 where it is NaN (an empty reference or window): its
    # distance there is 0, never NaN; fmax makes the NaN this code gets 0 the same way
    np.sqrt(np.fmax(div / _LOG2, 0.0), out=out[1])


def _chi_squared(
    plan: drift_plan.DriftPlan, live: np.ndarray, n2: np.ndarray, out: np.ndarray
) -> None:
    """Chi-squared statistic (out[4]) and p-value (out[5]) of the categorical rows, as
    `divergences.chi_squared` computes them, equal to rounding: with d = ref n2 - live n1
    (exact on counts), (ref - e1)^2 / e1 + (live - e2)^2 / e2 = d^2 / (col n1 n2). Bins
    empty on both sides are dropped; a side with no values at all is masked by the
    caller."""
    ref, n1 = plan.ref_counts_cat, plan.n1_cat_col
    col = ref + live
    seen = col > 0
    d = ref * n2 - live * n1
    terms = np.where(seen, d * d / (col * (n1 * n2)), 0.0)
    stat = _sum(terms, axis=1, out=out[4])
    out[5] = stats.chi_squared_p_value(stat, _sum(seen, axis=1, dtype=np.int64) - 1)


def _feature_report(
    plan: drift_plan.DriftPlan,
    values: np.ndarray,
    n: np.ndarray,
    correction: str,
    thresholds: dict[str, float],
) -> DriftReport:
    rows = values[:, plan.features]
    by = dict(zip(drift_plan.VALUES, rows, strict=True))
    p = by.pop("p_value")
    effect = np.where(plan.feature_numeric, by["ks"], by["psi"])
    floor = plan.floors(thresholds["drift_ks_min"], thresholds["drift_psi_min"])
    p_adj = stats.adjust_p_values(p, correction)
    reported = p == p  # not NaN
    drifted = reported & (p_adj < thresholds["drift_alpha"]) & (effect >= floor)
    return DriftReport(
        features=plan.names,
        kinds=plan.kinds,
        n=n[plan.features],
        scores={m: by[m] for m in dict.fromkeys(NUMERIC_METHODS + CATEGORICAL_METHODS)},
        test=plan.tests,
        p_value=p,
        p_adjusted=p_adj,
        effect=effect,
        drifted=drifted,
        reported=reported,
    )


def _outputs(
    plan: drift_plan.DriftPlan, values: np.ndarray, n: np.ndarray, thresholds: dict[str, float]
) -> list[OutputDrift]:
    """The drift of the model's outputs, each tested alone (no correction)."""
    out = []
    alpha = thresholds["drift_alpha"]
    for name, row, numeric in plan.outputs:
        v = dict(zip(drift_plan.VALUES, values[:, row].tolist(), strict=True))
        methods = NUMERIC_METHODS if numeric else CATEGORICAL_METHODS
        effect = v["ks"] if numeric else v["psi"]
        floor = thresholds["drift_ks_min"] if numeric else thresholds["drift_psi_min"]
        p = v["p_value"]
        out.append(
            OutputDrift(
                output=name,
                n=int(n[row]),
                scores={m: v[m] for m in methods},
                p_value=p,
                drifted=bool(p < alpha and effect >= floor) if p == p else False,
            )
        )
    return out
