"""A line chart as inline SVG: time on x over the report's range, nice ticks on y, one path
per series (broken where a step has no value), the threshold as a red line, a legend below.
Every text is escaped here; nothing is loaded from anywhere."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from html import escape

from mlmon.report.blocks import Line, Plot
from mlmon.report.limits import MAX_LEGEND_CHARS
from mlmon.report.series import Point
from mlmon.report.span import Span
from mlmon.report.units import fmt

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")
THRESHOLD_COLOUR = "#d62728"
DASHES = {"solid": "", "dashed": "7 4", "dotted": "2 3"}
WIDTH, PLOT_HEIGHT = 720, 190
LEFT, RIGHT, TOP, BOTTOM = 70, 14, 10, 26
LEGEND_ROW = 18
# Legend columns by the longest name (characters that fit a column at 11 px, swatch aside).
LEGEND_LAYOUT = ((28, 3), (46, 2))
# Candidate x tick intervals, seconds: the first that gives at most 8 ticks is used.
_MINUTE, _HOUR, _DAY = 60, 3600, 86400
TIME_TICKS = (
    *(1, 2, 5, 10, 15, 30),
    *(m * _MINUTE for m in (1, 2, 5, 10, 15, 30)),
    *(h * _HOUR for h in (1, 2, 3, 6, 12)),
    *(d * _DAY for d in (1, 2, 7, 14, 30)),
)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 x 10^k apart) that cover [lo, hi]."""
    if hi <= lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def time_ticks(span: Span) -> tuple[list[float], str]:
    """Tick times aligned to round UTC times, and their strftime format."""
    interval = next((t for t in TIME_TICKS if span.seconds / t <= 8), TIME_TICKS[-1])
    first = math.ceil(span.start / interval) * interval
    ticks = [float(t) for t in range(int(first), int(span.end) + 1, interval)]
    if interval < 60:
        fmt_ = "%H:%M:%S"
    elif interval < 86400:
        fmt_ = "%H:%M" if span.seconds <= 86400 else "%m-%d %H:%M"
    else:
        fmt_ = "%Y-%m-%d"
    return ticks, fmt_


class Frame:
    """Data coordinates to pixels."""

    def __init__(self, span: Span, lo: float, hi: float) -> None:
        self.span, self.lo, self.hi = span, lo, hi
        self.width = WIDTH - LEFT - RIGHT

    def x(self, t: float) -> float:
        return LEFT + (t - self.span.start) / self.span.seconds * self.width

    def y(self, v: float) -> float:
        return TOP + (self.hi - v) / (self.hi - self.lo) * PLOT_HEIGHT

    def path(self, points: tuple[Point, ...]) -> str:
        """M/L commands; a new subpath after a missing step; a lone point as a dot."""
        out: list[str] = []
        previous: float | None = None
        for t, v in points:
            gap = previous is None or t - previous > 1.5 * self.span.step
            out.append(f"{'M' if gap else 'L'}{self.x(t):.1f} {self.y(v):.1f}")
            previous = t
        return " ".join(_dots(out))


def _dots(commands: list[str]) -> list[str]:
    """A subpath of one point gets a zero-length segment (drawn as a dot: round caps)."""
    out = []
    for i, c in enumerate(commands):
        out.append(c)
        alone = c[0] == "M" and (i + 1 == len(commands) or commands[i + 1][0] == "M")
        if alone:
            out.append("l0.01 0")
    return out


def _domain(plot: Plot) -> tuple[float, float]:
    values = [v for line in plot.lines for _, v in line.points]
    values += [v for _, v in plot.threshold]
    lo, hi = min(values), max(values)
    if 0 <= lo < 0.5 * hi:
        lo = 0.0  # from zero, unless the values sit in a narrow band far from it
    ticks = nice_ticks(lo, hi)
    return ticks[0], ticks[-1]


