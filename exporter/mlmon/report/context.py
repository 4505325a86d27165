"""One model's view of Prometheus: its selector, its queries over the report's range (each
kept, so the report lists how every number was obtained), its thresholds, and the plot and
cell builders the sections share."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlmon.report.blocks import Cell, Line, Plot
from mlmon.report.fetch import Prometheus, promql_string
from mlmon.report.limits import MAX_SERIES_PER_PLOT
from mlmon.report.series import Series, name_of
from mlmon.report.span import Span
from mlmon.report.units import fmt


@dataclass
class Context:
    client: Prometheus
    span: Span
    model: str
    queries: list[str] = field(default_factory=list)

    def selector(self, **matchers: str) -> str:
        pairs = {"model": self.model, **matchers}
        return "{" + ", ".join(f"{k}={promql_string(v)}" for k, v in pairs.items()) + "}"

    def over_range(self, promql: str) -> list[Series]:
        """The query evaluated at every step of the range."""
        self.queries.append(promql)
        s = self.span
        return self.client.range(promql, s.start, s.end, s.step)

    def at_end(self, promql: str) -> list[Series]:
        """The query evaluated once, at the end of the range."""
        self.queries.append(promql)
        return self.client.instant(promql, self.span.end)

    def threshold(self, name: str) -> Series | None:
        """The model's threshold over the range, from the bundle's `model:mlmon_threshold_*`
        rule (the exporter's value, else the documented default)."""
        found = self.over_range(f"model:mlmon_threshold_{name}:max{self.selector()}")
        return found[0] if found else None


def plot(
    title: str,
    unit: str,
    series: list[Series],
    names: tuple[str, ...],
    threshold: Series | None = None,
    threshold_name: str = "threshold",
    description: str = "",
) -> Plot:
    """A plot of ``series`` named by the labels ``names``; past MAX_SERIES_PER_PLOT, the
    series that reach highest are drawn and the others counted."""
    kept = series
    if len(series) > MAX_SERIES_PER_PLOT:
        top = {id(s) for s in sorted(series, key=lambda s: -(s.peak or 0.0))[:MAX_SERIES_PER_PLOT]}
        kept = [s for s in series if id(s) in top]
    lines = tuple(Line(name_of(s, names), s.points) for s in kept)
    return Plot(
        title,
        unit,
        lines,
        threshold.points if threshold is not None else (),
        threshold_name,
        len(series) - len(kept),
        description,
    )


def cell(value: float | None, unit: str, alarm: bool = False) -> Cell:
    return Cell(fmt(value, unit, 4), value, alarm)


def text(value: str) -> Cell:
    return Cell(value)
