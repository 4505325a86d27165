"""What a report holds, before it is HTML: per model a list of sections, each a list of
blocks (key figures, plots, tables, notes). Every string here is raw text, as Prometheus
sent it; the page escapes it."""

from __future__ import annotations

from dataclasses import dataclass, field

from mlmon.report.series import Point
from mlmon.report.span import Span


@dataclass(frozen=True)
class Line:
    name: str
    points: tuple[Point, ...]
    dash: str = "solid"  # solid, dashed, dotted


@dataclass(frozen=True)
class Plot:
    title: str
    unit: str  # see units.fmt
    lines: tuple[Line, ...]
    threshold: tuple[Point, ...] = ()  # drawn red
    threshold_name: str = "threshold"
    dropped: int = 0  # series over MAX_SERIES_PER_PLOT, not drawn
    description: str = ""


@dataclass(frozen=True)
class Cell:
    text: str
    value: float | None = None  # machine-readable (data-value), when the cell is a number
    alarm: bool = False  # beyond its threshold


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    dropped: int = 0  # rows over MAX_TABLE_ROWS
    caption: str = ""


@dataclass(frozen=True)
class Figure:
    """One key number (a tile)."""

    label: str
    text: str
    value: float | None = None
    alarm: bool = False
    detail: str = ""


@dataclass(frozen=True)
class Figures:
    items: tuple[Figure, ...]


@dataclass(frozen=True)
class Note:
    text: str


Block = Plot | Table | Figures | Note


@dataclass(frozen=True)
class Section:
    key: str  # a fixed word: service, baseline, drift, ...
    title: str
    blocks: tuple[Block, ...]
    intro: str = ""


@dataclass(frozen=True)
class ModelReport:
    name: str
    sections: tuple[Section, ...]
    queries: tuple[str, ...]


@dataclass
class Report:
    prometheus: str
    span: Span
    generated: float
    models: list[ModelReport]
    other: list[Section] = field(default_factory=list)  # not about one model
    unreported_models: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    queries: int = 0
