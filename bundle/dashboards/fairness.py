"""Fairness: outcomes by sensitive group (selection rates, disparate impact, error rates)."""

from __future__ import annotations

from bundle.dashboards.board import MODEL, dashboard, query_var, variables
from bundle.dashboards.panels import Json, row, target, timeseries
from bundle.dashboards.queries import SEL, agg, th, trends
from bundle.params import Params

FSEL = SEL + ', attribute=~"$attribute"'
BY = "attribute, group"
GROUP = "{{attribute}}={{group}}"  # legend: the group
DAY = "model_version_attribute_group:mlmon_{}:ratio_increase1d"  # fleet, over the last day


def by_group(title: str, description: str, fn: str, series: str) -> Json:
    """One line per group of a per-group series."""
    return timeseries(
        title, description, "percentunit", [target(agg(fn, series, FSEL, BY), GROUP)], w=8
    )


def selection() -> list[Json]:
    impact = DAY.format("disparate_impact")
    return [
        row("Selection"),
        timeseries(
            "Disparate impact",
            "Each group's selection rate over the last day divided by "
            "the most favoured group's (fleet). Below the red dashed line "
            "(disparate_impact_min; 0.8 by default, the four-fifths rule) a group is "
            "disadvantaged; grey dotted: 3-day and 7-day averages.",
            "percentunit",
            [
                target(agg("min", impact, FSEL, BY), GROUP),
                target(th("disparate_impact_min"), "minimum"),
                *trends("min", impact, FSEL, BY, GROUP),
            ],
            threshold_legend="minimum",
            trends=True,
            w=12,
        ),
        timeseries(
            "Selection rate",
            "Share of each group's predictions that are positive, last day (fleet).",
            "percentunit",
            [target(agg("max", DAY.format("selection_rate"), FSEL, BY), GROUP)],
            w=12,
        ),
    ]


def differences() -> Json:
    """The two differences the fairness alerts compare with their limits, either sign."""
    lines = [
        target(agg("min", DAY.format(f"{d}_difference"), FSEL, BY), f"{GROUP} {short}")
        for d, short in (("demographic_parity", "parity"), ("equal_opportunity", "opportunity"))
    ]
    for d, short in (("demographic_parity", "parity"), ("equal_opportunity", "opportunity")):
        lines += [
            target(th(f"{d}_difference_max"), f"{short} limit"),
            target(f"-{th(f'{d}_difference_max')}", f"{short} -limit"),
        ]
    return timeseries(
        "Differences from the reference",
        "Demographic-parity difference (selection rate) and equal-opportunity difference "
        "(true-positive rate) of each group against the reference group (configured, else "
        "the most favoured) over the last day (fleet). Outside the red dashed lines "
        "(±demographic_parity_difference_max, ±equal_opportunity_difference_max) the "
        "group's alert fires.",
        "percentunit",
        lines,
        threshold_legend="^(parity|opportunity) -?limit$",
        w=8,
    )


def errors_by_group() -> list[Json]:
    return [
        row("Errors by group"),
        by_group(
            "True-positive rate",
            "Each replica's windowed true-positive rate per group "
            "(equal opportunity asks for these to match).",
            "max",
            "mlmon_fairness_true_positive_rate",
        ),
        by_group(
            "False-positive rate",
            "Each replica's windowed false-positive rate per group.",
            "max",
            "mlmon_fairness_false_positive_rate",
        ),
        differences(),
    ]


def significance() -> list[Json]:
    """The p-values the fairness alerts require below fairness_p_value_max."""
    p_value = "model_version_attribute_group:mlmon_fairness_{}_p_value:max"
    return [
        row("Significance"),
        timeseries(
            "Significance of each group's gap",
            "Two-sided p-value of each group's selection rate (and true-positive rate) against "
            "the reference group's in the exporter's window (two-proportion z-test; the "
            "least significant replica). The fairness alerts fire only below the red dashed "
            "line (fairness_p_value_max, 0.05 by default): above it, a gap that size is "
            "common by chance in groups this small.",
            "none",
            [
                target(agg("max", p_value.format("selection_rate"), FSEL, BY), f"{GROUP} sel"),
                target(agg("max", p_value.format("true_positive_rate"), FSEL, BY), f"{GROUP} tpr"),
                target(th("fairness_p_value_max"), "limit"),
            ],
            threshold_legend="limit",
            w=24,
        ),
    ]


def attribute_variable() -> Json:
    v = query_var(
        "attribute",
        "Attribute",
        f"label_values(mlmon_group_predictions_total{{{MODEL}}}, attribute)",
    )
    # unlike the others, this variable has always held allValue right after includeAll;
    # kept there, so that the JSON stays as it was
    first = [*list(v)[: list(v).index("includeAll") + 1], "allValue"]
    return {k: v[k] for k in first} | v


def build(p: Params) -> Json:
    return dashboard(
        p.dashboards["fairness"].uid,
        "mlmon / Fairness",
        "Outcomes by sensitive group: selection rates, disparate impact, error rates.",
        [*selection(), *errors_by_group(), *significance()],
        [*variables(p), attribute_variable()],
    )
