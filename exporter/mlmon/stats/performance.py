"""Model performance from counts: classification metrics from a confusion matrix, ROC AUC
from binned scores, calibration, regression errors, label-free estimates, fairness and
version comparison. Pure numpy/scipy: no I/O, no HTTP, no Prometheus.

Undefined values (a denominator of zero) are NaN, never 0, so nothing is reported for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as _st


def _div(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


@dataclass
class ClassMetrics:
    """Per class (one-vs-rest), from a confusion matrix ``conf[predicted, actual]``."""

    accuracy: float
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    false_negative_rate: np.ndarray
    false_positive_rate: np.ndarray
    specificity: np.ndarray
    support: np.ndarray  # actual count per class

    def macro(self, values: np.ndarray) -> float:
        """Mean over the classes that occur among the labels (as scikit-learn's ``labels=``
        restricted to classes present), ignoring undefined values."""
        present = self.support > 0
        v = values[present]
        v = v[~np.isnan(v)]
        return float(v.mean()) if v.size else float("nan")


def classification(conf: np.ndarray) -> ClassMetrics:
    """``conf`` is square over the model's classes (rows: predicted, columns: actual)."""
    conf = np.asarray(conf, dtype=np.float64)
    total = conf.sum()
    tp = np.diag(conf)
    pred = conf.sum(axis=1)
    actual = conf.sum(axis=0)
    fp = pred - tp
    fn = actual - tp
    tn = total - tp - fp - fn
    precision = _div(tp, tp + fp)
    recall = _div(tp, tp + fn)
    f1 = _div(2 * tp, 2 * tp + fp + fn)
    return ClassMetrics(
        accuracy=float(_div(tp.sum(), total)),
        precision=precision,
        recall=recall,
        f1=f1,
        false_negative_rate=_div(fn, tp + fn),
        false_positive_rate=_div(fp, fp + tn),
        specificity=_div(tn, fp + tn),
        support=actual,
    )


