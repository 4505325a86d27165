"""The fixed vocabularies: model tasks, feature kinds, thresholds and their defaults, the
request limits, failure and close reasons, the default listen addresses."""

from __future__ import annotations

import re

TASKS = ("binary", "multiclass", "regression")
KINDS = ("numeric", "categorical", "embedding")
# Principal components an embedding feature is monitored through when the config names none.
DEFAULT_EMBEDDING_COMPONENTS = 10
CORRECTIONS = ("benjamini-hochberg", "bonferroni", "none")
NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

# Every threshold a model exports as `mlmon_threshold_<name>`; alerts and dashboards read
# these series, so one config value moves the alert and the red line together.
THRESHOLDS: dict[str, tuple[float, str]] = {
    "attribution_ndcg_min": (
        0.9,
        "Lowest acceptable NDCG of the window's feature-attribution ranking against the "
        "baseline's (SageMaker Clarify's default).",
    ),
    "drift_alpha": (
        0.05,
        "Significance level for drift tests, after multiple-testing correction.",
    ),
    "drift_ks_min": (
        0.1,
        "Smallest KS statistic that counts as drift for a numeric feature (effect-size floor).",
    ),
    "drift_psi_min": (
        0.1,
        "Smallest PSI that counts as drift for a categorical feature (effect-size floor).",
    ),
    "drifted_features_ratio_max": (
        0.3,
        "Share of a model's features that may drift before the whole dataset counts as drifted.",
    ),
    "missing_ratio_increase_max": (
        0.05,
        "How far a feature's missing-value ratio may rise above its baseline ratio.",
    ),
    "out_of_range_ratio_max": (
        0.05,
        "Share of a numeric feature's values that may fall outside the baseline's [min, max].",
    ),
    "unseen_category_ratio_increase_max": (
        0.05,
        "How far the share of categories outside the baseline vocabulary may rise above baseline.",
    ),
    "error_ratio_max": (
        0.01,
        "Error budget: the share of inferences that may fail (0.01 is a 99% success objective).",
    ),
    "latency_p99_seconds_max": (
        0.5,
        "Largest acceptable 99th-percentile inference latency, in seconds.",
    ),
    "request_rate_min": (
        0.0,
        "Inferences per second below which traffic counts as stopped (0: only a full stop).",
    ),
    "accuracy_min": (
        0.7,
        "Lowest acceptable accuracy of the labelled predictions.",
    ),
    "f1_min": (
        0.5,
        "Lowest acceptable F1 (the positive class for binary models, macro for multiclass).",
    ),
    "false_negative_rate_max": (
        0.5,
        "Highest acceptable false-negative rate of the positive class (binary models).",
    ),
    "calibration_error_max": (
        0.1,
        "Highest acceptable expected calibration error of the scores.",
    ),
    "disparate_impact_min": (
        0.8,
        "Lowest acceptable ratio of a group's selection rate to the reference group's "
        "(the four-fifths rule).",
    ),
    "fairness_p_value_max": (
        0.05,
        "Significance level below which a group's gap to the reference group counts as real "
        "(fairness alerts need both the gap and this).",
    ),
    "demographic_parity_difference_max": (
        0.1,
        "Largest acceptable absolute difference between a group's selection rate and the "
        "reference group's (0.1: ten percentage points).",
    ),
    "equal_opportunity_difference_max": (
        0.1,
        "Largest acceptable absolute difference between a group's true-positive rate and the "
        "reference group's (0.1: ten percentage points).",
    ),
    "regression_error_ratio_max": (
        1.5,
        "Largest acceptable ratio of a regression model's live MAE (and RMSE) to the baseline "
        "data's (1.5: half as large again as in training).",
    ),
    "challenger_p_value_max": (
        0.05,
        "Significance level below which a challenger's accuracy difference counts as real.",
    ),
}

LIMIT_DEFAULTS: dict[str, int] = {
    "max_body_bytes": 10 * 1024 * 1024,
    "max_batch_events": 10_000,
    "max_features_per_event": 1_000,
    "max_string_length": 256,
    "max_versions": 10,
    "max_groups": 20,
    "max_classes": 50,
    # feature names a model does not have that get their own series in
    # mlmon_ingest_unknown_features_total (a misspelling or two, a renamed column); the
    # rest of a flood counts under __other__
    "max_unknown_features": 20,
}

FAILURE_REASONS = (
    "timeout",
    "invalid_input",
    "model_error",
    "upstream_unavailable",
    "overloaded",
    "other",
)

# `reason` of mlmon_http_connections_closed_total: why the server closed a connection.
CLOSE_REASONS = (
    "header_timeout",
    "body_timeout",
    "idle_timeout",
    "send_timeout",
    "evicted",
    "refused",
    "bad_request",
    "head_too_large",
)

DEFAULT_LISTEN = "127.0.0.1:9797"
DEFAULT_PROXY_LISTEN = "127.0.0.1:9798"
