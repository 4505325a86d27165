"""Feature attributions (explainability), per version over the window: each feature's
global attribution (mean |attribution|, e.g. of SHAP values) and its shift from the
baseline, the events that carried one, and the ranking's agreement with the baseline
(NDCG, as SageMaker Clarify scores attribution drift)::

    mlmon_feature_attribution{feature="income",model="credit-risk",version="v3"} 0.41
    mlmon_feature_attribution_shift{feature="income",model="credit-risk",version="v3"} 0.12
    mlmon_attribution_drift_score{method="ndcg",model="credit-risk",version="v3"} 0.83
    mlmon_attribution_drifted{model="credit-risk",version="v3"} 1.0

Nothing for a version whose window carried no attributions.
"""

from __future__ import annotations

import numpy as np

from mlmon.core.monitor import ModelMonitor, VersionView
from mlmon.metrics.families import MV, Families


def baseline(f: Families, m: ModelMonitor) -> None:
    """The baseline's global attribution of each feature that had attributions."""
    base = m.schema.attribution_baseline
    if base is None:
        return
    names = m.schema.attribution_names
    keep = np.flatnonzero(~np.isnan(base)).tolist()
    f.gauge(
        "mlmon_baseline_feature_attribution",
        "A feature's global attribution (mean |attribution|) in the baseline data.",
        ["model", "feature"],
    ).add_many([(m.name, names[i]) for i in keep], base[keep])


def windowed(f: Families, m: ModelMonitor, view: VersionView, mv: list[str]) -> None:
    r = view.attribution
    carried = np.flatnonzero(r.events > 0).tolist()
    if not carried:
        return
    names = m.schema.attribution_names
    labels = [(*mv, names[i]) for i in carried]
    f.gauge(
        "mlmon_feature_attribution_events",
        "Events in the window that carried the feature's attribution.",
        [*MV, "feature"],
    ).add_many(labels, r.events[carried].astype(float))
    f.gauge(
        "mlmon_feature_attribution",
        "A feature's global attribution in the window: the mean absolute attribution of "
        "the events that carried one.",
        [*MV, "feature"],
    ).add_many(labels, r.live[carried])
    shifted = [i for i in carried if not np.isnan(r.shift[i])]
    f.gauge(
        "mlmon_feature_attribution_shift",
        "A feature's global attribution in the window minus the baseline's, in the model "
        "output's units.",
        [*MV, "feature"],
    ).add_many([(*mv, names[i]) for i in shifted], r.shift[shifted])
    if not r.reported:
        return
    f.gauge(
        "mlmon_attribution_drift_score",
        "Agreement of the window's ranking of features by global attribution with the "
        "baseline's, by method (ndcg: 1 is the same ranking).",
        [*MV, "method"],
    ).add_metric([*mv, "ndcg"], r.ndcg)
    f.gauge(
        "mlmon_attribution_drifted",
        "1 when the attribution ranking's NDCG is below attribution_ndcg_min, else 0.",
        MV,
    ).add_metric(mv, float(r.drifted))
