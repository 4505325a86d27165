"""One module per section of a model's report, each `build(ctx) -> Section`; SECTIONS is
their order on the page."""

from __future__ import annotations

from mlmon.report.sections import alerts, baseline, drift, fairness, performance, service, versions

SECTIONS = (
    service.build,
    baseline.build,
    drift.build,
    performance.build,
    fairness.build,
    versions.build,
    alerts.build,
)
