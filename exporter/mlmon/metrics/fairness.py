"""Fairness across the sensitive attributes' groups: counters per group (binary models), so
PromQL can aggregate replicas, and the windowed rates and their gaps to a reference group."""

from __future__ import annotations

import numpy as np

from mlmon.core.baseline import OTHER
from mlmon.core.monitor import ModelMonitor, VersionView
from mlmon.core.state import Layout
from mlmon.metrics.families import MV, Families
from mlmon.metrics.performance import binary_outcomes
from mlmon.stats.evaluation import FairnessReport

# (GroupFairness attribute, help, whether the series names the reference group)
_RATES = (
    ("selection_rate", "Share of a group's predictions that are positive.", False),
    ("true_positive_rate", "A group's true-positive rate.", False),
    ("false_positive_rate", "A group's false-positive rate.", False),
    (
        "disparate_impact",
        "A group's selection rate divided by the reference group's.",
        True,
    ),
    (
        "demographic_parity_difference",
        "A group's selection rate minus the reference group's.",
        True,
    ),
    (
        "equal_opportunity_difference",
        "A group's true-positive rate minus the reference group's.",
        True,
    ),
    (
        "selection_rate_p_value",
        "Two-sided p-value of a group's selection rate against the reference group's "
        "(two-proportion z-test): how likely a gap this large is by chance.",
        True,
    ),
    (
        "true_positive_rate_p_value",
        "Two-sided p-value of a group's true-positive rate against the reference group's "
        "(two-proportion z-test).",
        True,
    ),
)


def group_counts(f: Families, m: ModelMonitor, view: VersionView, mv: list[str]) -> None:
    """Predictions and outcomes per sensitive group of a binary model."""
    s, lay, v = m.schema, m.layout, Layout.view
    if s.task != "binary" or not s.config.sensitive_attributes:
        return
    pred, conf = v(view.snapshot.total, lay.group_pred), v(view.snapshot.total, lay.group_conf)
    k, n = s.positive_index, len(s.classes)
    fp_ = f.counter(
        "mlmon_group_predictions",
        "Predictions per sensitive group, positive or negative.",
        [*MV, "attribute", "group", "predicted"],
    )
    fo = f.counter(
        "mlmon_group_outcomes",
        "Labelled predictions per sensitive group by outcome (tp, fp, fn, tn).",
        [*MV, "attribute", "group", "outcome"],
    )
    for a, attr in enumerate(s.config.sensitive_attributes):
        for g, group in enumerate(m.group_names[a]):
            row = pred[a, g if group != OTHER else pred.shape[1] - 1]
            fp_.add_metric([*mv, attr, group, "positive"], row[k])
            fp_.add_metric([*mv, attr, group, "negative"], row[:n].sum() - row[k])
            c = conf[a, g if group != OTHER else conf.shape[1] - 1, :n, :n]
            for outcome, value in binary_outcomes(c, k):
                fo.add_metric([*mv, attr, group, outcome], value)


def rates(f: Families, m: ModelMonitor, view: VersionView, mv: list[str]) -> None:
    """The windowed rates of each sensitive attribute's groups."""
    for fr in view.performance.fairness:
        _attribute(f, mv, fr)


def _attribute(f: Families, mv: list[str], fr: FairnessReport) -> None:
    lab = [*MV, "attribute", "group"]
    g = fr.metrics
    ref = fr.groups[g.reference] if g.reference >= 0 else ""
    for name, doc, with_ref in _RATES:
        values = getattr(g, name)
        fam = f.gauge(
            f"mlmon_fairness_{name}",
            doc + " Windowed.",
            [*lab, "reference"] if with_ref else lab,
        )
        for i, group in enumerate(fr.groups):
            if not np.isnan(values[i]):
                fam.add_metric([*mv, fr.attribute, group, *([ref] if with_ref else [])], values[i])
