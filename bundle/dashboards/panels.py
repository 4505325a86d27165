"""The panel kinds, each on one shared default, so every panel has a title, a description
that says how to read it, a unit, and thresholds where a limit exists.

One palette everywhere: live series in the classic palette, thresholds red and dashed,
3-day and 7-day averages and baselines grey and dotted.
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]

DS = {"type": "prometheus", "uid": "${datasource}"}
RED, GREEN, GREY = "red", "green", "#8e8e8e"
LIMIT = "limit"  # legend of a threshold query that colours a stat tile

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


def target(
    expr: str, legend: str = "", instant: bool = False, ref: str = "A", fmt: str = "time_series"
) -> Json:
    return {
        "refId": ref,
        "datasource": DS,
        "expr": expr,
        "legendFormat": legend,
        "range": not instant,
        "instant": instant,
        "format": fmt,
    }


def _refs(targets: list[Json]) -> list[Json]:
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    return targets


def steps(limit: float | None, direction: str = "above") -> Json:
    """Green, and red above (or below) ``limit``."""
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


def by_name(name: str, props: list[Json]) -> Json:
    return {"matcher": {"id": "byName", "options": name}, "properties": props}


def by_regex(pattern: str, props: list[Json]) -> Json:
    return {"matcher": {"id": "byRegexp", "options": pattern}, "properties": props}


def panel(
    kind: str,
    title: str,
    description: str,
    unit: str,
    targets: list[Json],
    w: int = 12,
    h: int = 8,
    thresholds: Json | None = None,
    overrides: list[Json] | None = None,
    options: Json | None = None,
    custom: Json | None = None,
    **extra: Any,
) -> Json:
    p: Json = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"h": h, "w": w, "x": 0, "y": 0},
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "color": {"mode": "palette-classic"},
                "thresholds": thresholds or steps(None),
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
    targets: list[Json],
    threshold_legend: str | tuple[str, ...] | None = None,
    trends: bool = False,
    log_scale: bool = False,
    baseline: bool = False,
    **kw: Any,
) -> Json:
    """A time series. The targets whose legend is ``threshold_legend`` (one or several; a
    legend starting with "^" is a regular expression) are drawn as red dashed limit lines;
    with ``trends``, legends with "3d avg" or "7d avg" as grey dotted lines; with
    ``baseline``, legends starting with "baseline " the same way; ``log_scale`` for
    p-values."""
    overrides = list(kw.pop("overrides", []))
    limits = (threshold_legend,) if isinstance(threshold_legend, str) else threshold_legend
    for legend in limits or ():
        match = by_regex if legend.startswith("^") else by_name
        overrides.append(match(legend, THRESHOLD_STYLE))
    if trends:
        overrides.append(by_regex(".*(3d|7d) avg.*", TREND_STYLE))
    if baseline:
        overrides.append(by_regex("^baseline .*", TREND_STYLE))
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


def limit_from_query(ref: str, direction: str = "above") -> Json:
    """Grafana's "Config from query results": the value of query ``ref`` (legend "limit")
    becomes the field's threshold step, red above it (or green from it, ``direction``
    "below"); the panel's own base step colours the rest. Grafana 11.6 keeps that base step
    (setFieldConfigDefaults in @grafana/data), so "below" tiles are red under the limit."""
    return {
        "id": "configFromData",
        "options": {
            "configRefId": ref,
            "mappings": [
                {
                    "fieldName": LIMIT,
                    "handlerKey": "threshold1",
                    "reducerId": "lastNotNull",
                    "handlerArguments": {
                        "threshold": {"color": RED if direction == "above" else GREEN}
                    },
                }
            ],
            "applyTo": {"id": "byFrameRefID", "options": "A"},
        },
    }


def base_step(direction: str = "above") -> Json:
    """The colour below the first threshold: green when red means "above the limit"."""
    return {
        "mode": "absolute",
        "steps": [{"color": GREEN if direction == "above" else RED, "value": None}],
    }


def stat(
    title: str,
    description: str,
    unit: str,
    targets: list[Json],
    limit: float | str | None = None,
    direction: str = "above",
    w: int = 6,
    h: int = 4,
    **kw: Any,
) -> Json:
    """A big number on a coloured background. ``limit`` is a fixed number where the limit is
    a rule rather than a setting (any drifted feature, an AUC no better than chance), or the
    PromQL of a threshold series: then the step comes from that series at query time, so a
    model with its own threshold is coloured against its own alert."""
    thresholds = steps(limit if not isinstance(limit, str) else None, direction)
    if isinstance(limit, str):
        targets = [*targets, target(limit, LIMIT)]
        thresholds = base_step(direction)
        kw["transformations"] = [limit_from_query(chr(ord("A") + len(targets) - 1), direction)]
    return panel(
        "stat",
        title,
        description,
        unit,
        targets,
        w=w,
        h=h,
        thresholds=thresholds,
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
    targets: list[Json],
    overrides: list[Json],
    transformations: list[Json],
    w: int = 24,
    h: int = 8,
) -> Json:
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
            "footer": {"show": False, "reducer": ["sum"]},
        },
        custom={"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False},
        transformations=transformations,
    )


def row(title: str) -> Json:
    return {
        "type": "row",
        "title": title,
        "collapsed": False,
        "panels": [],
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0},
    }
