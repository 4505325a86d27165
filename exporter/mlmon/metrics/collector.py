"""The only module that builds Prometheus metric families.

`MlmonCollector` renders fresh families from the monitor's count vectors at every scrape;
ingest never formats text and a scrape never touches raw events. A sample of what one
binary model with one numeric feature produces::

    mlmon_inference_requests_total{model="credit-risk",version="v3"} 5000.0
    mlmon_feature_value_bucket{feature="age",le="23.0",model="credit-risk",version="v3"} 498.0
    mlmon_feature_value_bucket{feature="age",le="+Inf",model="credit-risk",version="v3"} 4990.0
    mlmon_feature_value_count{feature="age",model="credit-risk",version="v3"} 4990.0
    mlmon_feature_value_sum{feature="age",model="credit-risk",version="v3"} 209580.0
    mlmon_feature_baseline_bucket{feature="age",le="23.0",model="credit-risk"} 1000.0
    mlmon_feature_drift_score{feature="age",method="ks",model="credit-risk",version="v3"} 0.38
    mlmon_feature_drifted{feature="age",model="credit-risk",version="v3"} 1.0
    mlmon_threshold_drift_ks_min{model="credit-risk"} 0.1
"""

from __future__ import annotations

import platform
from collections.abc import Iterator, Sequence

import numpy as np
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from mlmon import __version__
from mlmon.capture.counters import DURATION_BUCKETS, ProxyStats
from mlmon.capture.protocols import PROTOCOLS
from mlmon.core.baseline import OTHER
from mlmon.core.config import FAILURE_REASONS, THRESHOLDS
from mlmon.core.monitor import ModelMonitor, Monitor
from mlmon.core.schema import NumericBlock
from mlmon.core.state import ABS_ERROR_SCALE, LABEL_DELAY_BUCKETS, LATENCY_BUCKETS, Layout
from mlmon.metrics.exposition import Family
from mlmon.stats.evaluation import CLASS_METRICS

MV = ["model", "version"]


def _gauge(name: str, doc: str, labels: Sequence[str] = (), value: float | None = None) -> Family:
    return Family(name, doc, "gauge", labels, value)


def _counter(name: str, doc: str, labels: Sequence[str] = ()) -> Family:
    return Family(name, doc, "counter", labels)


def _histogram(name: str, doc: str, labels: Sequence[str]) -> Family:
    return Family(name, doc, "histogram", labels)


