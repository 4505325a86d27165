"""Fleet overview: every monitored model on one screen."""

from __future__ import annotations

from typing import NamedTuple

from bundle.dashboards.board import dashboard, variables
from bundle.dashboards.panels import Json, by_name, row, stat, steps, table, target, timeseries
from bundle.dashboards.queries import JOB, agg, rate
from bundle.formats import percent
from bundle.params import Params

DRIFTED = "model_version_feature:mlmon_feature_drifted:increase1h"


class Column(NamedTuple):
    name: str
    expr: str
    unit: str
    limit: float | None  # the red step; None: no colour
    direction: str = "above"  # red from the limit up; the performance columns below it
    dashboard: str = "model"  # the dashboard a click opens: one that draws this signal


def of_own_limit(fn: str, rule: str, threshold: str) -> str:
    """Each model's worst ``rule`` as a share of its own ``threshold`` series (the one its
    alert compares with): 1 is the limit, whatever the model configured."""
    return f"{agg(fn, rule, JOB, 'model')} / on (model) model:mlmon_threshold_{threshold}:max"


def columns() -> list[Column]:
    """One column per headline signal. A table colours a column with one set of
    thresholds, so a column that each model limits differently shows the signal as a share
    of the model's own limit (red past 100%), and its raw value is one click away."""
    alerts = 'ALERTS{alertstate="firing", alertname=~"MLModel.*"}'
    every_model = f"{agg('max', 'mlmon_model_info', JOB, 'model')} * 0"
    return [
        Column(
            "Traffic",
            agg("sum", "model_version:mlmon_inference_requests:rate5m", JOB, "model"),
            "reqps",
            None,
        ),
        Column(
            "Error ratio (% of budget)",
            of_own_limit(
                "max", "model_version:mlmon_inference_error_ratio:ratio_rate5m", "error_ratio_max"
            ),
            "percentunit",
            1,
        ),
        Column(
            "Drifted features",
            f"count by (model) (max by (model, feature) ({DRIFTED}{{{JOB}}}) > 0) or {every_model}",
            "short",
            1,  # any drifted feature: MLModelFeatureDrift fires for each
        ),
        Column(
            "Drifted share (% of limit)",
            of_own_limit(
                "max",
                "model_version:mlmon_drifted_features:ratio_increase1h",
                "drifted_features_ratio_max",
            ),
            "percentunit",
            1,
        ),
        Column(
            "Prediction drift (% of KS floor)",
            of_own_limit(
                "max", "model_version_output:mlmon_prediction_drift_ks:increase1h", "drift_ks_min"
            ),
            "percentunit",
            1,
        ),
        Column(
            "Accuracy (% of minimum)",
            of_own_limit("min", "model_version:mlmon_accuracy:ratio_increase1d", "accuracy_min"),
            "percentunit",
            1,
            "below",
            "performance",
        ),
        Column(
            "Disparate impact (% of minimum)",
            of_own_limit(
                "min",
                "model_version_attribute_group:mlmon_disparate_impact:ratio_increase1d",
                "disparate_impact_min",
            ),
            "percentunit",
            1,
            "below",
            "fairness",
        ),
        Column("Firing alerts", f"count by (model) ({alerts}) or {every_model}", "short", 1),
    ]


def cell_link(p: Params, name: str) -> list[Json]:
    title = {"model": "Model overview", "performance": "Performance", "fairness": "Fairness"}
    return [
        {
            "title": title[name],
            "url": p.dashboard_path(name) + "?var-model=${__data.fields.model}&${__url_time_range}",
        }
    ]


def column_overrides(p: Params, cols: list[Column]) -> list[Json]:
    overrides = [
        by_name(
            "model",
            [
                {"id": "links", "value": cell_link(p, "model")},
                {"id": "displayName", "value": "Model"},
            ],
        )
    ]
    for i, c in enumerate(cols):
        props: list[Json] = [
            {"id": "displayName", "value": c.name},
            {"id": "unit", "value": c.unit},
            {"id": "links", "value": cell_link(p, c.dashboard)},
        ]
        if c.limit is not None:
            props += [
                {"id": "custom.cellOptions", "value": {"type": "color-background"}},
                {"id": "thresholds", "value": steps(c.limit, c.direction)},
            ]
        overrides.append(by_name(f"Value #{chr(ord('A') + i)}", props))
    return overrides


