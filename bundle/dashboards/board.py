"""A dashboard around its panels: the grid layout, the template variables, the firing-alert
annotations and the links between mlmon's dashboards."""

from __future__ import annotations

from typing import Any

from bundle.dashboards.panels import DS, RED, Json
from bundle.params import Params

DATASOURCE_UID = "mlmon-prometheus"  # grafana/provisioning/datasources/mlmon.yml
MODEL = 'job=~"$job", model="$model"'


def layout(panels: list[Json]) -> list[Json]:
    """Fill rows left to right in the 24-column grid; number the panels."""
    x = y = row_h = 0
    for i, p in enumerate(panels, start=1):
        p["id"] = i
        g = p["gridPos"]
        if p["type"] == "row" or x + g["w"] > 24:
            y += row_h
            x = row_h = 0
        g["x"], g["y"] = x, y
        x += g["w"]
        row_h = max(row_h, g["h"])
        if p["type"] == "row":
            y += g["h"]
            x = row_h = 0
    return panels


def query_var(
    name: str,
    label: str,
    query: str,
    multi: bool = True,
    include_all: bool = True,
    all_value: str | None = ".+",
) -> Json:
    v: Json = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": f"{name}-var"},
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": include_all,
        "options": [],
        "hide": 0,
    }
    if all_value is not None:
        v["allValue"] = all_value
    return v


def variables(p: Params, model: bool = True, feature: bool = False) -> list[Json]:
    """Data source and job; then model and version; then feature. The job list holds the
    jobs of mlmon's exporters (the bundle's job selector)."""
    out: list[Json] = [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {"text": "Prometheus", "value": DATASOURCE_UID},
            "hide": 0,
            "refresh": 1,
            "options": [],
        },
        query_var("job", "Job", f"label_values(mlmon_model_info{{{p.job_selector}}}, job)"),
    ]
    if model:
        out += [
            query_var(
                "model",
                "Model",
                'label_values(mlmon_model_info{job=~"$job"}, model)',
                multi=False,
                include_all=False,
                all_value=None,
            ),
            query_var(
                "version",
                "Version",
                f"label_values(mlmon_inference_requests_total{{{MODEL}}}, version)",
            ),
        ]
    if feature:
        out.append(
            query_var(
                "feature",
                "Feature",
                f"label_values(mlmon_feature_missing_total{{{MODEL}}}, feature)",
            )
        )
    return out


def alerts_annotation(selector: str) -> Json:
    """The firing alerts that match ``selector``, as regions on every time series. The
    query sits in ``target`` where Grafana's Prometheus data source keeps it (it moves a
    top-level ``expr`` there on load); the title and text formats are that data source's
    own annotation fields."""
    return {
        "name": "Firing mlmon alerts",
        "datasource": DS,
        "enable": True,
        "iconColor": RED,
        "target": {
            "refId": "Anno",
            "expr": f'ALERTS{{alertstate="firing", {selector}}}',
            "interval": "60s",
        },
        "titleFormat": "{{alertname}}",
        "textFormat": "{{model}} {{version}} {{feature}}",
    }


def dashboard(
    uid: str,
    title: str,
    description: str,
    panels: list[Json],
    templating: list[Json],
    alerts: str = 'model="$model"',
) -> dict[str, Any]:
    """A dashboard; ``alerts`` selects the firing alerts drawn on its time series (the
    fleet has no model variable, so it draws every mlmon alert)."""
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["mlmon"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": templating},
        "annotations": {"list": [alerts_annotation(alerts)]},
        "links": [
            {
                "title": "mlmon dashboards",
                "type": "dashboards",
                "tags": ["mlmon"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
                "icon": "external link",
                "targetBlank": False,
                "tooltip": "",
            }
        ],
        "panels": layout(panels),
    }
