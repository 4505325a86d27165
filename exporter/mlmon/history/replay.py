"""Replaying a prediction log in event time through the live ingest code.

The monitor's clock is the replay's: it follows the events' timestamps (never backwards),
so each event lands in the slice of its time exactly as a live exporter would place it,
and windows slide as they would have. At every step boundary the clock is set to the
boundary and the model is "scraped": `on_step(at)` renders what a scrape at that time
would have seen. Labels (with their own timestamps) are merged in by time and joined
through the same label store, so their delays and slices are the live ones.

Items must come in time order per file, as logs are written; an item more than a window
behind the replay counts as late, as it would live.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from mlmon.core.decoding import BadRequest
from mlmon.core.monitor import ModelMonitor

# Bound on the steps of one replay: a week at 1 s, a year at 1 m; beyond, a coarser step.
MAX_STEPS = 600_000


class ReplayError(ValueError):
    """A log that cannot be replayed, with a message naming the item's place."""


@dataclass
class ReplayClock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Item:
    """One logged prediction (``label`` False) or label, at its time, from ``where``."""

    at: float
    label: bool
    body: Any
    where: str


@dataclass
class ReplayStats:
    events: int = 0
    labels: int = 0
    steps: int = 0
    first: float = math.nan
    last: float = math.nan


def merged(*streams: Iterable[Item]) -> Iterator[Item]:
    """The items of several time-ordered streams, in time order (a prediction before a
    label of the same time)."""
    return heapq.merge(*streams, key=lambda it: (it.at, it.label))


def replay(
    m: ModelMonitor,
    clock: ReplayClock,
    items: Iterable[Item],
    step: float,
    on_step: Callable[[float], None],
) -> ReplayStats:
    """Ingest ``items`` in time order in batches of at most limits.max_batch_events, never
    across a step boundary, and call ``on_step`` at every boundary from the first item's
    to the one after the last item's."""
    stats = ReplayStats()
    batch: list[Item] = []
    limit = m.limits["max_batch_events"]
    boundary = math.nan
    for item in items:
        if math.isnan(boundary):
            boundary = _first_boundary(item.at, step)
            stats.first = item.at
        while item.at > boundary:
            _flush(m, clock, batch, stats)
            _scrape(clock, boundary, on_step, stats)
            boundary += step
        batch.append(item)
        stats.last = item.at
        if len(batch) >= limit:
            _flush(m, clock, batch, stats)
    if not math.isnan(boundary):
        _flush(m, clock, batch, stats)
        _scrape(clock, boundary, on_step, stats)
    return stats


def _first_boundary(at: float, step: float) -> float:
    return math.ceil(at / step) * step


def _scrape(clock: ReplayClock, at: float, on_step: Callable[[float], None], s: ReplayStats):
    if s.steps >= MAX_STEPS:
        raise ReplayError(f"more than {MAX_STEPS} steps: use a longer --step")
    clock.now = max(clock.now, at)
    on_step(at)
    s.steps += 1


def _flush(m: ModelMonitor, clock: ReplayClock, batch: list[Item], s: ReplayStats) -> None:
    """Ingest the buffered items: the predictions as one request, then the labels as
    another (a label's prediction, earlier in time, is then always in first), each with
    the clock at its latest time so far. A buffer never spans a step boundary."""
    for kind in (False, True):
        part = [it for it in batch if it.label == kind]
        if not part:
            continue
        clock.now = max(clock.now, max(it.at for it in part))
        bodies = [it.body for it in part]
        try:
            if kind:
                m.ingest_labels(bodies)
                s.labels += len(part)
            else:
                m.ingest(bodies)
                s.events += len(part)
        except BadRequest as e:
            raise ReplayError(_first_problem(e, part)) from None
    batch.clear()


def _first_problem(e: BadRequest, part: list[Item]) -> str:
    """The first invalid item's place and what is wrong with it."""
    for d in e.details or ():
        i = d.get("index")
        if isinstance(i, int) and 0 <= i < len(part):
            field = f"{d['field']}: " if d.get("field") else ""
            return f"{part[i].where}: {field}{d['message']}"
    return f"{part[0].where} and after: {e.message}"
