"""Numbers as text, by unit: `share` (a ratio shown as a percentage), `seconds`, `rate` (per
second), `count`, `score` (a plain number: drift scores, p-values, ratios of ratios)."""

from __future__ import annotations

import math

NO_VALUE = "—"


def fmt(value: float | None, unit: str, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return NO_VALUE
    if unit == "share":
        return f"{value * 100:.{digits}g}%"
    if unit == "seconds":
        return f"{value * 1000:.{digits}g} ms" if abs(value) < 1 else f"{value:.{digits}g} s"
    if unit == "rate":
        return f"{value:.{digits}g}/s"
    if unit == "count":
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def duration(seconds: float) -> str:
    """1h 02m, 3m 05s, 12s."""
    s = round(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {s:02d}s"
    return f"{s}s"
