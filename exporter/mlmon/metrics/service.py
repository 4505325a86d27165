"""Service metrics of a model version: inferences, failures by reason, latency."""

from __future__ import annotations

import numpy as np

from mlmon.core.config import FAILURE_REASONS
from mlmon.core.monitor import ModelMonitor, VersionView
from mlmon.core.state import LATENCY_BUCKETS, Layout
from mlmon.metrics import rows
from mlmon.metrics.families import MV, Families


def inferences(f: Families, m: ModelMonitor, view: VersionView, mv: list[str]) -> None:
    lay, v = m.layout, Layout.view
    t, ft = view.snapshot.total, view.snapshot.ftotal
    f.counter(
        "mlmon_inference_requests", "Inferences recorded (failed ones included).", MV
    ).add_metric(mv, t[lay.events.start])
    f.counter(
        "mlmon_profiled_events",
        "Successful inferences whose inputs and outputs were profiled.",
        MV,
    ).add_metric(mv, t[lay.ok_events.start])
    fam = f.counter("mlmon_inference_failures", "Failed inferences, by reason.", [*MV, "reason"])
    fam.add_many(rows.rows(mv, FAILURE_REASONS), v(t, lay.failures)[: len(FAILURE_REASONS)])
    lat = v(t, lay.latency)
    f.histogram(
        "mlmon_inference_latency_seconds",
        "Inference latency reported by the model server.",
        MV,
    ).add(mv, LATENCY_BUCKETS, np.cumsum(lat)[:-1], lat.sum(), ft[lay.latency_sum.start])