class MlmonCollector(Collector):
    def __init__(self, monitor: Monitor, proxy: ProxyStats | None = None) -> None:
        self.monitor = monitor
        self.proxy = proxy

    def collect(self) -> Iterator[Metric]:
        """The families as prometheus_client metrics (the registry's interface)."""
        for fam in self.families():
            yield fam.to_metric()

    def families(self) -> Iterator[Family]:
        """Every family of this scrape, for `exposition.Renderer`."""
        mon = self.monitor
        yield from self._exporter_families()
        if self.proxy is not None:
            yield from self._proxy_families(self.proxy)
        families = _Families()
        for model in mon.models.values():
            self._model(families, model)
        yield from families.all()

    def _exporter_families(self) -> Iterator[Metric]:
        build = _gauge(
            "mlmon_build_info", "mlmon build information.", labels=["version", "python_version"]
        )
        build.add_metric([__version__, platform.python_version()], 1.0)
        yield build
        c = self.monitor.counters
        with c.lock:
            requests = dict(c.requests)
            rejected = dict(c.rejected)
            events = dict(c.events)
            rejected_events = dict(c.rejected_events)
            limits = dict(c.limit_hits)
            closed = {("exporter", r): v for r, v in c.connections_closed.items()}
        if self.proxy is not None:
            closed.update(
                (("proxy", r), v) for r, v in self.proxy.snapshot()["connections_closed"].items()
            )
        fam = _counter(
            "mlmon_http_connections_closed",
            "Connections the exporter's or the proxy's HTTP server closed, by reason: "
            "timeouts, evictions at the connection cap, malformed or oversized heads.",
            labels=["server", "reason"],
        )
        for (server, reason), v in sorted(closed.items()):
            fam.add_metric([server, reason], v)
        yield fam
        fam = _counter(
            "mlmon_ingest_requests",
            "Requests received by the ingest API, by endpoint.",
            labels=["endpoint"],
        )
        for k, v in sorted(requests.items()):
            fam.add_metric([k], v)
        yield fam
        fam = _counter(
            "mlmon_ingest_rejected_requests",
            "Ingest requests refused, by endpoint and reason.",
            labels=["endpoint", "reason"],
        )
        for (ep, reason), v in sorted(rejected.items()):
            fam.add_metric([ep, reason], v)
        yield fam
        fam = _counter("mlmon_ingest_events", "Events accepted and applied.", labels=["model"])
        fam_r = _counter(
            "mlmon_ingest_rejected_events",
            "Events refused as invalid (in refused batches or partial acceptance).",
            labels=["model"],
        )
        for name in self.monitor.models:
            fam.add_metric([name], events.get(name, 0))
            fam_r.add_metric([name], rejected_events.get(name, 0))
        yield fam
        yield fam_r
        mon = self.monitor
        fam = _counter(
            "mlmon_snapshot_writes",
            "Snapshots of the state written, by outcome (ok, error).",
            labels=["outcome"],
        )
        for k, v in sorted(mon.snapshot_writes.items()):
            fam.add_metric([k], v)
        yield fam
        fam = _counter(
            "mlmon_snapshot_restores",
            "Models whose state was read back "
            "at start, by outcome (restored, none, corrupt, "
            "incompatible).",
            labels=["outcome"],
        )
        for k, v in sorted(mon.snapshot_restores.items()):
            fam.add_metric([k], v)
        yield fam
        yield _gauge(
            "mlmon_snapshot_last_success_timestamp_seconds",
            "When the last snapshot was written (0: never).",
            value=mon.last_snapshot,
        )
        fam = _counter(
            "mlmon_limit_hits", "Times a configured limit was reached.", labels=["limit"]
        )
        for k, v in sorted(limits.items()):
            fam.add_metric([k], v)
        yield fam

    @staticmethod
    def _proxy_families(p: ProxyStats) -> Iterator[Metric]:
        snap = p.snapshot()
        requests, upstream = snap["requests"], snap["upstream_failures"]
        capture, captured = snap["capture_failures"], snap["captured"]
        counts, sums = snap["durations"], snap["duration_sums"]
        fam = _counter(
            "mlmon_proxy_requests",
            "Requests through the proxy, by payload protocol and the status returned "
            "(the upstream's, or 502/504 when the proxy answered itself).",
            labels=["protocol", "code"],
        )
        for (proto, code), v in sorted(requests.items()):
            fam.add_metric([proto, code], v)
        yield fam
        fam = _histogram(
            "mlmon_proxy_request_duration_seconds",
            "Time from a request's arrival at the proxy to the end of its response, by "
            "payload protocol.",
            ["protocol"],
        )
        for proto in PROTOCOLS:
            fam.add(
                [proto],
                DURATION_BUCKETS,
                np.cumsum(counts[proto][:-1]),
                sum(counts[proto]),
                sums[proto],
            )
        yield fam
        fam = _counter(
            "mlmon_proxy_upstream_failures",
            "Requests the upstream model server did not answer, by reason.",
            labels=["reason"],
        )
        for k, v in sorted(upstream.items()):
            fam.add_metric([k], v)
        yield fam
        fam = _counter(
            "mlmon_proxy_capture_failures",
            "Proxied inference calls (or parts of them) that gave no events, by reason; the "
            "caller's response is never affected.",
            labels=["reason"],
        )
        for k, v in sorted(capture.items()):
            fam.add_metric([k], v)
        yield fam
        fam = _counter(
            "mlmon_proxy_captured_requests",
            "Proxied inference calls turned into events, by payload protocol.",
            labels=["protocol"],
        )
        for proto in PROTOCOLS[:-1]:
            fam.add_metric([proto], captured.get(proto, 0))
        yield fam
        yield _gauge(
            "mlmon_proxy_capture_queue_length",
            "Proxied calls waiting for capture (bounded by proxy.queue_size).",
            value=snap["queue_length"],
        )

    def _model(self, f: _Families, m: ModelMonitor) -> None:
        s = m.schema
        lay = m.layout
        v = Layout.view
        name = s.name
        f.gauge(
            "mlmon_model_info",
            "Configured models; 1 per model.",
            ["model", "task", "baseline_hash"],
        ).add_metric([name, s.task, s.baseline_hash], 1)
        f.gauge(
            "mlmon_baseline_rows", "Rows of training data behind the baseline.", ["model"]
        ).add_metric([name], s.baseline_rows)
        f.gauge(
            "mlmon_window_seconds",
            "Length of the sliding window behind every windowed gauge.",
            ["model"],
        ).add_metric([name], s.config.window.length_seconds)
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
        for key in THRESHOLDS:
            f.gauge(f"mlmon_threshold_{key}", THRESHOLDS[key][1], ["model"]).add_metric(
                [name], m.thresholds[key]
            )
        self._baseline(f, m)
        views = m.views()
        self._labels(f, m)
        self._comparisons(f, m, views)
        for view in views:
            snap, r = view.snapshot, view.report
            t, ft, w = snap.total, snap.ftotal, snap.window
            mv = [name, snap.version]
            # service
            f.counter(
                "mlmon_inference_requests", "Inferences recorded (failed ones included).", MV
            ).add_metric(mv, t[lay.events.start])
            f.counter(
                "mlmon_profiled_events",
                "Successful inferences whose inputs and outputs were profiled.",
                MV,
            ).add_metric(mv, t[lay.ok_events.start])
            fam = f.counter(
                "mlmon_inference_failures", "Failed inferences, by reason.", [*MV, "reason"]
            )
            for i, reason in enumerate(FAILURE_REASONS):
                fam.add_metric([*mv, reason], v(t, lay.failures)[i])
            lat = v(t, lay.latency)
            f.histogram(
                "mlmon_inference_latency_seconds",
                "Inference latency reported by the model server.",
                MV,
            ).add(mv, LATENCY_BUCKETS, np.cumsum(lat)[:-1], lat.sum(), ft[lay.latency_sum.start])
            # inputs
            num, cat = s.numeric, s.categorical
            if len(num):
                fam = f.histogram(
                    "mlmon_feature_value",
                    "Values of a numeric feature; buckets are the baseline's edges.",
                    [*MV, "feature"],
                )
                counts = v(t, lay.num_bins)
                cum = num.coarse_cumulative(counts).tolist()
                totals = counts.sum(axis=-1).tolist()
                sums = v(ft, lay.num_sum).tolist()
                for j, feat in enumerate(num.names):
                    edges = num.coarse_edges[j]
                    fam.add([*mv, feat], edges, cum[j][: len(edges)], totals[j], sums[j])
                fam = f.counter(
                    "mlmon_feature_out_of_range",
                    "Values of a numeric feature outside the baseline's [min, max].",
                    [*MV, "feature"],
                )
                oor = v(t, lay.num_below) + v(t, lay.num_above)
                fam.add_many([(*mv, feat) for feat in num.names], oor)
            miss = f.counter(
                "mlmon_feature_missing",
                "Missing values (absent, null, NaN, infinite) of a feature.",
                [*MV, "feature"],
            )
            miss.add_many([(*mv, feat) for feat in num.names], v(t, lay.num_missing))
            miss.add_many([(*mv, feat) for feat in cat.names], v(t, lay.cat_missing))
            if len(cat):
                fam = f.counter(
                    "mlmon_feature_category",
                    "Values of a categorical feature; "
                    f"categories outside the baseline vocabulary count as {OTHER}.",
                    [*MV, "feature", "category"],
                )
                cc = v(t, lay.cat_bins)
                for j, feat in enumerate(cat.names):
                    cs = cat.categories[j]
                    fam.add_many([(*mv, feat, c) for c in cs], cc[j, : len(cs)])
            # predictions
            self._predictions(f, m, mv, t, ft)
            self._performance(f, m, view, mv)
            # windowed drift
            f.gauge("mlmon_window_events", "Inferences inside the sliding window.", MV).add_metric(
                mv, w[lay.events.start]
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
            reported = np.flatnonzero(r.reported).tolist()
            feats = [r.features[i] for i in reported]
            for method, arr in r.scores.items():
                vals = arr[reported].tolist()
                keep = [k for k, x in enumerate(vals) if x == x]  # not NaN
                score.add_many([(*mv, feats[k], method) for k in keep], [vals[k] for k in keep])
            tests = [(*mv, feats[k], r.test[i]) for k, i in enumerate(reported)]
            pval.add_many(tests, r.p_value[reported])
            padj.add_many(tests, r.p_adjusted[reported])
            flag.add_many([(*mv, f_) for f_ in feats], r.drifted[reported].astype(float))
            pscore = f.gauge(
                "mlmon_prediction_drift_score",
                "Windowed drift of the model's "
                "output (value, class or score) against the baseline.",
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
            for o in r.outputs:
                if np.isnan(o.p_value):
                    continue
                for method, val in o.scores.items():
                    pscore.add_metric([*mv, o.output, method], val)
                pp.add_metric([*mv, o.output, "ks" if "ks" in o.scores else "chi2"], o.p_value)
                pflag.add_metric([*mv, o.output], float(o.drifted))

    @staticmethod
    def _labels(f: _Families, m: ModelMonitor) -> None:
        store = m.labels
        with store.lock:
            outcomes = dict(store.outcomes)
            entries, evicted, expired = len(store._items), store.evicted, store.expired_unlabelled
        fam = f.counter(
            "mlmon_labels",
            "Labels received, by outcome of the join: matched, "
            "unmatched (no such prediction), expired, duplicate.",
            ["model", "outcome"],
        )
        for outcome, n in outcomes.items():
            fam.add_metric([m.name, outcome], n)
        f.gauge(
            "mlmon_label_store_entries", "Predictions waiting in the label store.", ["model"]
        ).add_metric([m.name], entries)
        f.counter(
            "mlmon_label_store_evicted",
            "Predictions pushed out of the full label store before their label came.",
            ["model"],
        ).add_metric([m.name], evicted)
        f.counter(
            "mlmon_label_store_expired",
            "Predictions whose time-to-live passed before their label came.",
            ["model"],
        ).add_metric([m.name], expired)

    @staticmethod
    def _comparisons(f: _Families, m: ModelMonitor, views: list) -> None:
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

    def _performance(self, f: _Families, m: ModelMonitor, view, mv: list[str]) -> None:
        s, lay, v = m.schema, m.layout, Layout.view
        t, ft, w = view.snapshot.total, view.snapshot.ftotal, view.snapshot.window
        r = view.performance
        f.counter(
            "mlmon_labelled_predictions", "Predictions joined with their label.", MV
        ).add_metric(mv, t[lay.labelled.start])
        delay = v(t, lay.label_delay)
        f.histogram("mlmon_label_delay_seconds", "Time from prediction to label.", MV).add(
            mv,
            LABEL_DELAY_BUCKETS,
            np.cumsum(delay)[:-1],
            delay.sum(),
            ft[lay.label_delay_sum.start],
        )
        f.gauge(
            "mlmon_window_labels", "Labelled predictions inside the sliding window.", MV
        ).add_metric(mv, w[lay.labelled.start])
        if s.prediction_classes is not None:
            f.counter(
                "mlmon_correct_predictions", "Labelled predictions whose class was right.", MV
            ).add_metric(mv, t[lay.correct.start])
            self._confusion(f, m, mv, v(t, lay.conf))
        else:
            edges = tuple(x * s.error_scale for x in ABS_ERROR_SCALE)
            ae = v(t, lay.abs_error)
            reg = v(ft, lay.reg)
            f.histogram(
                "mlmon_regression_absolute_error",
                "Absolute error |prediction - label| of labelled predictions.",
                MV,
            ).add(mv, edges, np.cumsum(ae)[:-1], ae.sum(), reg[1])
            f.counter(
                "mlmon_regression_squared_error",
                "Sum of squared errors of labelled predictions.",
                MV,
            ).add_metric(mv, reg[2])
        if s.task == "binary" and s.config.sensitive_attributes:
            self._group_counters(f, m, mv, v(t, lay.group_pred), v(t, lay.group_conf))
        est = r.estimates
        if est is not None:
            for name in ("accuracy", "precision", "recall", "f1"):
                value = getattr(est, name)
                if not np.isnan(value):
                    f.gauge(
                        f"mlmon_estimated_{name}",
                        f"Expected {name} from the scores alone "
                        "(label-free, assumes calibrated scores), windowed.",
                        MV,
                    ).add_metric(mv, value)
        for fr in r.fairness:
            self._fairness(f, mv, fr)
        if not r.reported:
            return
        if s.prediction_classes is not None:
            f.gauge(
                "mlmon_accuracy", "Windowed accuracy of the labelled predictions.", MV
            ).add_metric(mv, r.accuracy)
            for metric in CLASS_METRICS:
                fam = f.gauge(
                    f"mlmon_{metric}",
                    f"Windowed {metric.replace('_', ' ')} per class "
                    "(binary: the positive class; multiclass: each class and "
                    "__macro__).",
                    [*MV, "class"],
                )
                for cls, values in r.per_class.items():
                    if not np.isnan(values[metric]):
                        fam.add_metric([*mv, cls], values[metric])
            for name, value, doc in (
                ("mlmon_roc_auc", r.roc_auc, "Windowed ROC AUC from binned scores."),
                (
                    "mlmon_expected_calibration_error",
                    r.calibration_error,
                    "Windowed expected calibration error (10 score buckets).",
                ),
                ("mlmon_brier_score", r.brier, "Windowed Brier score of the tracked score."),
            ):
                if not np.isnan(value):
                    f.gauge(name, doc, MV).add_metric(mv, value)
        elif r.regression is not None:
            for name, value in (
                ("mae", r.regression.mae),
                ("rmse", r.regression.rmse),
                ("r2", r.regression.r2),
                ("bias", r.regression.bias),
            ):
                if not np.isnan(value):
                    f.gauge(
                        f"mlmon_regression_{name}",
                        f"Windowed {name} of labelled "
                        "predictions (bias: mean of prediction - label).",
                        MV,
                    ).add_metric(mv, value)

    @staticmethod
    def _confusion(f: _Families, m: ModelMonitor, mv: list[str], conf: np.ndarray) -> None:
        s = m.schema
        names = (*s.classes, OTHER)
        if s.task == "binary":
            k, n = s.positive_index, len(s.classes)
            c = conf[:n, :n]
            tp = c[k, k]
            fam = f.counter(
                "mlmon_classification_outcomes",
                "Labelled predictions of a binary "
                "model by outcome (tp, fp, fn, tn of the positive class).",
                [*MV, "outcome"],
            )
            for outcome, value in (
                ("tp", tp),
                ("fp", c[k].sum() - tp),
                ("fn", c[:, k].sum() - tp),
                ("tn", c.sum() - c[k].sum() - c[:, k].sum() + tp),
            ):
                fam.add_metric([*mv, outcome], value)
            return
        fam = f.counter(
            "mlmon_confusion",
            "Labelled predictions by predicted and actual class.",
            [*MV, "predicted", "actual"],
        )
        for i, pred in enumerate(names):
            for j, actual in enumerate(names):
                fam.add_metric([*mv, pred, actual], conf[i, j])

    @staticmethod
    def _group_counters(
        f: _Families, m: ModelMonitor, mv: list[str], pred: np.ndarray, conf: np.ndarray
    ) -> None:
        """Counters per sensitive group (binary models), so PromQL can aggregate replicas."""
        s = m.schema
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
                tp = c[k, k]
                for outcome, value in (
                    ("tp", tp),
                    ("fp", c[k].sum() - tp),
                    ("fn", c[:, k].sum() - tp),
                    ("tn", c.sum() - c[k].sum() - c[:, k].sum() + tp),
                ):
                    fo.add_metric([*mv, attr, group, outcome], value)

    @staticmethod
    def _fairness(f: _Families, mv: list[str], fr) -> None:
        lab = [*MV, "attribute", "group"]
        g = fr.metrics
        ref = fr.groups[g.reference] if g.reference >= 0 else ""
        series = (
            (
                "selection_rate",
                g.selection_rate,
                "Share of a group's predictions that are positive.",
                False,
            ),
            ("true_positive_rate", g.true_positive_rate, "A group's true-positive rate.", False),
            ("false_positive_rate", g.false_positive_rate, "A group's false-positive rate.", False),
            (
                "disparate_impact",
                g.disparate_impact,
                "A group's selection rate divided by the reference group's.",
                True,
            ),
            (
                "demographic_parity_difference",
                g.demographic_parity_difference,
                "A group's selection rate minus the reference group's.",
                True,
            ),
            (
                "equal_opportunity_difference",
                g.equal_opportunity_difference,
                "A group's true-positive rate minus the reference group's.",
                True,
            ),
        )
        for name, values, doc, with_ref in series:
            fam = f.gauge(
                f"mlmon_fairness_{name}",
                doc + " Windowed.",
                [*lab, "reference"] if with_ref else lab,
            )
            for i, group in enumerate(fr.groups):
                if not np.isnan(values[i]):
                    fam.add_metric(
                        [*mv, fr.attribute, group, *([ref] if with_ref else [])], values[i]
                    )

    def _predictions(
        self, f: _Families, m: ModelMonitor, mv: list[str], t: np.ndarray, ft: np.ndarray
    ) -> None:
        s, lay, v = m.schema, m.layout, Layout.view
        f.counter(
            "mlmon_prediction_missing",
            "Successful inferences without a usable prediction (NaN or infinite values).",
            MV,
        ).add_metric(mv, t[lay.pred_missing.start])
        if s.prediction_numeric is not None:
            self._hist(
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
            counts = v(t, lay.pred_bins)[0]
            for k, c in enumerate(s.prediction_classes.categories[0]):
                fam.add_metric([*mv, c], counts[k])
        if s.score is not None:
            self._hist(
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

    @staticmethod
    def _hist(
        fam: Family,
        block: NumericBlock,
        counts: np.ndarray,
        total: float,
        labels: list[str],
    ) -> None:
        cum = block.coarse_cumulative(counts)[0]
        edges = block.coarse_edges[0]
        fam.add(labels, edges, cum[: len(edges)], counts.sum(), total)

    def _baseline(self, f: _Families, m: ModelMonitor) -> None:
        s = m.schema
        name = s.name
        num, cat = s.numeric, s.categorical
        if len(num):
            fam = f.histogram(
                "mlmon_feature_baseline",
                "Baseline (training) distribution of a "
                "numeric feature, on the same buckets as mlmon_feature_value.",
                ["model", "feature"],
            )
            cum = num.coarse_cumulative(num.ref_counts)
            totals = num.ref_counts.sum(axis=-1)
            for j, feat in enumerate(num.names):
                edges = num.coarse_edges[j]
                fam.add([name, feat], edges, cum[j, : len(edges)], totals[j], num.ref_sum[j])
        fam = f.gauge(
            "mlmon_feature_baseline_missing_ratio",
            "Share of baseline rows where the feature is missing.",
            ["model", "feature"],
        )
        rows = max(s.baseline_rows, 1)
        for j, feat in enumerate(num.names):
            fam.add_metric([name, feat], num.ref_missing[j] / rows)
        for j, feat in enumerate(cat.names):
            fam.add_metric([name, feat], cat.ref_missing[j] / rows)
        if len(cat):
            fam = f.gauge(
                "mlmon_feature_baseline_category_ratio",
                "Share of each category among the baseline's present values.",
                ["model", "feature", "category"],
            )
            for j, feat in enumerate(cat.names):
                ref = cat.ref_counts[j]
                n = ref.sum() or 1.0
                for k, c in enumerate(cat.categories[j]):
                    fam.add_metric([name, feat, c], ref[k] / n)
        if s.prediction_numeric is not None:
            b = s.prediction_numeric
            self._hist(
                f.histogram(
                    "mlmon_prediction_baseline",
                    "Baseline distribution of predicted values.",
                    ["model"],
                ),
                b,
                b.ref_counts,
                float(b.ref_sum[0]),
                [name],
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
                fam.add_metric([name, c], ref[k] / n)
        if s.score is not None:
            b = s.score
            self._hist(
                f.histogram(
                    "mlmon_prediction_baseline_score", "Baseline distribution of scores.", ["model"]
                ),
                b,
                b.ref_counts,
                float(b.ref_sum[0]),
                [name],
            )


class _Families:
    """Families by name, created on first use, so each appears once across all models."""

    def __init__(self) -> None:
        self._by_name: dict[str, Family] = {}

    def _get(self, name: str, doc: str, kind: str, labels: Sequence[str]) -> Family:
        fam = self._by_name.get(name)
        if fam is None:
            fam = self._by_name[name] = Family(name, doc, kind, labels)
        return fam

    def gauge(self, name: str, doc: str, labels: list[str]) -> Family:
        return self._get(name, doc, "gauge", labels)

    def counter(self, name: str, doc: str, labels: list[str]) -> Family:
        return self._get(name, doc, "counter", labels)

    def histogram(self, name: str, doc: str, labels: list[str]) -> Family:
        return self._get(name, doc, "histogram", labels)

    def all(self) -> Iterator[Family]:
        return iter(self._by_name.values())
