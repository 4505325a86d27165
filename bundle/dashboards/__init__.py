"""mlmon's Grafana dashboards, one module each, on shared panel kinds (panels.py), PromQL
helpers (queries.py) and dashboard furniture (board.py). Red threshold lines come from the
threshold recording rules, so they move with the config."""

from __future__ import annotations

import json
from collections.abc import Callable

from bundle.dashboards import fairness, feature_drift, fleet, model, performance, versions
from bundle.dashboards.panels import Json
from bundle.params import Params

# file in grafana/dashboards/ -> the module that builds it
DASHBOARDS: dict[str, Callable[[Params], Json]] = {
    "mlmon-fleet.json": fleet.build,
    "mlmon-model.json": model.build,
    "mlmon-feature-drift.json": feature_drift.build,
    "mlmon-performance.json": performance.build,
    "mlmon-fairness.json": fairness.build,
    "mlmon-versions.json": versions.build,
}


def render(p: Params) -> dict[str, str]:
    """File name -> JSON text."""
    return {
        name: json.dumps(build(p), indent=2, ensure_ascii=False) + "\n"
        for name, build in DASHBOARDS.items()
    }
