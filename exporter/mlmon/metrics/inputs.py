"""A model's inputs: each feature's baseline distribution, and per version its live values
(histograms on the baseline's edges, category counts), missing and out-of-range values."""

from __future__ import annotations

from mlmon.core.baseline import OTHER
from mlmon.core.monitor import ModelMonitor, VersionView
from mlmon.core.state import Layout
from mlmon.metrics import rows
from mlmon.metrics.families import MV, Families, coarse_cumulative


def baseline(f: Families, m: ModelMonitor) -> None:
    _baseline_values(f, m)
    _baseline_missing(f, m)
    _baseline_categories(f, m)
    _embeddings(f, m)


def _embeddings(f: Families, m: ModelMonitor) -> None:
    """Each embedding's projection: how much of the baseline's variance its components
    keep, and how many there are (monitored as features <name>.pc1 ...)."""
    if not m.schema.embeddings:
        return
    share = f.gauge(
        "mlmon_embedding_explained_variance",
        "Share (0-1) of an embedding feature's baseline variance that the principal "
        "components it is monitored through explain.",
        ["model", "feature"],
    )
    count = f.gauge(
        "mlmon_embedding_components",
        "Principal components an embedding feature is monitored through, each as the "
        "numeric feature <feature>.pc1, <feature>.pc2, ...",
        ["model", "feature"],
    )
    for e in m.schema.embeddings:
        share.add_metric([m.name, e.name], float(e.projection.explained_variance_ratio.sum()))
        count.add_metric([m.name, e.name], e.projection.k)


def _baseline_values(f: Families, m: ModelMonitor) -> None:
    num = m.schema.numeric
    if not len(num):
        return
    fam = f.histogram(
        "mlmon_feature_baseline",
        "Baseline (training) distribution of a "
        "numeric feature, on the same buckets as mlmon_feature_value.",
        ["model", "feature"],
    )
    fam.add_histograms(
        [(m.name, feat) for feat in num.names],
        num.coarse_edges,
        num.coarse_cumulative(num.ref_counts),
        num.ref_counts.sum(axis=-1),
        num.ref_sum,
    )


def _baseline_missing(f: Families, m: ModelMonitor) -> None:
    s = m.schema
    num, cat = s.numeric, s.categorical
    fam = f.gauge(
        "mlmon_feature_baseline_missing_ratio",
        "Share of baseline rows where the feature is missing.",
        ["model", "feature"],
    )
    rows = max(s.baseline_rows, 1)
    for j, feat in enumerate(num.names):
        fam.add_metric([m.name, feat], num.ref_missing[j] / rows)
    for j, feat in enumerate(cat.names):
        fam.add_metric([m.name, feat], cat.ref_missing[j] / rows)


def _baseline_categories(f: Families, m: ModelMonitor) -> None:
    cat = m.schema.categorical
    if not len(cat):
        return
    fam = f.gauge(
        "mlmon_feature_baseline_category_ratio",
        "Share of each category among the baseline's present values.",
        ["model", "feature", "category"],
    )
    for j, feat in enumerate(cat.names):
        ref = cat.ref_counts[j]
        n = ref.sum() or 1.0
        for k, c in enumerate(cat.categories[j]):
            fam.add_metric([m.name, feat, c], ref[k] / n)


def values(f: Families, m: ModelMonitor, view: VersionView, mv: list[str]) -> None:
    _numeric(f, m, view, mv)
    _missing(f, m, view, mv)
    _categories(f, m, view, mv)


def _numeric(f: Families, m: ModelMonitor, view: VersionView, mv: list[str]) -> None:
    num, lay, v = m.schema.numeric, m.layout, Layout.view
    if not len(num):
        return
    t, ft = view.snapshot.total, view.snapshot.ftotal
    fam = f.histogram(
        "mlmon_feature_value",
        "Values of a numeric feature; buckets are the baseline's edges.",
        [*MV, "feature"],
    )
    counts = v(t, lay.num_bins)
    fam.add_histograms(
        rows.rows(mv, num.names),
        num.coarse_edges,
        coarse_cumulative(num, counts),
        counts.sum(axis=-1),
        v(ft, lay.num_sum),
    )
    fam = f.counter(
        "mlmon_feature_out_of_range",
        "Values of a numeric feature outside the baseline's [min, max].",
        [*MV, "feature"],
    )
    oor = v(t, lay.num_below) + v(t, lay.num_above)
    fam.add_many(rows.rows(mv, num.names), oor)


def _missing(f: Families, m: ModelMonitor, view: VersionView, mv: list[str]) -> None:
    s, lay, v = m.schema, m.layout, Layout.view
    t = view.snapshot.total
    miss = f.counter(
        "mlmon_feature_missing",
        "Missing values (absent, null, NaN, infinite) of a feature.",
        [*MV, "feature"],
    )
    miss.add_many(rows.rows(mv, s.numeric.names), v(t, lay.num_missing))
    miss.add_many(rows.rows(mv, s.categorical.names), v(t, lay.cat_missing))


def _categories(f: Families, m: ModelMonitor, view: VersionView, mv: list[str]) -> None:
    cat, lay, v = m.schema.categorical, m.layout, Layout.view
    if not len(cat):
        return
    fam = f.counter(
        "mlmon_feature_category",
        "Values of a categorical feature; "
        f"categories outside the baseline vocabulary count as {OTHER}.",
        [*MV, "feature", "category"],
    )
    cc = v(view.snapshot.total, lay.cat_bins)
    for j, feat in enumerate(cat.names):
        cs = cat.categories[j]
        fam.add_many(rows.rows((*mv, feat), cs), cc[j, : len(cs)])