def chart(plot: Plot, span: Span) -> str:
    """The SVG of ``plot``, or "" when it has no point to draw."""
    if not any(line.points for line in plot.lines):
        return ""
    lo, hi = _domain(plot)
    frame = Frame(span, lo, hi)
    legend = _legend_entries(plot)
    rows = math.ceil(len(legend) / _columns(legend))
    height = TOP + PLOT_HEIGHT + BOTTOM + rows * LEGEND_ROW + 6
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {height}" '
        f'width="100%" role="img" font-family="system-ui, sans-serif" font-size="11">',
        f"<title>{escape(plot.title)}</title>",
        *_y_axis(frame, lo, hi, plot.unit),
        *_x_axis(frame),
    ]
    if plot.threshold:
        parts.append(
            f'<path class="threshold" d="{frame.path(plot.threshold)}" fill="none" '
            f'stroke="{THRESHOLD_COLOUR}" stroke-width="1.6" stroke-linecap="round"/>'
        )
    for i, line in enumerate(plot.lines):
        parts.append(_series_path(frame, line, PALETTE[i % len(PALETTE)]))
    parts += _legend(legend, TOP + PLOT_HEIGHT + BOTTOM + 4)
    parts.append("</svg>")
    return "\n".join(parts)


def _series_path(frame: Frame, line: Line, colour: str) -> str:
    dash = DASHES.get(line.dash, "")
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<path class="series" data-series="{escape(line.name)}" d="{frame.path(line.points)}" '
        f'fill="none" stroke="{colour}" stroke-width="1.6" stroke-linejoin="round" '
        f'stroke-linecap="round"{dash_attr}/>'
    )


def _y_axis(frame: Frame, lo: float, hi: float, unit: str) -> list[str]:
    out = []
    for v in nice_ticks(lo, hi):
        y = frame.y(v)
        out.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e3e3"/>'
        )
        out.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">'
            f"{escape(fmt(v, unit))}</text>"
        )
    bottom = TOP + PLOT_HEIGHT
    out.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{bottom}" y2="{bottom}" stroke="#999"/>'
    )
    return out


def _x_axis(frame: Frame) -> list[str]:
    ticks, fmt_ = time_ticks(frame.span)
    bottom = TOP + PLOT_HEIGHT
    out = []
    for t in ticks:
        x = frame.x(t)
        label = datetime.fromtimestamp(t, UTC).strftime(fmt_)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}" stroke="#999"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle" fill="#555">'
            f"{escape(label)}</text>"
        )
    return out


def _legend_entries(plot: Plot) -> list[tuple[str, str, str]]:
    """(name, colour, dash) per drawn line, then the threshold."""
    out = [(line.name, PALETTE[i % len(PALETTE)], line.dash) for i, line in enumerate(plot.lines)]
    if plot.threshold:
        out.append((plot.threshold_name, THRESHOLD_COLOUR, "solid"))
    return out


def _shown(name: str) -> str:
    """A name cut to MAX_LEGEND_CHARS (before escaping: an entity is never cut)."""
    return name if len(name) <= MAX_LEGEND_CHARS else name[: MAX_LEGEND_CHARS - 1] + "…"


def _columns(entries: list[tuple[str, str, str]]) -> int:
    longest = max((len(_shown(name)) for name, _, _ in entries), default=0)
    return next((n for fits, n in LEGEND_LAYOUT if longest <= fits), 1)


def _legend(entries: list[tuple[str, str, str]], top: float) -> list[str]:
    columns = _columns(entries)
    width = (WIDTH - LEFT) / columns
    out = []
    for i, (name, colour, dash) in enumerate(entries):
        x = LEFT + (i % columns) * width
        y = top + (i // columns) * LEGEND_ROW + 8
        shown = _shown(name)
        dash_attr = f' stroke-dasharray="{DASHES[dash]}"' if DASHES.get(dash) else ""
        out.append(
            f'<line x1="{x:.1f}" x2="{x + 22:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="{colour}" '
            f'stroke-width="2"{dash_attr}/>'
            f'<text x="{x + 28:.1f}" y="{y + 4:.1f}" fill="#222">{escape(shown)}'
            f"<title>{escape(name)}</title></text>"
        )
    return out
