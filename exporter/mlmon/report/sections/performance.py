"""Performance on labelled predictions: per version the last day's accuracy with its 3-day and
7-day averages (the bundle's trend rules) against accuracy_min; F1 against f1_min; for
regression models the live error over the baseline's against regression_error_ratio_max."""

from __future__ import annotations

from mlmon.report.blocks import Block, Line, Note, Plot, Section, Table
from mlmon.report.context import Context, cell, plot, text
from mlmon.report.series import Series, by_labels, crossed, group_by

ACCURACY = "model_version:mlmon_accuracy:ratio_increase1d"
AVG3D = "model_version:mlmon_accuracy:avg3d_ratio_increase1d"
AVG7D = "model_version:mlmon_accuracy:avg7d_ratio_increase1d"
F1 = "model_version:mlmon_f1:ratio_increase1d"
LABELLED = "model_version:mlmon_labelled_predictions:increase1d"
REGRESSION = "model_version_metric:mlmon_regression_error_ratio:ratio_increase1d"


def build(ctx: Context) -> Section:
    sel = ctx.selector()
    accuracy = {
        k: ctx.over_range(f"{rule}{sel}")
        for k, rule in (("day", ACCURACY), ("3d", AVG3D), ("7d", AVG7D))
    }
    f1, regression = ctx.over_range(f"{F1}{sel}"), ctx.over_range(f"{REGRESSION}{sel}")
    blocks: list[Block] = []
    if accuracy["day"]:
        limit = ctx.threshold("accuracy_min")
        labelled = ctx.over_range(f"{LABELLED}{sel}")
        blocks.append(_table(accuracy, f1, labelled, limit))
        blocks += [_trend_plot(v, accuracy, limit) for v in group_by(accuracy["day"], "version")]
    if f1:
        blocks.append(
            plot("F1 (last day)", "share", f1, ("version",), ctx.threshold("f1_min"), "f1_min")
        )
    if regression:
        blocks.append(
            plot(
                "Regression error / baseline error (last day)",
                "score",
                regression,
                ("version", "metric"),
                ctx.threshold("regression_error_ratio_max"),
                "regression_error_ratio_max",
            )
        )
    if not blocks:
        blocks.append(
            Note(
                "No labelled predictions in the range: performance needs labels "
                "(POST /v1/models/{model}/labels)."
            )
        )
    intro = (
        "Over the labelled predictions of the preceding day, across replicas; the dashed and "
        "dotted lines are the 3-day and 7-day averages of that daily figure."
    )
    return Section("performance", "Performance", tuple(blocks), intro)


def _trend_plot(version: str, accuracy: dict[str, list[Series]], limit: Series | None) -> Plot:
    lines = []
    for key, name, dash in (
        ("day", "last day", "solid"),
        ("3d", "3-day average", "dashed"),
        ("7d", "7-day average", "dotted"),
    ):
        for s in accuracy[key]:
            if s.label("version") == version:
                lines.append(Line(name, s.points, dash))
    threshold = limit.points if limit is not None else ()
    return Plot(f"Accuracy of version {version}", "share", tuple(lines), threshold, "accuracy_min")


def _table(
    accuracy: dict[str, list[Series]],
    f1: list[Series],
    labelled: list[Series],
    limit: Series | None,
) -> Table:
    keyed = {k: by_labels(v, ("version",)) for k, v in accuracy.items()}
    f1_of, labelled_of = by_labels(f1, ("version",)), by_labels(labelled, ("version",))
    minimum = limit.last if limit is not None else None
    rows = []
    for (version,), day in sorted(keyed["day"].items()):
        avg3, avg7 = keyed["3d"].get((version,)), keyed["7d"].get((version,))
        f1s, n = f1_of.get((version,)), labelled_of.get((version,))
        rows.append(
            (
                text(version),
                cell(day.last, "share", minimum is not None and (day.last or 0) < minimum),
                cell(avg3.last if avg3 else None, "share"),
                cell(avg7.last if avg7 else None, "share"),
                cell(day.low, "share", crossed(day, limit, above=False)),
                cell(f1s.last if f1s else None, "share"),
                cell(n.last if n else None, "count"),
            )
        )
    columns = (
        "version",
        "accuracy at end",
        "3-day average",
        "7-day average",
        "lowest accuracy",
        "F1 at end",
        "labelled (last day)",
    )
    return Table(columns, tuple(rows), caption="Accuracy of the last day's labelled predictions")
