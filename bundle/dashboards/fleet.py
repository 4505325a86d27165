"""Fleet overview: every monitored model on one screen."""

from __future__ import annotations

from typing import NamedTuple

from bundle.dashboards.board import dashboard, variables
from bundle.dashboards.panels import Json, by_name, row, stat, steps, table, target, timeseries
from bundle.dashboards.queries import JOB, agg, rate
from bundle.formats import number, percent
from bundle.params import Params


class Column(NamedTuple):
    name: str
    expr: str
    unit: str
    limit: float | None
    direction: str = "above"  # red above the limit; the performance columns below it


def columns(p: Params) -> list[Column]:
    d = p.defaults
    alerts = 'ALERTS{alertstate="firing", alertname=~"MLModel.*"}'
    return [
        Column(
            "Traffic",
            agg("sum", "model_version:mlmon_inference_requests:rate5m", JOB, "model"),
            "reqps",
            None,
        ),
        Column(
            "Error ratio",
            agg("max", "model_version:mlmon_inference_error_ratio:ratio_rate5m", JOB, "model"),
            "percentunit",
            d["error_ratio_max"],
        ),
        Column(
            "Drifted features",
            agg("sum", "model_version_feature:mlmon_feature_drifted:increase1h", JOB, "model"),
            "short",
            1,  # any drifted feature
        ),
        Column(
            "Drifted share",
            agg("max", "model_version:mlmon_drifted_features:ratio_increase1h", JOB, "model"),
            "percentunit",
            d["drifted_features_ratio_max"],
        ),
        Column(
            "Prediction drift",
            agg("max", "model_version_output:mlmon_prediction_drift_ks:increase1h", JOB, "model"),
            "none",
            d["drift_ks_min"],
        ),
        Column(
            "Accuracy (1d)",
            agg("min", "model_version:mlmon_accuracy:ratio_increase1d", JOB, "model"),
            "percentunit",
            d["accuracy_min"],
            "below",
        ),
        Column(
            "Disparate impact (min)",
            agg(
                "min",
                "model_version_attribute_group:mlmon_disparate_impact:ratio_increase1d",
                JOB,
                "model",
            ),
            "percentunit",
            d["disparate_impact_min"],
            "below",
        ),
        Column(
            "Firing alerts",
            f"count by (model) ({alerts}) or {agg('max', 'mlmon_model_info', JOB, 'model')} * 0",
            "short",
            1,
        ),
    ]


def models_table(p: Params) -> Json:
    """One row per model, one column per headline signal, each cell red past its default
    limit and linked to the model's overview."""
    link = [
        {
            "title": "Model overview",
            "url": p.dashboard_path("model")
            + "?var-model=${__data.fields.model}&${__url_time_range}",
        }
    ]
    cols = columns(p)
    overrides = [
        by_name("model", [{"id": "links", "value": link}, {"id": "displayName", "value": "Model"}])
    ]
    for i, c in enumerate(cols):
        props: list[Json] = [
            {"id": "displayName", "value": c.name},
            {"id": "unit", "value": c.unit},
            {"id": "custom.cellOptions", "value": {"type": "color-background"}},
            {"id": "thresholds", "value": steps(c.limit, c.direction)},
            {"id": "links", "value": link},
        ]
        overrides.append(by_name(f"Value #{chr(ord('A') + i)}", props))
    d = p.defaults
    return table(
        "Models",
        f"One row per model. Cells turn red past the default limits (error ratio "
        f"{percent(d['error_ratio_max'])}, one drifted feature, "
        f"{percent(d['drifted_features_ratio_max'])} drifted share, prediction KS "
        f"{number(d['drift_ks_min'])}, accuracy below {percent(d['accuracy_min'])}, "
        f"disparate impact below {percent(d['disparate_impact_min'])}, any firing alert); "
        "a model's own limits are on its overview. Click a model for its overview.",
        "short",
        [target(c.expr, c.name, instant=True, fmt="table") for c in cols],
        overrides,
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
            "Scrape targets of the mlmon job that answer; red when any is down.",
            "short",
            [target(f"sum(up{{{p.job_selector}, {JOB}}}) or on () vector(0)", "up")],
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


def build(p: Params) -> Json:
    panels = [row("Every model"), models_table(p), *trends(), *alerts_and_exporters(p)]
    return dashboard(
        p.dashboards["fleet"].uid,
        "mlmon / Fleet overview",
        "Every monitored model on one screen.",
        panels,
        variables(p, model=False),
    )
