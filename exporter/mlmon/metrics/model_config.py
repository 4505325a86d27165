"""A model's identity and settings as series: its task and baseline, its window, the counts
a statistic needs before it is reported, and the thresholds alerts compare with (exported,
so one config value moves the alert, the dashboard's red line and the landing page)."""

from __future__ import annotations

from mlmon.core.config import THRESHOLDS
from mlmon.core.monitor import ModelMonitor
from mlmon.metrics.families import Families


def model_info(f: Families, m: ModelMonitor) -> None:
    s = m.schema
    name = s.name
    f.gauge(
        "mlmon_model_info",
        "Configured models; 1 per model.",
        ["model", "task", "baseline_hash"],
    ).add_metric([name, s.task, s.baseline_hash], 1)
    f.gauge(
        "mlmon_baseline_rows", "Rows of training data behind the baseline.", ["model"]
    ).add_metric([name], s.baseline_rows)
    if s.baseline_created is not None:
        f.gauge(
            "mlmon_baseline_created_timestamp_seconds",
            "When the baseline was built (mlmon baseline) or last re-baselined, in seconds "
            "since the epoch.",
            ["model"],
        ).add_metric([name], s.baseline_created)
    f.gauge(
        "mlmon_window_seconds",
        "Length of the sliding window behind every windowed gauge.",
        ["model"],
    ).add_metric([name], s.config.window.length_seconds)


def minimum_counts(f: Families, m: ModelMonitor) -> None:
    s = m.schema
    name = s.name
    f.gauge(
        "mlmon_drift_min_samples",
        "Present values a feature needs in the window before it is tested for drift.",
        ["model"],
    ).add_metric([name], s.config.drift.min_samples)
    f.gauge(
        "mlmon_performance_min_labels",
        "Labelled predictions a window needs before performance is reported.",
        ["model"],
    ).add_metric([name], s.config.performance.min_labels)
    f.gauge(
        "mlmon_fairness_min_samples",
        "Predictions (and labels) a group needs before its fairness is reported.",
        ["model"],
    ).add_metric([name], s.config.fairness.min_samples)


def thresholds(f: Families, m: ModelMonitor) -> None:
    for key in THRESHOLDS:
        f.gauge(f"mlmon_threshold_{key}", THRESHOLDS[key][1], ["model"]).add_metric(
            [m.name], m.thresholds[key]
        )
