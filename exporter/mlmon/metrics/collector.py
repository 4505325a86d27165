"""The collector: at every scrape, the sidecar's own families, then every model's, each
domain built by its module (model_config, inputs, predictions, performance, fairness, versions,
drift, and the sidecar's own metrics).

`MlmonCollector` renders fresh families from the monitor's count vectors at every scrape;
ingest never formats text and a scrape never touches raw events. A family appears once
however many models add to it, in the order its first sample came. A sample of what one
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

from collections.abc import Iterator
from functools import partial

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from mlmon.capture.counters import ProxyStats
from mlmon.core.monitor import ModelMonitor, Monitor, VersionView
from mlmon.metrics import (
    attributions,
    drift,
    fairness,
    feedback,
    inputs,
    model_config,
    performance,
    predictions,
    service,
    sidecar,
    versions,
)
from mlmon.metrics.blocks import BlockCache, Unit
from mlmon.metrics.exposition import Block, Family, RenderTimes
from mlmon.metrics.families import Families


class MlmonCollector(Collector):
    def __init__(self, monitor: Monitor, proxy: ProxyStats | None = None) -> None:
        self.monitor = monitor
        self.proxy = proxy
        self.render_times = RenderTimes()  # the /metrics renderer records into it
        self.blocks = BlockCache()

    def collect(self) -> Iterator[Metric]:
        """The families as prometheus_client metrics (the registry's interface), built
        afresh at every call: the reference the cached text is tested against."""
        for fam in self._sidecar():
            yield fam.to_metric()
        families = Families()
        for unit in self.units():
            unit.build(families)
        for fam in families.all():
            yield fam.to_metric()

    def families(self) -> Iterator[Family | Block]:
        """Every family of this scrape, for `exposition.Renderer`: the sidecar's built
        afresh, the models' as text blocks, each unit written again only when it changed."""
        yield from self._sidecar()
        yield from self.blocks.render(self.units())

    def _sidecar(self) -> Iterator[Family]:
        yield from sidecar.exporter_families(self.monitor, self.proxy, self.render_times)
        yield from feedback.families(self.monitor)
        if self.proxy is not None:
            yield from sidecar.proxy_families(self.proxy)

    def units(self) -> Iterator[Unit]:
        """Every model's units, in the order their families come (see `blocks`)."""
        for model in self.monitor.models.values():
            yield from _units(model)


def _units(m: ModelMonitor) -> Iterator[Unit]:
    schema = m.schema
    keep = (m, schema)
    thresholds = tuple(sorted(m.thresholds.items()))
    model = (id(m), id(schema), thresholds)
    yield Unit(("model", m.name), model, partial(_settings, m=m), keep)
    views = m.views()
    yield Unit(("labels", m.name), None, partial(performance.label_join, m=m))
    generations = tuple((v.snapshot.version, v.snapshot.generation) for v in views)
    yield Unit(
        ("versions", m.name),
        (*model, generations),
        partial(versions.comparisons, m=m, views=views),
        keep,
    )
    groups = tuple(len(g) for g in m.group_names)
    for view in views:
        snap = view.snapshot
        yield Unit(
            ("version", m.name, snap.version),
            (*model, groups, snap.generation),
            partial(_version, m=m, view=view),
            keep,
        )


def _settings(f: Families, m: ModelMonitor) -> None:
    model_config.model_info(f, m)
    model_config.minimum_counts(f, m)
    model_config.thresholds(f, m)
    inputs.baseline(f, m)
    predictions.baseline(f, m)
    performance.baseline_error(f, m)
    attributions.baseline(f, m)
    drift.joint_baseline(f, m)


def _version(f: Families, m: ModelMonitor, view: VersionView) -> None:
    mv = [m.name, view.snapshot.version]
    service.inferences(f, m, view, mv)
    inputs.values(f, m, view, mv)
    predictions.values(f, m, view, mv)
    performance.labelled(f, m, view, mv)
    fairness.group_counts(f, m, view, mv)
    performance.estimated(f, m, view, mv)
    fairness.rates(f, m, view, mv)
    performance.windowed(f, m, view, mv)
    drift.summary(f, m, view, mv)
    drift.features(f, m, view, mv)
    drift.outputs(f, m, view, mv)
    drift.joint(f, m, view, mv)
    drift.embeddings(f, m, view, mv)
    attributions.windowed(f, m, view, mv)
