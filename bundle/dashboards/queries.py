"""PromQL the panels share: the variable selectors, an aggregation of a recording rule, the
threshold series that draw red lines, and the 3-day and 7-day trend lines."""

from __future__ import annotations

from bundle.dashboards.panels import Json, target

JOB = 'job=~"$job"'
SEL = 'job=~"$job", model="$model", version=~"$version"'


def agg(fn: str, series: str, sel: str = SEL, by: str | None = None) -> str:
    """``max(series{sel})``, or ``max by (x) (series{sel})``."""
    inner = f"{series}{{{sel}}}"
    return f"{fn} by ({by}) ({inner})" if by else f"{fn}({inner})"


def rate(metric: str, sel: str) -> str:
    return f"rate({metric}{{{sel}}}[$__rate_interval])"


def th(name: str) -> str:
    """The model's threshold ``name``: its configured value, else the exporter's default."""
    return f'max(model:mlmon_threshold_{name}:max{{model="$model"}})'


def averaged(rule: str, days: int) -> str:
    """The trend rule of a recording rule: ``level:metric:avg3d_operations``."""
    level_metric, operations = rule.rsplit(":", 1)
    return f"{level_metric}:avg{days}d_{operations}"


def trends(
    fn: str, rule: str, sel: str = SEL, by: str | None = None, legend: str = ""
) -> list[Json]:
    """The 3-day and 7-day averages of ``rule``, legends "3d avg" and "7d avg" (after
    ``legend``), which timeseries(trends=True) draws grey and dotted."""
    prefix = f"{legend} " if legend else ""
    return [
        target(agg(fn, averaged(rule, days), sel, by), f"{prefix}{days}d avg") for days in (3, 7)
    ]