def models_table(p: Params) -> Json:
    """One row per model, one column per headline signal, each cell red past the model's
    own limit and linked to the dashboard that draws that signal."""
    cols = columns()
    return table(
        "Models",
        "One row per model. Error ratio, drifted share, prediction drift, accuracy and "
        "disparate impact are shown as a share of the model's own limit (the value its "
        "alert compares with), red past 100% (accuracy and disparate impact: below); "
        "drifted features and firing alerts are red from one. Click a cell for the "
        "dashboard that draws it.",
        "short",
        [target(c.expr, c.name, instant=True, fmt="table") for c in cols],
        column_overrides(p, cols),
        [
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {"excludeByName": {"Time": True}}},
        ],
        h=8,
    )


def trends() -> list[Json]:
    def by_model(title: str, description: str, unit: str, fn: str, rule: str) -> Json:
        return timeseries(
            title, description, unit, [target(agg(fn, rule, JOB, "model"), "{{model}}")], w=8
        )

    return [
        row("Trends"),
        by_model(
            "Traffic by model",
            "Inferences per second across all replicas and versions.",
            "reqps",
            "sum",
            "model_version:mlmon_inference_requests:rate5m",
        ),
        by_model(
            "Error ratio by model",
            "Share of failed inferences (5m). Compare with each "
            "model's error budget on its overview.",
            "percentunit",
            "max",
            "model_version:mlmon_inference_error_ratio:ratio_rate5m",
        ),
        by_model(
            "Drifted share by model",
            "Share of each model's tested features that drifted over the last hour (fleet-wide).",
            "percentunit",
            "max",
            "model_version:mlmon_drifted_features:ratio_increase1h",
        ),
    ]


def alerts_and_exporters(p: Params) -> list[Json]:
    limit = p.ingest_rejected_ratio_max
    up = f"up{{{p.job_selector}, {JOB}}}"
    return [
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
            "Scrape targets of the mlmon job that answer; red when any is down (fewer up "
            "than there are targets).",
            "short",
            [target(f"sum({up}) or on () vector(0)", "up")],
            limit=f"count({up})",
            direction="below",
            w=4,
            h=8,
        ),
        stat(
            "Ingest refused",
            "Share of ingest requests the exporters refused over 5 minutes "
            f"(limit {percent(limit)}).",
            "percentunit",
            [
                target(
                    f"sum({rate('mlmon_ingest_rejected_requests_total', JOB)})"
                    f" / clamp_min(sum({rate('mlmon_ingest_requests_total', JOB)}), 1e-9)",
                    "refused",
                )
            ],
            limit=limit,
            w=4,
            h=8,
        ),
    ]


def exporter_health(p: Params) -> list[Json]:
    """What the sidecar itself costs: its process and its proxy's, and how long one scrape
    of /metrics takes to render."""
    process = f"{p.job_selector}, {JOB}"  # process_* are not mlmon's own names
    render = rate("mlmon_scrape_render_seconds_bucket", JOB)
    return [
        row("Exporter health"),
        timeseries(
            "CPU",
            "CPU time per second of each exporter process and of its proxy process "
            "(1 = one core busy).",
            "percentunit",
            [
                target(
                    f"sum by (instance) ({rate('process_cpu_seconds_total', process)})",
                    "{{instance}} exporter",
                ),
                target(
                    f"sum by (instance) ({rate('mlmon_proxy_process_cpu_seconds_total', JOB)})",
                    "{{instance}} proxy",
                ),
            ],
            w=8,
        ),
        timeseries(
            "Memory",
            "Resident memory of each exporter process and of its proxy process.",
            "bytes",
            [
                target(
                    agg("max", "process_resident_memory_bytes", process, "instance"),
                    "{{instance}} exporter",
                ),
                target(
                    agg("max", "mlmon_proxy_process_resident_memory_bytes", JOB, "instance"),
                    "{{instance}} proxy",
                ),
            ],
            w=8,
        ),
        timeseries(
            "Scrape render time",
            "Time the exporter takes to render one /metrics scrape: median and 99th "
            "percentile over the scrapes of the interval, all exporters.",
            "s",
            [
                target(f"histogram_quantile({q}, sum by (le) ({render}))", f"p{round(q * 100)}")
                for q in (0.5, 0.99)
            ],
            w=8,
        ),
    ]


def build(p: Params) -> Json:
    panels = [
        row("Every model"),
        models_table(p),
        *trends(),
        *alerts_and_exporters(p),
        *exporter_health(p),
    ]
    return dashboard(
        p.dashboards["fleet"].uid,
        "mlmon / Fleet overview",
        "Every monitored model on one screen.",
        panels,
        variables(p, model=False),
        alerts='alertname=~"(MLModel|Mlmon).*"',
    )
