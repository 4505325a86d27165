"""A series as Prometheus answers it (labels, and (time, value) points), and the helpers the
sections use to group, rank and name them."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

Point = tuple[float, float]


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    points: tuple[Point, ...]

    def label(self, name: str) -> str:
        return self.labels.get(name, "")

    @property
    def last(self) -> float | None:
        return self.points[-1][1] if self.points else None

    @property
    def first_time(self) -> float | None:
        return self.points[0][0] if self.points else None

    @property
    def peak(self) -> float | None:
        return max(v for _, v in self.points) if self.points else None

    @property
    def low(self) -> float | None:
        return min(v for _, v in self.points) if self.points else None


def parse_value(text: str) -> float | None:
    """Prometheus sends values as strings, NaN and ±Inf included; those are no points."""
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def from_json(item: dict) -> Series:
    """One element of a `matrix` or `vector` result."""
    raw = item.get("values") or ([item["value"]] if "value" in item else [])
    points = tuple((float(t), v) for t, s in raw if (v := parse_value(s)) is not None)
    labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
    return Series(labels, points)


def group_by(series: Iterable[Series], name: str) -> dict[str, list[Series]]:
    """Series by the value of one label, in the order of that value."""
    out: dict[str, list[Series]] = defaultdict(list)
    for s in series:
        out[s.label(name)].append(s)
    return dict(sorted(out.items()))


def by_labels(series: Iterable[Series], names: tuple[str, ...]) -> dict[tuple[str, ...], Series]:
    """Series keyed by the values of ``names`` (the last one wins on a clash)."""
    return {tuple(s.label(n) for n in names): s for s in series}


def name_of(s: Series, names: tuple[str, ...]) -> str:
    """A legend entry: the values of ``names`` that are set, joined."""
    parts = [s.label(n) for n in names if s.label(n)]
    return " · ".join(parts) if parts else "(no labels)"


def at_times(s: Series | None) -> dict[float, float]:
    return dict(s.points) if s is not None else {}


def crossed(s: Series, limit: Series | None, above: bool = True) -> bool:
    """Whether any point is at or beyond the limit in force at the same time."""
    limits = at_times(limit)
    return any(t in limits and (v >= limits[t] if above else v < limits[t]) for t, v in s.points)
