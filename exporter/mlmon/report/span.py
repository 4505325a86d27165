"""The report's time range: `--from`, `--to` and `--step` parsed, and the step raised until no
series has more than MAX_POINTS + 1 points."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from mlmon.core.values import parse_duration
from mlmon.report.limits import MAX_POINTS, MIN_STEP_SECONDS

_RELATIVE = re.compile(r"^now(?:\s*-\s*(\S+))?$")


def parse_time(text: str, now: float) -> float:
    """`now`, `now-7d`, seconds since the epoch, or an ISO 8601 date or time (UTC unless it
    carries an offset) -> seconds since the epoch."""
    s = text.strip()
    relative = _RELATIVE.match(s)
    if relative:
        return now - (parse_duration(relative.group(1)) if relative.group(1) else 0.0)
    try:
        seconds = float(s)
    except ValueError:
        seconds = None
    if seconds is not None:
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"expected a time, got {text!r}")
        return seconds
    try:
        when = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(
            f"expected now, now-DURATION (now-7d), seconds since the epoch or an ISO 8601 "
            f"time (2026-11-29T10:00:00Z), got {text!r}"
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


@dataclass(frozen=True)
class Span:
    """[start, end] in seconds since the epoch, sampled every ``step`` seconds; the grid is
    start, start + step, ... as Prometheus' query_range evaluates it."""

    start: float
    end: float
    step: float
    requested_step: float | None = None

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def selector(self) -> str:
        """The whole range as a PromQL range duration, for `increase(x[...])` at the end."""
        return f"{max(1, round(self.seconds))}s"

    @property
    def step_raised(self) -> bool:
        return self.requested_step is not None and self.step > self.requested_step

    @property
    def points(self) -> int:
        return math.floor(self.seconds / self.step) + 1


def make_span(start: float, end: float, step: float | None = None) -> Span:
    if not end > start:
        raise ValueError("--from must be before --to")
    needed = max(MIN_STEP_SECONDS, math.ceil((end - start) / MAX_POINTS))
    chosen = needed if step is None else max(step, needed)
    return Span(start, end, float(chosen), step)


def parse_span(start: str, end: str, step: str | None, now: float) -> Span:
    return make_span(
        parse_time(start, now),
        parse_time(end, now),
        parse_duration(step) if step is not None else None,
    )


def utc(t: float, seconds: bool = True) -> str:
    """A time as an auditor reads it: ISO 8601 in UTC."""
    fmt = "%Y-%m-%d %H:%M:%SZ" if seconds else "%Y-%m-%d %H:%MZ"
    return datetime.fromtimestamp(t, UTC).strftime(fmt)
