"""The bundle's parameters: every value of the generated rules, dashboards and manifests
that depends on where mlmon runs. Change them here (or in a site file given to
``python -m bundle --params site.yml``) and regenerate; nothing else holds them.

The default thresholds are not parameters: they are the exporter's own defaults, read
from ``mlmon.core.config``, so the rules' fallbacks and the dashboards' limits cannot drift
from what the exporter applies.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from mlmon.core.config import THRESHOLDS, DriftSettings, FairnessSettings, PerformanceSettings


@dataclass(frozen=True)
class Dashboard:
    uid: str  # fixed, so links stay stable
    slug: str  # Grafana's slug of the title: cosmetic in a URL (Grafana redirects on a change)


@dataclass(frozen=True)
class Params:
    # PromQL label matcher(s) that pick mlmon's exporters out of Prometheus' scrape targets.
    # Only expressions over series that are not mlmon's own need it (`up`, for the
    # exporter-down alerts and the fleet's "Exporters up"); it also narrows the dashboards'
    # `job` variable. Example: 'job=~"mlmon|mlmon-canary"'.
    job_selector: str = 'job="mlmon"'
    # Where the runbook lives: every alert's runbook_url is this, '#', and the alert's name
    # in lower case (docs/runbook.md has one section per alert).
    runbook_url: str = "https://github.com/mlmon/mlmon/blob/main/docs/runbook.md"
    # Grafana as the people who receive notifications reach it: every alert's
    # dashboard_url starts with it. Links between dashboards stay relative.
    grafana_url: str = "http://localhost:3000"
    # The provisioned dashboards, by the name the rules and dashboard modules use.
    dashboards: dict[str, Dashboard] = field(
        default_factory=lambda: {
            "fleet": Dashboard("mlmon-fleet", "mlmon-fleet-overview"),
            "model": Dashboard("mlmon-model", "mlmon-model-overview"),
            "feature-drift": Dashboard("mlmon-feature-drift", "mlmon-feature-drift"),
            "performance": Dashboard("mlmon-performance", "mlmon-performance"),
            "fairness": Dashboard("mlmon-fairness", "mlmon-fairness"),
            "versions": Dashboard("mlmon-versions", "mlmon-champion-vs-challenger"),
        }
    )
    # Exporter-wide limits of the Mlmon* alerts, also the fleet dashboard's red line: they
    # are about the senders and the exporter, not about one model, so no model sets them.
    ingest_rejected_ratio_max: float = 0.05
    capture_failure_ratio_max: float = 0.05
    # Seasonal anomaly bands (docs/anomalies.md): each signal's last hour against the same
    # hour of the week over the last four weeks. The band is the weeks' median plus or
    # minus anomaly_k robust standard deviations (1.4826 x the weeks' median absolute
    # deviation), never narrower than the floors below, so a perfectly flat history does
    # not make a zero-width band.
    anomaly_k: float = 3.0
    # Weeks of the last four that must hold the hour before a prediction is made: one
    # missing week (an outage, the edge of retention) does not blind the band.
    anomaly_min_weeks: int = 3
    # Inferences (or labels) an hour below which a deviation does not count: the traffic
    # and label bands are at least this wide, and an hour with fewer inferences (or
    # predictions) gives no error ratio, latency or mean prediction to compare.
    anomaly_min_events: float = 100
    # Traffic, label arrival and p99 latency: the band is at least this share of the
    # prediction wide on either side.
    anomaly_floor_ratio: float = 0.2
    # Error ratio: the band reaches at least this far above the prediction (a ratio: 0.01 is
    # one percentage point), so a history without failures still allows a few.
    anomaly_error_ratio_floor: float = 0.01
    # Mean prediction: the band is at least this share of the baseline's 10th-90th
    # percentile range of predictions (values or scores) wide on either side.
    anomaly_prediction_floor_spread: float = 0.1

    @property
    def defaults(self) -> dict[str, float]:
        """The value each threshold recording rule falls back to when a model exports no
        gauge: the exporter's defaults, not a copy of them."""
        return default_thresholds()

    def dashboard_path(self, name: str) -> str:
        """The path of a dashboard inside Grafana, ``/d/<uid>/<slug>``."""
        d = self.dashboards[name]
        return f"/d/{d.uid}/{d.slug}"


def default_thresholds() -> dict[str, float]:
    out = {key: value for key, (value, _doc) in THRESHOLDS.items()}
    # the sample floors below which drift, performance and fairness are not reported
    out["drift_min_samples"] = DriftSettings().min_samples
    out["performance_min_labels"] = PerformanceSettings().min_labels
    out["fairness_min_samples"] = FairnessSettings().min_samples
    return out


def load(path: Path, base: Params | None = None) -> Params:
    """A site's parameters: a YAML mapping with any of the fields above, for example
    ``grafana_url: https://grafana.example.net`` or ``dashboards: {model: {uid: ml-model}}``."""
    base = base or Params()
    raw: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    names = {f.name for f in dataclasses.fields(Params)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ValueError(f"{path}: unknown parameters {unknown}; known: {sorted(names)}")
    if "dashboards" in raw:
        boards = dict(base.dashboards)
        for name, given in raw["dashboards"].items():
            if name not in boards:
                raise ValueError(f"{path}: dashboards.{name}: no such dashboard")
            boards[name] = dataclasses.replace(boards[name], **given)
        raw["dashboards"] = boards
    return dataclasses.replace(base, **raw)
