"""Generate mlmon's Grafana dashboards (grafana/dashboards/*.json) from code.

    python grafana/generate.py          # rewrite the JSON files
    python grafana/generate.py --check  # exit 1 if a committed file differs (tests run this)

One function per panel kind on a shared default, so every panel has a title, a
description that says how to read it, a unit, and thresholds where a limit exists. Red
threshold lines come from the threshold recording rules, so they move with the config.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"
DATASOURCE_UID = "mlmon-prometheus"  # grafana/provisioning/datasources/mlmon.yml
DS = {"type": "prometheus", "uid": "${datasource}"}
# One palette everywhere: live series in the classic palette, thresholds red and dashed,
# 3-day and 7-day averages grey and dotted.
RED, GREEN, ORANGE, GREY, BLUE = "red", "green", "orange", "#8e8e8e", "blue"
SEL = 'job=~"$job", model="$model", version=~"$version"'
VERSIONS_QUERY = (
    'label_values(mlmon_inference_requests_total{job=~"$job", model="$model"}, version)'
)
SELF = SEL + ', feature=~"$feature"'


def target(
    expr: str, legend: str = "", instant: bool = False, ref: str = "A", fmt: str = "time_series"
) -> dict[str, Any]:
    t: dict[str, Any] = {
        "refId": ref,
        "datasource": DS,
        "expr": expr,
        "legendFormat": legend,
        "range": not instant,
        "instant": instant,
        "format": fmt,
    }
    return t


def _refs(targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    return targets


def _steps(limit: float | None, direction: str = "above") -> dict[str, Any]:
    if limit is None:
        return {"mode": "absolute", "steps": [{"color": GREEN, "value": None}]}
    if direction == "above":
        return {
            "mode": "absolute",
            "steps": [{"color": GREEN, "value": None}, {"color": RED, "value": limit}],
        }
    return {
        "mode": "absolute",
        "steps": [{"color": RED, "value": None}, {"color": GREEN, "value": limit}],
    }


def _by_name(name: str, props: list[dict[str, Any]]) -> dict[str, Any]:
    return {"matcher": {"id": "byName", "options": name}, "properties": props}


def _by_regex(pattern: str, props: list[dict[str, Any]]) -> dict[str, Any]:
    return {"matcher": {"id": "byRegexp", "options": pattern}, "properties": props}


THRESHOLD_STYLE = [
    {"id": "color", "value": {"mode": "fixed", "fixedColor": RED}},
    {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
    {"id": "custom.lineWidth", "value": 2},
    {"id": "custom.fillOpacity", "value": 0},
]
TREND_STYLE = [
    {"id": "color", "value": {"mode": "fixed", "fixedColor": GREY}},
    {"id": "custom.lineStyle", "value": {"fill": "dot", "dash": [0, 10]}},
    {"id": "custom.fillOpacity", "value": 0},
]


def panel(
    kind: str,
    title: str,
    description: str,
    unit: str,
    targets: list[dict[str, Any]],
    w: int = 12,
    h: int = 8,
    thresholds: dict[str, Any] | None = None,
    overrides: list[dict[str, Any]] | None = None,
    options: dict[str, Any] | None = None,
    custom: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    p: dict[str, Any] = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"h": h, "w": w, "x": 0, "y": 0},
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "color": {"mode": "palette-classic"},
                "thresholds": thresholds or _steps(None),
            },
            "overrides": overrides or [],
        },
        "options": options or {},
        "targets": _refs(targets),
    }
    if custom is not None:
        p["fieldConfig"]["defaults"]["custom"] = custom
    p.update(extra)
    return p


def timeseries(
    title: str,
    description: str,
    unit: str,
    targets: list[dict[str, Any]],
    threshold_legend: str | None = None,
    trends: bool = False,
    log_scale: bool = False,
    **kw: Any,
) -> dict[str, Any]:
    """A time series; the target whose legend is ``threshold_legend`` is drawn as the red
    dashed limit line, legends ending in "avg" as grey dotted trend lines; ``log_scale`` for
    p-values."""
    overrides = list(kw.pop("overrides", []))
    if threshold_legend:
        overrides.append(_by_name(threshold_legend, THRESHOLD_STYLE))
    if trends:
        overrides.append(_by_regex(".*(3d|7d) avg.*", TREND_STYLE))
    return panel(
        "timeseries",
        title,
        description,
        unit,
        targets,
        overrides=overrides,
        options={
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "calcs": ["lastNotNull", "max"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        custom={
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": True,
            "thresholdsStyle": {"mode": "off"},
            **({"scaleDistribution": {"type": "log", "log": 10}} if log_scale else {}),
        },
        **kw,
    )


def stat(
    title: str,
    description: str,
    unit: str,
    targets: list[dict[str, Any]],
    limit: float | None = None,
    direction: str = "above",
    w: int = 6,
    h: int = 4,
    **kw: Any,
) -> dict[str, Any]:
    return panel(
        "stat",
        title,
        description,
        unit,
        targets,
        w=w,
        h=h,
        thresholds=_steps(limit, direction),
        options={
            "colorMode": "background",
            "graphMode": "area",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "auto",
            "justifyMode": "auto",
        },
        **kw,
    )


def table(
    title: str,
    description: str,
    unit: str,
    targets: list[dict[str, Any]],
    overrides: list[dict[str, Any]],
    transformations: list[dict[str, Any]],
    w: int = 24,
    h: int = 8,
) -> dict[str, Any]:
    return panel(
        "table",
        title,
        description,
        unit,
        targets,
        w=w,
        h=h,
        overrides=overrides,
        options={
            "showHeader": True,
            "cellHeight": "sm",
            "footer": {"show": False, "reducer": ["sum"], "fields": ""},
        },
        custom={"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False},
        transformations=transformations,
    )


def row(title: str) -> dict[str, Any]:
    return {
        "type": "row",
        "title": title,
        "collapsed": False,
        "panels": [],
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0},
    }


def layout(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
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


def variables(model: bool = True, feature: bool = False) -> list[dict[str, Any]]:
    def query_var(
        name: str,
        label: str,
        query: str,
        multi: bool,
        include_all: bool,
        all_value: str | None = None,
    ) -> dict[str, Any]:
        v: dict[str, Any] = {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": DS,
            "query": {"query": query, "refId": f"{name}-var"},
            "definition": query,
            "refresh": 2,
            "sort": 1,
            "multi": multi,
            "includeAll": include_all,
            "current": {},
            "options": [],
            "hide": 0,
        }
        if all_value is not None:
            v["allValue"] = all_value
        return v

    out: list[dict[str, Any]] = [
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
        query_var("job", "Job", "label_values(mlmon_model_info, job)", True, True, ".+"),
    ]
    if model:
        out.append(
            query_var(
                "model", "Model", 'label_values(mlmon_model_info{job=~"$job"}, model)', False, False
            )
        )
        out.append(
            query_var(
                "version",
                "Version",
                VERSIONS_QUERY,
                True,
                True,
                ".+",
            )
        )
    if feature:
        out.append(
            query_var(
                "feature",
                "Feature",
                'label_values(mlmon_feature_missing_total{job=~"$job", model="$model"}, feature)',
                True,
                True,
                ".+",
            )
        )
    return out


def dashboard(
    uid: str,
    title: str,
    description: str,
    panels: list[dict[str, Any]],
    templating: list[dict[str, Any]],
) -> dict[str, Any]:
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
        "annotations": {
            "list": [
                {
                    "name": "Firing mlmon alerts",
                    "datasource": DS,
                    "enable": True,
                    "iconColor": RED,
                    "expr": 'ALERTS{alertstate="firing", model="$model"}',
                    "titleFormat": "{{alertname}}",
                    "textFormat": "{{feature}} {{version}}",
                    "step": "60s",
                    "useValueForTime": False,
                }
            ]
        },
        "links": [
            {
                "title": "mlmon dashboards",
                "type": "dashboards",
                "tags": ["mlmon"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "panels": layout(panels),
    }


def th(name: str) -> str:
    return f'max(model:mlmon_threshold_{name}:max{{model="$model"}})'


def trends(rule_3d: str, rule_7d: str, agg: str = "avg") -> list[dict[str, Any]]:
    return [
        target(f"{agg}({rule_3d}{{{SEL}}})", "3d avg"),
        target(f"{agg}({rule_7d}{{{SEL}}})", "7d avg"),
    ]


# ------------------------------------------------------------------- fleet overview
def fleet() -> dict[str, Any]:
    link = (
        "/d/mlmon-model/mlmon-model-overview?var-model=${__data.fields.model}&${__url_time_range}"
    )
    cols = [
        (
            "Traffic",
            'sum by (model) (model_version:mlmon_inference_requests:rate5m{job=~"$job"})',
            "reqps",
            None,
        ),
        (
            "Error ratio",
            'max by (model) (model_version:mlmon_inference_error_ratio:ratio_rate5m{job=~"$job"})',
            "percentunit",
            0.01,
        ),
        (
            "Drifted features",
            'sum by (model) (model_version_feature:mlmon_feature_drifted:increase1h{job=~"$job"})',
            "short",
            1,
        ),
        (
            "Drifted share",
            'max by (model) (model_version:mlmon_drifted_features:ratio_increase1h{job=~"$job"})',
            "percentunit",
            0.3,
        ),
        (
            "Prediction drift",
            "max by (model) (model_version_output:mlmon_prediction_drift_ks:"
            'increase1h{job=~"$job"})',
            "none",
            0.1,
        ),
        (
            "Firing alerts",
            'count by (model) (ALERTS{alertstate="firing", alertname=~"MLModel.*"})'
            ' or max by (model) (mlmon_model_info{job=~"$job"}) * 0',
            "short",
            1,
        ),
    ]
    # (name, expr, unit, limit): red above the limit; the performance columns below it
    below = {
        "Accuracy (1d)": (
            'min by (model) (model_version:mlmon_accuracy:ratio_increase1d{job=~"$job"})',
            "percentunit",
            0.7,
        ),
        "Disparate impact (min)": (
            "min by (model) (model_version_attribute_group:mlmon_disparate_impact:"
            'ratio_increase1d{job=~"$job"})',
            "percentunit",
            0.8,
        ),
    }
    cols[-1:-1] = [(name, expr, unit, limit) for name, (expr, unit, limit) in below.items()]
    targets = [target(expr, name, instant=True, fmt="table") for name, expr, _, _ in cols]
    overrides = [
        _by_name(
            "model",
            [
                {"id": "links", "value": [{"title": "Model overview", "url": link}]},
                {"id": "displayName", "value": "Model"},
            ],
        )
    ]
    for i, (name, _, unit, limit) in enumerate(cols):
        props: list[dict[str, Any]] = [
            {"id": "displayName", "value": name},
            {"id": "unit", "value": unit},
            {"id": "custom.cellOptions", "value": {"type": "color-background"}},
            {"id": "thresholds", "value": _steps(limit, "below" if name in below else "above")},
            {"id": "links", "value": [{"title": "Model overview", "url": link}]},
        ]
        overrides.append(_by_name(f"Value #{chr(ord('A') + i)}", props))
    transformations = [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {"excludeByName": {"Time": True}}},
    ]
    panels = [
        row("Every model"),
        table(
            "Models",
            "One row per model. Cells turn red past the default limits (error ratio "
            "1%, one drifted feature, 30% drifted share, prediction KS 0.1, accuracy below "
            "70%, disparate impact below 80%, any firing alert); "
            "a model's own limits are on its overview. Click a model for its overview.",
            "short",
            targets,
            overrides,
            transformations,
            h=8,
        ),
        row("Trends"),
        timeseries(
            "Traffic by model",
            "Inferences per second across all replicas and versions.",
            "reqps",
            [
                target(
                    'sum by (model) (model_version:mlmon_inference_requests:rate5m{job=~"$job"})',
                    "{{model}}",
                )
            ],
            w=8,
        ),
        timeseries(
            "Error ratio by model",
            "Share of failed inferences (5m). Compare with each "
            "model's error budget on its overview.",
            "percentunit",
            [
                target(
                    "max by (model) (model_version:mlmon_inference_error_ratio:ratio_rate5m"
                    '{job=~"$job"})',
                    "{{model}}",
                )
            ],
            w=8,
        ),
        timeseries(
            "Drifted share by model",
            "Share of each model's tested features that drifted over the last hour (fleet-wide).",
            "percentunit",
            [
                target(
                    "max by (model) (model_version:mlmon_drifted_features:ratio_increase1h"
                    '{job=~"$job"})',
                    "{{model}}",
                )
            ],
            w=8,
        ),
        row("Alerts and exporters"),
        table(
            "Firing and pending alerts",
            "Every mlmon alert Prometheus holds now, with its "
            "state; the runbook is linked from each alert's notification.",
            "short",
            [
                target(
                    'ALERTS{alertname=~"(MLModel|Mlmon).*"} or on () vector(0)',
                    "",
                    instant=True,
                    fmt="table",
                )
            ],
            [],
            [{"id": "organize", "options": {"excludeByName": {"Time": True, "__name__": True}}}],
            w=16,
            h=8,
        ),
        stat(
            "Exporters up",
            "Scrape targets of the mlmon job that answer; red when any is down.",
            "short",
            [target('sum(up{job=~"$job"}) or on () vector(0)', "up")],
            w=4,
            h=8,
        ),
        stat(
            "Ingest refused",
            "Share of ingest requests the exporters refused over 5 minutes (limit 5%).",
            "percentunit",
            [
                target(
                    'sum(rate(mlmon_ingest_rejected_requests_total{job=~"$job"}[$__rate_interval]))'
                    ' / clamp_min(sum(rate(mlmon_ingest_requests_total{job=~"$job"}'
                    "[$__rate_interval])), 1e-9)",
                    "refused",
                )
            ],
            limit=0.05,
            w=4,
            h=8,
        ),
    ]
    return dashboard(
        "mlmon-fleet",
        "mlmon / Fleet overview",
        "Every monitored model on one screen.",
        panels,
        variables(model=False),
    )


# ------------------------------------------------------------------- model overview
def model() -> dict[str, Any]:
    drift_link = (
        "/d/mlmon-feature-drift/mlmon-feature-drift?var-model=$model&"
        "var-feature=${__field.labels.feature}&${__url_time_range}"
    )
    panels = [
        row("Service"),
        stat(
            "Traffic",
            "Inferences per second, all selected versions.",
            "reqps",
            [target(f"sum(model_version:mlmon_inference_requests:rate5m{{{SEL}}})", "now")],
            limit=None,
        ),
        stat(
            "Error ratio",
            "Share of failed inferences over 5 minutes; red above the error "
            "budget (error_ratio_max).",
            "percentunit",
            [
                target(
                    f"max(model_version:mlmon_inference_error_ratio:ratio_rate5m{{{SEL}}})", "now"
                )
            ],
            limit=0.01,
        ),
        stat(
            "p99 latency",
            "99th-percentile inference latency reported by the model server; "
            "red above latency_p99_seconds_max.",
            "s",
            [
                target(
                    f"max(model_version:mlmon_inference_latency_seconds:p99_rate5m{{{SEL}}})", "p99"
                )
            ],
            limit=0.5,
        ),
        stat(
            "Drifted features",
            "Features whose fleet-wide drift over the last hour is at least its floor.",
            "short",
            [
                target(
                    f"sum(model_version_feature:mlmon_feature_drifted:increase1h{{{SEL}}})",
                    "drifted",
                )
            ],
            limit=1,
        ),
        timeseries(
            "Throughput",
            "Inferences per second by version, with the 3-day and 7-day averages for comparison.",
            "reqps",
            [
                target(
                    f"sum by (version) (model_version:mlmon_inference_requests:rate5m{{{SEL}}})",
                    "{{version}}",
                ),
                *trends(
                    "model_version:mlmon_inference_requests:avg3d_rate5m",
                    "model_version:mlmon_inference_requests:avg7d_rate5m",
                    "sum",
                ),
            ],
            trends=True,
            w=8,
        ),
        timeseries(
            "Error ratio",
            "Failed share of inferences by version (5m). The red dashed "
            "line is the error budget; grey dotted lines are the 3-day and 7-day averages.",
            "percentunit",
            [
                target(
                    f"max by (version) (model_version:mlmon_inference_error_ratio:"
                    f"ratio_rate5m{{{SEL}}})",
                    "{{version}}",
                ),
                target(th("error_ratio_max"), "budget"),
                *trends(
                    "model_version:mlmon_inference_error_ratio:avg3d_ratio_rate5m",
                    "model_version:mlmon_inference_error_ratio:avg7d_ratio_rate5m",
                    "max",
                ),
            ],
            threshold_legend="budget",
            trends=True,
            w=8,
        ),
        timeseries(
            "Latency",
            "p50, p90 and p99 inference latency; the red dashed line is the p99 limit.",
            "s",
            [
                target(
                    f"max(model_version:mlmon_inference_latency_seconds:p50_rate5m{{{SEL}}})", "p50"
                ),
                target(
                    f"max(model_version:mlmon_inference_latency_seconds:p90_rate5m{{{SEL}}})", "p90"
                ),
                target(
                    f"max(model_version:mlmon_inference_latency_seconds:p99_rate5m{{{SEL}}})", "p99"
                ),
                target(th("latency_p99_seconds_max"), "p99 limit"),
                *trends(
                    "model_version:mlmon_inference_latency_seconds:avg3d_p99_rate5m",
                    "model_version:mlmon_inference_latency_seconds:avg7d_p99_rate5m",
                    "max",
                ),
            ],
            threshold_legend="p99 limit",
            trends=True,
            w=8,
        ),
        timeseries(
            "Failures by reason",
            "Failed inferences per second by the reason the model server gave.",
            "reqps",
            [
                target(
                    f"sum by (reason) (model_version_reason:mlmon_inference_failures:"
                    f"rate5m{{{SEL}}})",
                    "{{reason}}",
                )
            ],
            w=12,
        ),
        timeseries(
            "Ingest",
            "Events accepted and refused by this model's exporters.",
            "reqps",
            [
                target(
                    'sum(rate(mlmon_ingest_events_total{job=~"$job", model="$model"}'
                    "[$__rate_interval]))",
                    "accepted",
                ),
                target(
                    'sum(rate(mlmon_ingest_rejected_events_total{job=~"$job", '
                    'model="$model"}[$__rate_interval]))',
                    "refused",
                ),
            ],
            w=12,
        ),
        row("Inputs"),
        timeseries(
            "Drifted share of features",
            "Share of tested features that drifted over the "
            "last hour, all replicas together. Above the red line the whole dataset counts "
            "as drifted.",
            "percentunit",
            [
                target(
                    f"max by (version) (model_version:mlmon_drifted_features:"
                    f"ratio_increase1h{{{SEL}}})",
                    "{{version}}",
                ),
                target(th("drifted_features_ratio_max"), "limit"),
                *trends(
                    "model_version:mlmon_drifted_features:avg3d_ratio_increase1h",
                    "model_version:mlmon_drifted_features:avg7d_ratio_increase1h",
                    "max",
                ),
            ],
            threshold_legend="limit",
            trends=True,
            w=12,
        ),
        timeseries(
            "Feature drift (KS)",
            "Fleet KS distance per numeric feature over the last "
            "hour; the red line is the floor above which a feature counts as drifted. "
            "Click a series for the feature's drill-down.",
            "none",
            [
                target(
                    f"max by (feature) (model_version_feature:mlmon_feature_drift_ks:"
                    f"increase1h{{{SEL}}})",
                    "{{feature}}",
                ),
                target(th("drift_ks_min"), "floor"),
            ],
            threshold_legend="floor",
            w=12,
            overrides=[
                _by_regex(
                    "^(?!floor$).*",
                    [{"id": "links", "value": [{"title": "Feature drift", "url": drift_link}]}],
                )
            ],
        ),
        timeseries(
            "Categorical drift (PSI)",
            "Fleet PSI per categorical feature over the last hour; the red line is the floor.",
            "none",
            [
                target(
                    f"max by (feature) (model_version_feature:mlmon_feature_drift_psi:"
                    f"increase1h{{{SEL}}})",
                    "{{feature}}",
                ),
                target(th("drift_psi_min"), "floor"),
            ],
            threshold_legend="floor",
            w=12,
        ),
        timeseries(
            "Missing values",
            "Share of inferences where each feature is missing (15m).",
            "percentunit",
            [
                target(
                    f"max by (feature) (model_version_feature:mlmon_feature_missing:"
                    f"ratio_rate15m{{{SEL}}})",
                    "{{feature}}",
                )
            ],
            w=12,
        ),
        timeseries(
            "Out of range",
            "Share of each numeric feature's values outside the "
            "baseline's [min, max] (15m); the red line is the limit.",
            "percentunit",
            [
                target(
                    f"max by (feature) (model_version_feature:mlmon_feature_out_of_range:"
                    f"ratio_rate15m{{{SEL}}})",
                    "{{feature}}",
                ),
                target(th("out_of_range_ratio_max"), "limit"),
            ],
            threshold_legend="limit",
            w=12,
        ),
        timeseries(
            "Unseen categories",
            "Share of each categorical feature's values outside the baseline vocabulary (15m).",
            "percentunit",
            [
                target(
                    f"max by (feature) (model_version_feature:mlmon_feature_other_category:"
                    f"ratio_rate15m{{{SEL}}})",
                    "{{feature}}",
                )
            ],
            w=12,
        ),
        row("Predictions"),
        timeseries(
            "Prediction drift",
            "KS of the score (classifiers) or value (regression) "
            "distribution and PSI of the class mix over the last hour, against the "
            "baseline; the red line is the KS floor.",
            "none",
            [
                target(
                    f"max by (output) (model_version_output:mlmon_prediction_drift_ks:"
                    f"increase1h{{{SEL}}})",
                    "{{output}} KS",
                ),
                target(
                    f"max by (output) (model_version_output:mlmon_prediction_drift_psi:"
                    f"increase1h{{{SEL}}})",
                    "{{output}} PSI",
                ),
                target(th("drift_ks_min"), "floor"),
                *trends(
                    "model_version_output:mlmon_prediction_drift_ks:avg3d_increase1h",
                    "model_version_output:mlmon_prediction_drift_ks:avg7d_increase1h",
                    "max",
                ),
            ],
            threshold_legend="floor",
            trends=True,
            w=12,
        ),
        timeseries(
            "Predicted classes",
            "Share of each predicted class over the last hour "
            "(solid) against the baseline's share (dashed grey).",
            "percentunit",
            [
                target(
                    f"max by (class) (model_version_class:mlmon_prediction_class:"
                    f"ratio_increase1h{{{SEL}}})",
                    "{{class}}",
                ),
                target(
                    'max by (class) (mlmon_prediction_baseline_class_ratio{job=~"$job", '
                    'model="$model"})',
                    "baseline {{class}}",
                ),
            ],
            w=12,
            overrides=[_by_regex("^baseline .*", TREND_STYLE)],
        ),
        timeseries(
            "Score distribution",
            "Cumulative share of scores at or below each bucket "
            "edge over the last hour (solid) and in the baseline (dashed grey); a gap "
            "between the two is score drift.",
            "percentunit",
            [
                target(
                    f"max by (le) (model_version_le:mlmon_prediction_score_cdf:"
                    f"ratio_increase1h{{{SEL}}})",
                    "≤ {{le}}",
                ),
                target(
                    "max by (le) (model_le:mlmon_prediction_baseline_score_cdf:ratio"
                    '{model="$model"})',
                    "baseline ≤ {{le}}",
                ),
            ],
            w=24,
            overrides=[_by_regex("^baseline .*", TREND_STYLE)],
        ),
    ]
    return dashboard(
        "mlmon-model",
        "mlmon / Model overview",
        "One model: service, inputs and predictions.",
        panels,
        variables(),
    )


# ------------------------------------------------------------------- feature drift
def feature_drift() -> dict[str, Any]:
    panels = [
        row("Distribution"),
        timeseries(
            "Live vs baseline CDF",
            "Cumulative share of values at or below each "
            "histogram edge: the last hour (solid) against the baseline (dashed grey). "
            "The largest vertical gap is the KS distance.",
            "percentunit",
            [
                target(
                    f"max by (feature, le) (model_version_feature_le:mlmon_feature_value_"
                    f"cdf:ratio_increase1h{{{SELF}}})",
                    "{{feature}} ≤ {{le}}",
                ),
                target(
                    "max by (feature, le) (model_feature_le:mlmon_feature_baseline_cdf:"
                    'ratio{model="$model", feature=~"$feature"})',
                    "baseline {{feature}} ≤ {{le}}",
                ),
            ],
            w=12,
            overrides=[_by_regex("^baseline .*", TREND_STYLE)],
        ),
        timeseries(
            "Category mix",
            "Share of each category over the last hour (solid) against the baseline (dashed grey).",
            "percentunit",
            [
                target(
                    f"max by (feature, category) (model_version_feature_category:"
                    f"mlmon_feature_category:ratio_increase1h{{{SELF}}})",
                    "{{feature}}={{category}}",
                ),
                target(
                    "max by (feature, category) (model_feature_category:"
                    'mlmon_feature_baseline_category_ratio:max{model="$model", '
                    'feature=~"$feature"})',
                    "baseline {{feature}}={{category}}",
                ),
            ],
            w=12,
            overrides=[_by_regex("^baseline .*", TREND_STYLE)],
        ),
        row("Drift over time"),
        timeseries(
            "KS distance",
            "Fleet KS distance of each numeric feature over the last hour. "
            "Red dashed: the floor (drift_ks_min); grey dotted: 3-day and 7-day averages.",
            "none",
            [
                target(
                    f"max by (feature) (model_version_feature:mlmon_feature_drift_ks:"
                    f"increase1h{{{SELF}}})",
                    "{{feature}}",
                ),
                target(th("drift_ks_min"), "floor"),
                target(
                    f"max by (feature) (model_version_feature:mlmon_feature_drift_ks:"
                    f"avg3d_increase1h{{{SELF}}})",
                    "{{feature}} 3d avg",
                ),
                target(
                    f"max by (feature) (model_version_feature:mlmon_feature_drift_ks:"
                    f"avg7d_increase1h{{{SELF}}})",
                    "{{feature}} 7d avg",
                ),
            ],
            threshold_legend="floor",
            trends=True,
            w=12,
        ),
        timeseries(
            "PSI",
            "Fleet PSI of each categorical feature over the last hour. Red dashed: "
            "the floor (drift_psi_min); grey dotted: 3-day and 7-day averages.",
            "none",
            [
                target(
                    f"max by (feature) (model_version_feature:mlmon_feature_drift_psi:"
                    f"increase1h{{{SELF}}})",
                    "{{feature}}",
                ),
                target(th("drift_psi_min"), "floor"),
                target(
                    f"max by (feature) (model_version_feature:mlmon_feature_drift_psi:"
                    f"avg3d_increase1h{{{SELF}}})",
                    "{{feature}} 3d avg",
                ),
                target(
                    f"max by (feature) (model_version_feature:mlmon_feature_drift_psi:"
                    f"avg7d_increase1h{{{SELF}}})",
                    "{{feature}} 7d avg",
                ),
            ],
            threshold_legend="floor",
            trends=True,
            w=12,
        ),
        timeseries(
            "Exporter drift scores",
            "Each replica's own windowed statistics, by method "
            "(psi, js, ks, wasserstein, chi2): the exporter's view, per replica.",
            "none",
            [
                target(
                    f"max by (feature, method) (mlmon_feature_drift_score{{{SELF}, "
                    f'method=~"psi|js|ks|wasserstein"}})',
                    "{{feature}} {{method}}",
                )
            ],
            w=12,
        ),
        timeseries(
            "Corrected p-values",
            "p-value of each feature's test after multiple-testing "
            "correction, per replica; below the red line (alpha) and with enough effect a "
            "feature counts as drifted.",
            "none",
            [
                target(
                    f"min by (feature) (mlmon_feature_drift_adjusted_p_value{{{SELF}}})",
                    "{{feature}}",
                ),
                target('max(mlmon_threshold_drift_alpha{job=~"$job", model="$model"})', "alpha"),
            ],
            threshold_legend="alpha",
            w=12,
            log_scale=True,
        ),
        row("Data quality"),
        timeseries(
            "Missing values",
            "Share of inferences where the feature is missing (15m), "
            "against the baseline's share (dashed grey).",
            "percentunit",
            [
                target(
                    f"max by (feature) (model_version_feature:mlmon_feature_missing:"
                    f"ratio_rate15m{{{SELF}}})",
                    "{{feature}}",
                ),
                target(
                    "max by (feature) (model_feature:mlmon_feature_baseline_missing_ratio:"
                    'max{model="$model", feature=~"$feature"})',
                    "baseline {{feature}}",
                ),
            ],
            w=8,
            overrides=[_by_regex("^baseline .*", TREND_STYLE)],
        ),
        timeseries(
            "Out of range",
            "Share of values outside the baseline's [min, max] (15m); the red line is the limit.",
            "percentunit",
            [
                target(
                    f"max by (feature) (model_version_feature:mlmon_feature_out_of_range:"
                    f"ratio_rate15m{{{SELF}}})",
                    "{{feature}}",
                ),
                target(th("out_of_range_ratio_max"), "limit"),
            ],
            threshold_legend="limit",
            w=8,
        ),
        timeseries(
            "Unseen categories",
            "Share of values outside the baseline vocabulary (15m), "
            "against the baseline's __other__ share (dashed grey).",
            "percentunit",
            [
                target(
                    f"max by (feature) (model_version_feature:mlmon_feature_other_"
                    f"category:ratio_rate15m{{{SELF}}})",
                    "{{feature}}",
                ),
                target(
                    "max by (feature) (model_feature:mlmon_feature_baseline_other_"
                    'category_ratio:max{model="$model", feature=~"$feature"})',
                    "baseline {{feature}}",
                ),
            ],
            w=8,
            overrides=[_by_regex("^baseline .*", TREND_STYLE)],
        ),
    ]
    return dashboard(
        "mlmon-feature-drift",
        "mlmon / Feature drift",
        "Per feature: live against baseline, drift over time, data quality.",
        panels,
        variables(feature=True),
    )


# ------------------------------------------------------------------- performance
def performance() -> dict[str, Any]:
    panels = [
        row("Headline"),
        stat(
            "Accuracy (1d)",
            "Share of the last day's labelled predictions that were right, all "
            "replicas; red below accuracy_min.",
            "percentunit",
            [target(f"min(model_version:mlmon_accuracy:ratio_increase1d{{{SEL}}})", "accuracy")],
            limit=0.7,
            direction="below",
        ),
        stat(
            "F1 (1d)",
            "F1 of the positive class over the last day; red below f1_min.",
            "percentunit",
            [target(f"min(model_version:mlmon_f1:ratio_increase1d{{{SEL}}})", "F1")],
            limit=0.5,
            direction="below",
        ),
        stat(
            "ROC AUC",
            "Each replica's windowed area under the ROC curve (worst replica).",
            "percentunit",
            [target(f"min(mlmon_roc_auc{{{SEL}}})", "AUC")],
            limit=0.5,
            direction="below",
        ),
        stat(
            "Calibration error",
            "Windowed expected calibration error (worst replica); red above calibration_error_max.",
            "percentunit",
            [target(f"max(mlmon_expected_calibration_error{{{SEL}}})", "ECE")],
            limit=0.1,
        ),
        row("Over time"),
        timeseries(
            "Accuracy: realised and estimated",
            "Realised accuracy of labelled "
            "predictions (last day, fleet) and each replica's label-free estimate from the "
            "scores. The estimate arrives at once; the realised value when the labels do. "
            "Red dashed: accuracy_min; grey dotted: 3-day and 7-day averages.",
            "percentunit",
            [
                target(
                    f"min by (version) (model_version:mlmon_accuracy:ratio_increase1d{{{SEL}}})",
                    "{{version}} realised",
                ),
                target(
                    f"min by (version) (mlmon_estimated_accuracy{{{SEL}}})", "{{version}} estimated"
                ),
                target(th("accuracy_min"), "minimum"),
                *trends(
                    "model_version:mlmon_accuracy:avg3d_ratio_increase1d",
                    "model_version:mlmon_accuracy:avg7d_ratio_increase1d",
                    "min",
                ),
            ],
            threshold_legend="minimum",
            trends=True,
            w=12,
        ),
        timeseries(
            "Precision, recall, F1, FNR",
            "Positive-class metrics over the last day's "
            "labelled predictions (fleet). Red dashed: the false-negative-rate maximum.",
            "percentunit",
            [
                target(
                    f"min(model_version:mlmon_precision:ratio_increase1d{{{SEL}}})", "precision"
                ),
                target(f"min(model_version:mlmon_recall:ratio_increase1d{{{SEL}}})", "recall"),
                target(f"min(model_version:mlmon_f1:ratio_increase1d{{{SEL}}})", "F1"),
                target(
                    f"max(model_version:mlmon_false_negative_rate:ratio_increase1d{{{SEL}}})", "FNR"
                ),
                target(th("false_negative_rate_max"), "FNR maximum"),
            ],
            threshold_legend="FNR maximum",
            w=12,
        ),
        timeseries(
            "Calibration",
            "Windowed expected calibration error and Brier score (worst "
            "replica); red dashed: calibration_error_max.",
            "none",
            [
                target(
                    f"max by (version) (mlmon_expected_calibration_error{{{SEL}}})",
                    "{{version}} ECE",
                ),
                target(f"max by (version) (mlmon_brier_score{{{SEL}}})", "{{version}} Brier"),
                target(th("calibration_error_max"), "ECE maximum"),
            ],
            threshold_legend="ECE maximum",
            w=12,
        ),
        timeseries(
            "Estimated vs realised (per replica window)",
            "Each replica's windowed "
            "estimates from the scores next to the realised values: a realised value that "
            "falls while its estimate holds is concept drift.",
            "percentunit",
            [
                target(
                    f"max by (version) (mlmon_estimated_precision{{{SEL}}})",
                    "{{version}} precision estimated",
                ),
                target(
                    f"min by (version) (mlmon_precision{{{SEL}}})", "{{version}} precision realised"
                ),
                target(
                    f"max by (version) (mlmon_estimated_recall{{{SEL}}})",
                    "{{version}} recall estimated",
                ),
                target(f"min by (version) (mlmon_recall{{{SEL}}})", "{{version}} recall realised"),
            ],
            w=12,
        ),
        row("Labels"),
        timeseries(
            "Labels by outcome",
            "Labels received per second: matched to a prediction, "
            "unmatched (unknown id), expired, duplicate.",
            "reqps",
            [
                target(
                    'sum by (outcome) (rate(mlmon_labels_total{job=~"$job", '
                    'model="$model"}[$__rate_interval]))',
                    "{{outcome}}",
                )
            ],
            w=12,
        ),
        timeseries(
            "Label delay",
            "Time from prediction to label: median and 90th percentile "
            "of the labels joined recently.",
            "s",
            [
                target(
                    "histogram_quantile(0.5, sum by (le) (rate(mlmon_label_delay_seconds_"
                    f"bucket{{{SEL}}}[$__rate_interval])))",
                    "p50",
                ),
                target(
                    "histogram_quantile(0.9, sum by (le) (rate(mlmon_label_delay_seconds_"
                    f"bucket{{{SEL}}}[$__rate_interval])))",
                    "p90",
                ),
            ],
            w=12,
        ),
    ]
    return dashboard(
        "mlmon-performance",
        "mlmon / Performance",
        "Labelled performance, calibration, label-free estimates and label flow.",
        panels,
        variables(),
    )


# ------------------------------------------------------------------- fairness
def fairness() -> dict[str, Any]:
    fsel = SEL + ', attribute=~"$attribute"'
    panels = [
        row("Selection"),
        timeseries(
            "Disparate impact",
            "Each group's selection rate over the last day divided by "
            "the most favoured group's (fleet). Below the red dashed line (0.8: the "
            "four-fifths rule) a group is disadvantaged; grey dotted: 3-day and 7-day "
            "averages.",
            "percentunit",
            [
                target(
                    "min by (attribute, group) (model_version_attribute_group:"
                    f"mlmon_disparate_impact:ratio_increase1d{{{fsel}}})",
                    "{{attribute}}={{group}}",
                ),
                target(th("disparate_impact_min"), "minimum"),
                target(
                    "min by (attribute, group) (model_version_attribute_group:"
                    f"mlmon_disparate_impact:avg3d_ratio_increase1d{{{fsel}}})",
                    "{{attribute}}={{group}} 3d avg",
                ),
                target(
                    "min by (attribute, group) (model_version_attribute_group:"
                    f"mlmon_disparate_impact:avg7d_ratio_increase1d{{{fsel}}})",
                    "{{attribute}}={{group}} 7d avg",
                ),
            ],
            threshold_legend="minimum",
            trends=True,
            w=12,
        ),
        timeseries(
            "Selection rate",
            "Share of each group's predictions that are positive, last day (fleet).",
            "percentunit",
            [
                target(
                    "max by (attribute, group) (model_version_attribute_group:"
                    f"mlmon_selection_rate:ratio_increase1d{{{fsel}}})",
                    "{{attribute}}={{group}}",
                )
            ],
            w=12,
        ),
        row("Errors by group"),
        timeseries(
            "True-positive rate",
            "Each replica's windowed true-positive rate per group "
            "(equal opportunity asks for these to match).",
            "percentunit",
            [
                target(
                    f"max by (attribute, group) (mlmon_fairness_true_positive_rate{{{fsel}}})",
                    "{{attribute}}={{group}}",
                )
            ],
            w=8,
        ),
        timeseries(
            "False-positive rate",
            "Each replica's windowed false-positive rate per group.",
            "percentunit",
            [
                target(
                    f"max by (attribute, group) (mlmon_fairness_false_positive_rate{{{fsel}}})",
                    "{{attribute}}={{group}}",
                )
            ],
            w=8,
        ),
        timeseries(
            "Differences from the reference",
            "Demographic-parity difference (selection "
            "rate) and equal-opportunity difference (true-positive rate) of each group "
            "against the reference group (configured, else the most favoured).",
            "percentunit",
            [
                target(
                    "min by (attribute, group) (mlmon_fairness_demographic_parity_"
                    f"difference{{{fsel}}})",
                    "{{attribute}}={{group}} parity",
                ),
                target(
                    "min by (attribute, group) (mlmon_fairness_equal_opportunity_"
                    f"difference{{{fsel}}})",
                    "{{attribute}}={{group}} opportunity",
                ),
            ],
            w=8,
        ),
    ]
    templ = variables()
    templ.append(
        {
            "name": "attribute",
            "label": "Attribute",
            "type": "query",
            "datasource": DS,
            "query": {
                "query": 'label_values(mlmon_group_predictions_total{job=~"$job", '
                'model="$model"}, attribute)',
                "refId": "attribute-var",
            },
            "definition": 'label_values(mlmon_group_predictions_total{job=~"$job", '
            'model="$model"}, attribute)',
            "refresh": 2,
            "sort": 1,
            "multi": True,
            "includeAll": True,
            "allValue": ".+",
            "current": {},
            "options": [],
            "hide": 0,
        }
    )
    return dashboard(
        "mlmon-fairness",
        "mlmon / Fairness",
        "Outcomes by sensitive group: selection rates, disparate impact, error rates.",
        panels,
        templ,
    )


# ------------------------------------------------------------------- versions
def versions() -> dict[str, Any]:
    mv = 'job=~"$job", model="$model"'
    panels = [
        row("Traffic and accuracy"),
        timeseries(
            "Traffic share",
            "Share of the model's inferences each version serves.",
            "percentunit",
            [
                target(
                    f"sum by (version) (model_version:mlmon_inference_requests:rate5m"
                    f"{{{mv}}}) / scalar(sum(model_version:mlmon_inference_requests:"
                    f"rate5m{{{mv}}}))",
                    "{{version}}",
                )
            ],
            w=8,
        ),
        timeseries(
            "Accuracy by version",
            "Accuracy of each version's labelled predictions over "
            "the last day (fleet); red dashed: accuracy_min.",
            "percentunit",
            [
                target(
                    f"min by (version) (model_version:mlmon_accuracy:ratio_increase1d{{{mv}}})",
                    "{{version}}",
                ),
                target(th("accuracy_min"), "minimum"),
            ],
            threshold_legend="minimum",
            w=8,
        ),
        timeseries(
            "p99 latency by version",
            "99th-percentile latency of each version.",
            "s",
            [
                target(
                    f"max by (version) (model_version:mlmon_inference_latency_seconds:"
                    f"p99_rate5m{{{mv}}})",
                    "{{version}}",
                )
            ],
            w=8,
        ),
        row("Challengers against the champion"),
        timeseries(
            "Accuracy difference",
            "Each challenger's windowed accuracy minus the champion's (negative: worse).",
            "percentunit",
            [
                target(
                    f"min by (version, champion) (mlmon_version_accuracy_difference{{{mv}}})",
                    "{{version}} vs {{champion}}",
                )
            ],
            w=12,
        ),
        timeseries(
            "Significance",
            "Two-proportion z-test p-value of the accuracy difference; "
            "below the red dashed line the difference counts as real.",
            "none",
            [
                target(
                    f"min by (version, champion) (mlmon_version_accuracy_p_value{{{mv}}})",
                    "{{version}} vs {{champion}}",
                ),
                target(th("challenger_p_value_max"), "significance level"),
            ],
            threshold_legend="significance level",
            w=12,
            log_scale=True,
        ),
        timeseries(
            "Prediction drift between versions",
            "KS (scores) and Jensen-Shannon "
            "(classes) of each challenger's predictions against the champion's.",
            "none",
            [
                target(
                    f"max by (version, champion, method) (mlmon_version_prediction_drift{{{mv}}})",
                    "{{version}} vs {{champion}} {{method}}",
                )
            ],
            w=12,
        ),
        timeseries(
            "Latency ratio",
            "A challenger's mean latency divided by the champion's (1: as fast).",
            "none",
            [
                target(
                    f"max by (version, champion) (mlmon_version_latency_ratio{{{mv}}})",
                    "{{version}} vs {{champion}}",
                )
            ],
            w=12,
        ),
    ]
    return dashboard(
        "mlmon-versions",
        "mlmon / Champion vs challenger",
        "Model versions side by side: traffic, accuracy, significance, drift, latency.",
        panels,
        variables(),
    )


DASHBOARDS = {
    "mlmon-fleet.json": fleet,
    "mlmon-model.json": model,
    "mlmon-feature-drift.json": feature_drift,
    "mlmon-performance.json": performance,
    "mlmon-fairness.json": fairness,
    "mlmon-versions.json": versions,
}


def render() -> dict[Path, str]:
    return {
        OUT / name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        for name, build in DASHBOARDS.items()
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="fail if a committed file differs")
    args = ap.parse_args()
    stale = []
    for path, text in render().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(
            f"stale dashboards (run python grafana/generate.py): {', '.join(stale)}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
