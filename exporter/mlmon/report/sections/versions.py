"""Version comparisons: each challenger against the champion, from the exporter's windowed
gauges (the highest over replicas, as MLModelChallengerWorse takes them): the accuracy
difference, its p-value against challenger_p_value_max, the latency ratio and the drift of
the challenger's predictions from the champion's."""

from __future__ import annotations

from mlmon.report.blocks import Block, Note, Section, Table
from mlmon.report.context import Context, cell, plot, text
from mlmon.report.series import Series, by_labels

KEYS = ("version", "champion")


def build(ctx: Context) -> Section:
    sel = ctx.selector()

    def gauge(name: str) -> list[Series]:
        return ctx.over_range(f"max without (instance, pod) (mlmon_version_{name}{sel})")

    difference, p_value = gauge("accuracy_difference"), gauge("accuracy_p_value")
    latency, drift = gauge("latency_ratio"), gauge("prediction_drift")
    if not (difference or latency or drift):
        note = Note(
            "No challenger in the range: a comparison needs a second version with "
            "traffic in the exporter's window (the champion is performance.champion, "
            "else the first version seen that still has traffic)."
        )
        return Section("versions", "Versions", (note,))
    limit = ctx.threshold("challenger_p_value_max")
    blocks: list[Block] = [_table(difference, p_value, latency, drift, limit)]
    if difference:
        blocks.append(
            plot("Accuracy difference, challenger minus champion", "share", difference, KEYS)
        )
    if p_value:
        blocks.append(
            plot(
                "p-value of the accuracy difference",
                "score",
                p_value,
                KEYS,
                limit,
                "challenger_p_value_max",
            )
        )
    if latency:
        blocks.append(plot("Latency ratio, challenger over champion", "score", latency, KEYS))
    intro = (
        "Each challenger against the champion over the exporter's window; a difference "
        "counts as significant below the red p-value line. Per-version traffic, errors and "
        "latency are in the service table."
    )
    return Section("versions", "Versions", tuple(blocks), intro)


def _table(
    difference: list[Series],
    p_value: list[Series],
    latency: list[Series],
    drift: list[Series],
    limit: Series | None,
) -> Table:
    keyed = [by_labels(x, KEYS) for x in (difference, p_value, latency)]
    drift_of = by_labels(drift, (*KEYS, "method"))
    alpha = limit.last if limit is not None else None
    rows = []
    for key in sorted(set().union(*keyed)):
        d, p, lat = (k.get(key) for k in keyed)
        worse = bool(d and p and alpha is not None and (d.last or 0) < 0 and (p.last or 1) < alpha)
        drifts = [
            f"{m}: {s.last:.3g}"
            for (v, c, m), s in sorted(drift_of.items())
            if (v, c) == key and s.last is not None
        ]
        rows.append(
            (
                text(key[0]),
                text(key[1]),
                cell(d.last if d else None, "share", worse),
                cell(p.last if p else None, "score", worse),
                cell(lat.last if lat else None, "score"),
                text(", ".join(drifts) or "—"),
                text("yes" if worse else "no"),
            )
        )
    columns = (
        "challenger",
        "champion",
        "accuracy difference",
        "p-value",
        "latency ratio",
        "prediction drift",
        "significantly worse",
    )
    return Table(columns, tuple(rows), caption="At the end of the range")
