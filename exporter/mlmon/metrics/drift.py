"""Drift over the window, per version: how many features were tested and drifted, each
feature's scores and p-values by method, and the drift of the model's output."""

from __future__ import annotations

import numpy as np

from mlmon.core.monitor import ModelMonitor, VersionView
from mlmon.metrics import rows
from mlmon.metrics.families import MV, Families
from mlmon.stats.joint import METHOD


def summary(f: Families, m: ModelMonitor, view: VersionView, mv: list[str]) -> None:
    r = view.report
    f.gauge("mlmon_window_events", "Inferences inside the sliding window.", MV).add_metric(
        mv, view.snapshot.window[m.layout.events.start]
    )
    f.gauge(
        "mlmon_tested_features",
        "Features with enough values in the window to be tested for drift.",
        MV,
    ).add_metric(mv, r.tested_count)
    f.gauge(
        "mlmon_drifted_features",
        "Features drifted in the window (corrected "
        "p-value below alpha and effect at least its floor).",
        MV,
    ).add_metric(mv, r.drifted_count)


def features(f: Families, m: ModelMonitor, view: VersionView, mv: list[str]) -> None:
    """Scores, p-values and the drifted flag of every feature tested in the window; the
    samples of each family are added in one call."""
    r = view.report
    score = f.gauge(
        "mlmon_feature_drift_score",
        "Windowed drift of a feature against "
        "the baseline, by method (psi, js, ks, wasserstein, chi2).",
        [*MV, "feature", "method"],
    )
    pval = f.gauge(
        "mlmon_feature_drift_p_value",
        "Windowed p-value of a feature's drift test (ks or chi2), uncorrected.",
        [*MV, "feature", "method"],
    )
    padj = f.gauge(
        "mlmon_feature_drift_adjusted_p_value",
        "The p-value after multiple-testing correction across the model's features.",
        [*MV, "feature", "method"],
    )
    flag = f.gauge(
        "mlmon_feature_drifted",
        "1 when the feature counts as drifted in the window, else 0.",
        [*MV, "feature"],
    )
    reported = r.reported
    for method, arr in r.scores.items():
        keep = reported & (arr == arr)  # not NaN
        score.add_many(rows.table(rows.rows(mv, r.features, method))[keep].tolist(), arr[keep])
    tests = rows.table(rows.pairs(mv, r.features, r.test))[reported].tolist()
    pval.add_many(tests, r.p_value[reported])
    padj.add_many(tests, r.p_adjusted[reported])
    feats = rows.table(rows.rows(mv, r.features))[reported].tolist()
    flag.add_many(feats, r.drifted[reported].astype(float))


def outputs(f: Families, m: ModelMonitor, view: VersionView, mv: list[str]) -> None:
    """Drift of the model's output (value, class or score) against the baseline."""
    pscore = f.gauge(
        "mlmon_prediction_drift_score",
        "Windowed drift of the model's output (value, class or score) against the baseline.",
        [*MV, "output", "method"],
    )
    pp = f.gauge(
        "mlmon_prediction_drift_p_value",
        "Windowed p-value of the output's drift test.",
        [*MV, "output", "method"],
    )
    pflag = f.gauge(
        "mlmon_prediction_drifted", "1 when the output counts as drifted.", [*MV, "output"]
    )
    for o in view.report.outputs:
        if np.isnan(o.p_value):
            continue
        for method, val in o.scores.items():
            pscore.add_metric([*mv, o.output, method], val)
        pp.add_metric([*mv, o.output, "ks" if "ks" in o.scores else "chi2"], o.p_value)
        pflag.add_metric([*mv, o.output], float(o.drifted))


def joint_baseline(f: Families, m: ModelMonitor) -> None:
    """The baseline's multivariate model: its components and the variance they explain."""
    model = m.schema.joint
    if model is None:
        return
    rec = model.reconstruction
    f.gauge(
        "mlmon_multivariate_components",
        "Principal components the multivariate drift model keeps from the baseline.",
        ["model"],
    ).add_metric([m.name], rec.n_components)
    f.gauge(
        "mlmon_multivariate_explained_variance",
        "Share of the baseline's (encoded) variance those components explain.",
        ["model"],
    ).add_metric([m.name], rec.explained_variance)


def joint(f: Families, m: ModelMonitor, view: VersionView, mv: list[str]) -> None:
    """Multivariate drift of the window: the mean reconstruction error of its events, its
    threshold and the decision (once the window holds min_samples events)."""
    r = view.joint
    if r is None or not r.reported:
        return
    method = [*MV, "method"]
    f.gauge(
        "mlmon_multivariate_drift_score",
        "Windowed multivariate drift by method (pca_reconstruction: the events' mean "
        "reconstruction error by the baseline's principal components).",
        method,
    ).add_metric([*mv, METHOD], r.score)
    f.gauge(
        "mlmon_multivariate_drift_threshold",
        "The score above which the window counts as drifted, for its number of events.",
        method,
    ).add_metric([*mv, METHOD], r.threshold)
    f.gauge(
        "mlmon_multivariate_drifted",
        "1 when the window's multivariate drift score is above its threshold, else 0.",
        MV,
    ).add_metric(mv, float(r.drifted))


def embeddings(f: Families, m: ModelMonitor, view: VersionView, mv: list[str]) -> None:
    """Each embedding's drift as a whole: the window's mean distance of its vectors to the
    baseline's principal subspace, its threshold and the decision (once the window holds
    min_samples vectors of that embedding)."""
    reports = [(name, r) for name, r in view.embeddings if r.reported]
    if not reports:
        return
    mvf = [*MV, "feature"]
    method = [*mvf, "method"]
    score = f.gauge(
        "mlmon_embedding_drift_score",
        "Windowed drift of an embedding feature as a whole by method (pca_reconstruction: "
        "the vectors' mean distance to the baseline's principal components).",
        method,
    )
    upper = f.gauge(
        "mlmon_embedding_drift_threshold",
        "The embedding score above which the window counts as drifted, for its number of vectors.",
        method,
    )
    flag = f.gauge(
        "mlmon_embedding_drifted",
        "1 when the window's embedding drift score is above its threshold, else 0.",
        mvf,
    )
    for name, r in reports:
        score.add_metric([*mv, name, METHOD], r.score)
        upper.add_metric([*mv, name, METHOD], r.threshold)
        flag.add_metric([*mv, name], float(r.drifted))
