"""Champion and challengers: each challenger version's accuracy, predictions and latency
against the champion's, over the window."""

from __future__ import annotations

import numpy as np

from mlmon.core.monitor import ModelMonitor, VersionView
from mlmon.metrics.families import Families


def comparisons(f: Families, m: ModelMonitor, views: list[VersionView]) -> None:
    labels = ["model", "version", "champion"]
    diff = f.gauge(
        "mlmon_version_accuracy_difference",
        "Windowed accuracy of a challenger minus the champion's.",
        labels,
    )
    pval = f.gauge(
        "mlmon_version_accuracy_p_value",
        "Two-proportion z-test p-value of the accuracy difference.",
        labels,
    )
    drift_ = f.gauge(
        "mlmon_version_prediction_drift",
        "Drift of a challenger's predictions "
        "against the champion's (ks on scores or values, js on classes).",
        [*labels, "method"],
    )
    lat = f.gauge(
        "mlmon_version_latency_ratio",
        "A challenger's mean latency divided by the champion's.",
        labels,
    )
    for c in m.comparisons(views):
        lab = [m.name, c.challenger, c.champion]
        if not np.isnan(c.accuracy_difference):
            diff.add_metric(lab, c.accuracy_difference)
            pval.add_metric(lab, c.p_value)
        for method, value in c.prediction_drift.items():
            drift_.add_metric([*lab, method], value)
        if not np.isnan(c.latency_ratio):
            lat.add_metric(lab, c.latency_ratio)
