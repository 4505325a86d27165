"""A model's outputs: the baseline's distribution of predicted values, classes and scores,
and per version the live ones and the predictions that were unusable."""

from __future__ import annotations

import numpy as np

from mlmon.core.baseline import OTHER
from mlmon.core.monitor import ModelMonitor, VersionView
from mlmon.core.schema import NumericBlock
from mlmon.core.state import Layout
from mlmon.metrics import rows
from mlmon.metrics.exposition import Family
from mlmon.metrics.families import MV, Families, coarse_cumulative


def baseline(f: Families, m: ModelMonitor) -> None:
    s = m.schema
    if s.prediction_numeric is not None:
        b = s.prediction_numeric
        _histogram(
            f.histogram(
                "mlmon_prediction_baseline",
                "Baseline distribution of predicted values.",
                ["model"],
            ),
            b,
            b.ref_counts,
            float(b.ref_sum[0]),
            [m.name],
        )
    if s.prediction_classes is not None:
        fam = f.gauge(
            "mlmon_prediction_baseline_class_ratio",
            "Share of each class in the baseline's predictions (or labels).",
            ["model", "class"],
        )
        ref = s.prediction_classes.ref_counts[0]
        n = ref.sum() or 1.0
        for k, c in enumerate(s.prediction_classes.categories[0]):
            fam.add_metric([m.name, c], ref[k] / n)
    if s.score is not None:
        b = s.score
        _histogram(
            f.histogram(
                "mlmon_prediction_baseline_score", "Baseline distribution of scores.", ["model"]
            ),
            b,
            b.ref_counts,
            float(b.ref_sum[0]),
            [m.name],
        )


def values(f: Families, m: ModelMonitor, view: VersionView, mv: list[str]) -> None:
    s, lay, v = m.schema, m.layout, Layout.view
    t, ft = view.snapshot.total, view.snapshot.ftotal
    f.counter(
        "mlmon_prediction_missing",
        "Successful inferences without a usable prediction (NaN or infinite values).",
        MV,
    ).add_metric(mv, t[lay.pred_missing.start])
    if s.prediction_numeric is not None:
        _histogram(
            f.histogram(
                "mlmon_prediction_value",
                "Predicted values (regression); buckets are the baseline's edges.",
                MV,
            ),
            s.prediction_numeric,
            v(t, lay.pred_bins),
            ft[lay.pred_sum.start],
            mv,
        )
    if s.prediction_classes is not None:
        fam = f.counter(
            "mlmon_prediction_class",
            f"Predicted classes; unknown classes count as {OTHER}.",
            [*MV, "class"],
        )
        classes = s.prediction_classes.categories[0]
        fam.add_many(rows.rows(mv, classes), v(t, lay.pred_bins)[0, : len(classes)])
    if s.score is not None:
        _histogram(
            f.histogram(
                "mlmon_prediction_score",
                "Score the model gave: the "
                "positive class's probability (binary) or the top class's "
                "(multiclass).",
                MV,
            ),
            s.score,
            v(t, lay.score_bins),
            ft[lay.score_sum.start],
            mv,
        )


def _histogram(
    fam: Family,
    block: NumericBlock,
    counts: np.ndarray,
    total: float,
    labels: list[str],
) -> None:
    """The one column of ``block`` as a histogram on its coarse edges."""
    cum = coarse_cumulative(block, counts)[0]
    edges = block.coarse_edges[0]
    fam.add(labels, edges, cum[: len(edges)], counts.sum(), total)
