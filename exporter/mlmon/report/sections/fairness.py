"""Fairness by group: per sensitive attribute the last day's selection rate of each group and
version, and its disparate impact against the most favoured group (red line:
disparate_impact_min, the four-fifths rule by default), with the parity differences at the
end of the range. Group names are the callers' data: they are only ever escaped text."""

from __future__ import annotations

from mlmon.report.blocks import Block, Note, Section, Table
from mlmon.report.context import Context, cell, plot, text
from mlmon.report.limits import MAX_TABLE_ROWS
from mlmon.report.series import Series, by_labels, crossed, group_by

RULE = "model_version_attribute_group:mlmon_{}:ratio_increase1d"
KEYS = ("version", "attribute", "group")


def build(ctx: Context) -> Section:
    sel = ctx.selector()
    rates = ctx.over_range(RULE.format("selection_rate") + sel)
    if not rates:
        note = Note(
            "No predictions with sensitive-attribute groups in the range (events carry "
            "them in `groups`; the config names them in sensitive_attributes)."
        )
        return Section("fairness", "Fairness", (note,))
    impact = ctx.over_range(RULE.format("disparate_impact") + sel)
    parity = ctx.over_range(RULE.format("demographic_parity_difference") + sel)
    opportunity = ctx.over_range(RULE.format("equal_opportunity_difference") + sel)
    limit = ctx.threshold("disparate_impact_min")
    blocks: list[Block] = [_table(rates, impact, parity, opportunity, limit)]
    impact_of = group_by(impact, "attribute")
    for attribute, series in group_by(rates, "attribute").items():
        blocks.append(
            plot(f"Selection rate by group: {attribute}", "share", series, ("group", "version"))
        )
        if impact_of.get(attribute):
            blocks.append(
                plot(
                    f"Disparate impact: {attribute}",
                    "score",
                    impact_of[attribute],
                    ("group", "version"),
                    limit,
                    "disparate_impact_min",
                )
            )
    intro = (
        "Over the preceding day's predictions, across replicas. Disparate impact is a group's "
        "selection rate over the most favoured group's among those with fairness_min_samples "
        "predictions; the differences are the group's rate minus that group's."
    )
    return Section("fairness", "Fairness", tuple(blocks), intro)


def _table(
    rates: list[Series],
    impact: list[Series],
    parity: list[Series],
    opportunity: list[Series],
    limit: Series | None,
) -> Table:
    di, dp, eo = (by_labels(x, KEYS) for x in (impact, parity, opportunity))
    rows = []
    for s in rates:
        key = tuple(s.label(k) for k in KEYS)
        impact_s = di.get(key)
        rows.append(
            (
                text(s.label("attribute")),
                text(s.label("group")),
                text(s.label("version")),
                cell(s.last, "share"),
                cell(impact_s.last if impact_s else None, "score"),
                cell(
                    impact_s.low if impact_s else None,
                    "score",
                    impact_s is not None and crossed(impact_s, limit, above=False),
                ),
                cell(_last(dp.get(key)), "share"),
                cell(_last(eo.get(key)), "share"),
            )
        )
    columns = (
        "attribute",
        "group",
        "version",
        "selection rate",
        "disparate impact",
        "lowest disparate impact",
        "parity difference",
        "opportunity difference",
    )
    return Table(
        columns,
        tuple(rows[:MAX_TABLE_ROWS]),
        max(0, len(rows) - MAX_TABLE_ROWS),
        "At the end of the range (lowest: over the range)",
    )


def _last(s: Series | None) -> float | None:
    return s.last if s is not None else None
