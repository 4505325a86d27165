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
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from . import __version__
from .baseline import OTHER
from .config import FAILURE_REASONS, THRESHOLDS
from .monitor import ModelMonitor, Monitor
from .schema import NumericBlock
from .state import LATENCY_BUCKETS, Layout

MV = ["model", "version"]


class HistogramFamily(Metric):
    """A classic histogram whose ``_count`` and ``_sum`` are always present (the client's
    helper drops them when the first bucket bound is negative)."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        super().__init__(name, documentation, "histogram")
        self._labelnames = tuple(labels)

    def add(
        self,
        labels: Sequence[str],
        bounds: Iterable[float],
        cumulative: Iterable[float],
        count: float,
        total: float,
    ) -> None:
        base = dict(zip(self._labelnames, labels, strict=True))
        for le, c in zip(bounds, cumulative, strict=False):
            self.add_sample(self.name + "_bucket", {**base, "le": floatToGoString(le)}, float(c))
        self.add_sample(self.name + "_bucket", {**base, "le": "+Inf"}, float(count))
        self.add_sample(self.name + "_count", base, float(count))
        self.add_sample(self.name + "_sum", base, float(total))


class MlmonCollector(Collector):
    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        mon = self.monitor
        yield from self._exporter_families()
        families = _Families()
        for model in mon.models.values():
            self._model(families, model)
        yield from families.all()

    def _exporter_families(self) -> Iterator[Metric]:
        build = GaugeMetricFamily(
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
        fam = CounterMetricFamily(
            "mlmon_ingest_requests",
            "Requests received by the ingest API, by endpoint.",
            labels=["endpoint"],
        )
        for k, v in sorted(requests.items()):
            fam.add_metric([k], v)
        yield fam
        fam = CounterMetricFamily(
            "mlmon_ingest_rejected_requests",
            "Ingest requests refused, by endpoint and reason.",
            labels=["endpoint", "reason"],
        )
        for (ep, reason), v in sorted(rejected.items()):
            fam.add_metric([ep, reason], v)
        yield fam
        fam = CounterMetricFamily(
            "mlmon_ingest_events", "Events accepted and applied.", labels=["model"]
        )
        fam_r = CounterMetricFamily(
            "mlmon_ingest_rejected_events",
            "Events refused as invalid (in refused batches or partial acceptance).",
            labels=["model"],
        )
        for name in self.monitor.models:
            fam.add_metric([name], events.get(name, 0))
            fam_r.add_metric([name], rejected_events.get(name, 0))
        yield fam
        yield fam_r
        fam = CounterMetricFamily(
            "mlmon_limit_hits", "Times a configured limit was reached.", labels=["limit"]
        )
        for k, v in sorted(limits.items()):
            fam.add_metric([k], v)
        yield fam

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
        for key in THRESHOLDS:
            f.gauge(f"mlmon_threshold_{key}", THRESHOLDS[key][1], ["model"]).add_metric(
                [name], m.thresholds[key]
            )
        self._baseline(f, m)
        for view in m.views():
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
                cum = num.coarse_cumulative(counts)
                totals = counts.sum(axis=-1)
                sums = v(ft, lay.num_sum)
                for j, feat in enumerate(num.names):
                    edges = num.coarse_edges[j]
                    fam.add([*mv, feat], edges, cum[j, : len(edges)], totals[j], sums[j])
                fam = f.counter(
                    "mlmon_feature_out_of_range",
                    "Values of a numeric feature outside the baseline's [min, max].",
                    [*MV, "feature"],
                )
                oor = v(t, lay.num_below) + v(t, lay.num_above)
                for j, feat in enumerate(num.names):
                    fam.add_metric([*mv, feat], oor[j])
            miss = f.counter(
                "mlmon_feature_missing",
                "Missing values (absent, null, NaN, infinite) of a feature.",
                [*MV, "feature"],
            )
            for j, feat in enumerate(num.names):
                miss.add_metric([*mv, feat], v(t, lay.num_missing)[j])
            for j, feat in enumerate(cat.names):
                miss.add_metric([*mv, feat], v(t, lay.cat_missing)[j])
            if len(cat):
                fam = f.counter(
                    "mlmon_feature_category",
                    "Values of a categorical feature; "
                    f"categories outside the baseline vocabulary count as {OTHER}.",
                    [*MV, "feature", "category"],
                )
                cc = v(t, lay.cat_bins)
                for j, feat in enumerate(cat.names):
                    for k, c in enumerate(cat.categories[j]):
                        fam.add_metric([*mv, feat, c], cc[j, k])
            # predictions
            self._predictions(f, m, mv, t, ft)
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
            for i, feat in enumerate(r.features):
                if not r.reported[i]:
                    continue
                for method, arr in r.scores.items():
                    if not np.isnan(arr[i]):
                        score.add_metric([*mv, feat, method], arr[i])
                pval.add_metric([*mv, feat, r.test[i]], r.p_value[i])
                padj.add_metric([*mv, feat, r.test[i]], r.p_adjusted[i])
                flag.add_metric([*mv, feat], float(r.drifted[i]))
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
        fam: HistogramFamily,
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
        self._by_name: dict[str, Metric] = {}

    def _get(self, name: str, factory: Callable[[], Metric]) -> Metric:
        fam = self._by_name.get(name)
        if fam is None:
            fam = self._by_name[name] = factory()
        return fam

    def gauge(self, name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
        return self._get(name, lambda: GaugeMetricFamily(name, doc, labels=labels))

    def counter(self, name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
        return self._get(name, lambda: CounterMetricFamily(name, doc, labels=labels))

    def histogram(self, name: str, doc: str, labels: list[str]) -> HistogramFamily:
        return self._get(name, lambda: HistogramFamily(name, doc, labels))

    def all(self) -> Iterator[Metric]:
        return iter(self._by_name.values())