def roc_auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Area under the ROC curve from counts of positive and negative labels per score bin
    (bins in increasing score order). Pairs within one bin count as ties (one half): this is
    the Mann-Whitney statistic, and equals ``roc_auc_score`` on scores quantised to bins."""
    pos = np.asarray(positives, dtype=np.float64)
    neg = np.asarray(negatives, dtype=np.float64)
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    neg_below = np.cumsum(neg) - neg
    return float((pos * (neg_below + 0.5 * neg)).sum() / (n_pos * n_neg))


def expected_calibration_error(
    score_sum: np.ndarray, count: np.ndarray, positives: np.ndarray
) -> float:
    """sum_b (n_b / N) |mean score_b - positive rate_b| over score bins."""
    count = np.asarray(count, dtype=np.float64)
    n = count.sum()
    if n == 0:
        return float("nan")
    keep = count > 0
    gap = np.abs(
        np.asarray(score_sum)[keep] / count[keep] - np.asarray(positives)[keep] / count[keep]
    )
    return float((count[keep] * gap).sum() / n)


@dataclass
class RegressionMetrics:
    mae: float
    rmse: float
    r2: float
    bias: float  # mean of prediction - label


def regression(
    n: float,
    err_sum: float,
    abs_err_sum: float,
    sq_err_sum: float,
    label_sum: float,
    label_sq_sum: float,
) -> RegressionMetrics:
    """From sums over the labelled predictions (err = prediction - label)."""
    if n <= 0:
        nan = float("nan")
        return RegressionMetrics(nan, nan, nan, nan)
    ss_tot = label_sq_sum - label_sum * label_sum / n
    r2 = 1.0 - sq_err_sum / ss_tot if ss_tot > 0 else float("nan")
    return RegressionMetrics(
        mae=abs_err_sum / n, rmse=float(np.sqrt(sq_err_sum / n)), r2=r2, bias=err_sum / n
    )


@dataclass
class Estimates:
    """Expected performance from the scores alone, assuming they are calibrated."""

    accuracy: float
    precision: float
    recall: float
    f1: float


def binary_estimates(
    p_pos_predicted_pos: float,
    n_predicted_pos: float,
    p_pos_predicted_neg: float,
    n_predicted_neg: float,
) -> Estimates:
    """``p_pos_*``: sums of the positive-class probability over the events predicted
    positive / negative. Expected TP = sum p over predicted positive, FP = their count - TP,
    FN = sum p over predicted negative, TN = their count - FN."""
    tp = p_pos_predicted_pos
    fp = n_predicted_pos - tp
    fn = p_pos_predicted_neg
    tn = n_predicted_neg - fn
    n = n_predicted_pos + n_predicted_neg
    return Estimates(
        accuracy=float(_div(tp + tn, n)),
        precision=float(_div(tp, tp + fp)),
        recall=float(_div(tp, tp + fn)),
        f1=float(_div(2 * tp, 2 * tp + fp + fn)),
    )


@dataclass
class GroupFairness:
    """Per group of one sensitive attribute; NaN where a group lacks samples."""

    selection_rate: np.ndarray
    true_positive_rate: np.ndarray
    false_positive_rate: np.ndarray
    reference: int  # index of the reference group, -1 when none qualifies
    disparate_impact: np.ndarray  # selection rate / the reference's
    demographic_parity_difference: np.ndarray  # selection rate - the reference's
    equal_opportunity_difference: np.ndarray  # TPR - the reference's
    # Two-sided p-values of the pooled two-proportion z-test against the reference group:
    # a gap this large would be this likely if both groups were treated alike. Small groups
    # and low selection rates make large ratios common by chance; alerts require both.
    selection_rate_p_value: np.ndarray
    true_positive_rate_p_value: np.ndarray


def fairness(
    predicted_pos: np.ndarray,
    predictions: np.ndarray,
    tp: np.ndarray,
    actual_pos: np.ndarray,
    fp: np.ndarray,
    actual_neg: np.ndarray,
    min_samples: int,
    reference: int | None = None,
) -> GroupFairness:
    """``reference`` None: the most favoured group (highest selection rate) among those with
    at least ``min_samples`` predictions."""
    enough = np.asarray(predictions) >= min_samples
    sel = np.where(enough, _div(predicted_pos, predictions), np.nan)
    labelled = np.asarray(actual_pos) + np.asarray(actual_neg)
    enough_labels = labelled >= min_samples
    tpr = np.where(enough_labels, _div(tp, actual_pos), np.nan)
    fpr = np.where(enough_labels, _div(fp, actual_neg), np.nan)
    if reference is None or not enough[reference]:
        reference = int(np.nanargmax(sel)) if np.isfinite(sel).any() else -1
    if reference < 0:
        nan = np.full(sel.shape, np.nan)
        return GroupFairness(sel, tpr, fpr, -1, nan, nan.copy(), nan.copy(), nan.copy(), nan.copy())
    r = reference
    predicted_pos, predictions = np.asarray(predicted_pos), np.asarray(predictions)
    tp, actual_pos = np.asarray(tp), np.asarray(actual_pos)
    sel_p = z_test_p_values(predicted_pos, predictions, predicted_pos[r], predictions[r])
    tpr_p = z_test_p_values(tp, actual_pos, tp[r], actual_pos[r])
    return GroupFairness(
        selection_rate=sel,
        true_positive_rate=tpr,
        false_positive_rate=fpr,
        reference=reference,
        disparate_impact=_div(sel, sel[reference]),
        demographic_parity_difference=sel - sel[reference],
        equal_opportunity_difference=tpr - tpr[reference],
        selection_rate_p_value=np.where(np.isnan(sel), np.nan, sel_p),
        true_positive_rate_p_value=np.where(np.isnan(tpr), np.nan, tpr_p),
    )


def z_test_p_values(k1: np.ndarray, n1: np.ndarray, k2: float, n2: float) -> np.ndarray:
    """`two_proportion_z_test`'s p-value for every k1[i]/n1[i] against k2/n2 at once."""
    k1, n1 = np.asarray(k1, dtype=float), np.asarray(n1, dtype=float)
    out = np.full(k1.shape, np.nan)
    if n2 <= 0:
        return out
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = (k1 + k2) / (n1 + n2)
        se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        z = (k1 / n1 - k2 / n2) / se
    p = 2 * _st.norm.sf(np.abs(z))
    ok = n1 > 0
    out[ok] = np.where(se[ok] == 0, 1.0, p[ok])
    return out


def two_proportion_z_test(k1: float, n1: float, k2: float, n2: float) -> tuple[float, float]:
    """Pooled two-proportion z-test of k1/n1 against k2/n2: (z, two-sided p-value)."""
    if n1 <= 0 or n2 <= 0:
        return float("nan"), float("nan")
    p = (k1 + k2) / (n1 + n2)
    se = np.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0
    z = (k1 / n1 - k2 / n2) / se
    return float(z), float(2 * _st.norm.sf(abs(z)))
