"""What ingest tells a sender about mistakes that are not its whole request's fault: feature
names the model does not have (ignored, but counted by name), and feature values refused by
feature and reason. Both are bounded by design; what they produce::

    mlmon_ingest_unknown_features_total{feature="agee",model="credit-risk"} 5000.0
    mlmon_ingest_unknown_features_total{feature="__other__",model="credit-risk"} 12.0
    mlmon_ingest_refused_values_total{feature="age",model="credit-risk",reason="type_error"} 3.0
    mlmon_ingest_refused_values_total{feature="age",model="credit-risk",reason="out_of_range"} 0.0
"""

from __future__ import annotations

from collections.abc import Iterator

from mlmon.core.fields import REFUSED_VALUE_REASONS
from mlmon.core.monitor import Monitor
from mlmon.metrics.exposition import Family
from mlmon.metrics.families import counter


def families(monitor: Monitor) -> Iterator[Family]:
    c = monitor.counters
    with c.lock:
        unknown = dict(c.unknown_features)
        refused = dict(c.refused_values)
    yield _unknown_features(monitor, unknown)
    yield _refused_values(monitor, refused)


def _unknown_features(monitor: Monitor, unknown: dict[tuple[str, str], int]) -> Family:
    fam = counter(
        "mlmon_ingest_unknown_features",
        "Accepted events that carried a feature name their model's config does not have, "
        "by model and name; the value was ignored (often a misspelt or renamed feature, "
        "which then counts as missing). The first limits.max_unknown_features names of a "
        "model get their own series, later ones (and names longer than "
        'limits.max_string_length) count under feature="__other__".',
        labels=["model", "feature"],
    )
    for (model, feature), n in sorted(unknown.items()):
        if model in monitor.models:
            fam.add_metric([model, feature], n)
    return fam


def _refused_values(monitor: Monitor, refused: dict[tuple[str, str, str], int]) -> Family:
    """Every configured feature with the reasons its kind can refuse starts at 0, so rate()
    and increase() see the first refusal."""
    fam = counter(
        "mlmon_ingest_refused_values",
        "Feature values refused at ingest, by model, feature and reason: type_error (not a "
        "number for a numeric feature; not a string, integer or boolean for a categorical "
        "one; not a list of numbers for an embedding), out_of_range (an integer too large "
        "for a float; a non-finite number in an embedding), wrong_length (an embedding of "
        "another length), too_long (a category over limits.max_string_length). Counted "
        "whether the batch was refused whole or, with ?partial=true, only the events that "
        "held them.",
        labels=["model", "feature", "reason"],
    )
    for name, m in monitor.models.items():
        keys = {
            (name, feature, reason): 0
            for feature, kind in m.schema.feature_kinds.items()
            for reason in REFUSED_VALUE_REASONS[kind]
        }
        keys.update((k, v) for k, v in refused.items() if k[0] == name)
        for (model, feature, reason), n in sorted(keys.items()):
            fam.add_metric([model, feature, reason], n)
    return fam
