"""The report as one HTML page: no script, no external reference of any kind (styles inline,
plots inline SVG, system fonts), a Content-Security-Policy that forbids loading anything, and
every string from Prometheus escaped."""

from __future__ import annotations

from html import escape

from mlmon import __version__
from mlmon.report import limits
from mlmon.report.blocks import (
    Block,
    Cell,
    Figures,
    ModelReport,
    Note,
    Plot,
    Report,
    Section,
    Table,
)
from mlmon.report.span import Span, utc
from mlmon.report.svg import chart
from mlmon.report.units import duration

# Nothing may be fetched, nothing may run: the page is data only, even if it were altered.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

WRAP_CHARS = 48  # a longer cell may wrap; others (times, numbers) stay on one line
STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d1d1f;
margin:0 auto;max-width:1480px;padding:24px 32px;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:21px;margin:36px 0 8px;padding-top:12px;
border-top:3px solid #1d1d1f}h3{font-size:16px;margin:24px 0 6px;color:#333}
code{font:13px ui-monospace,SFMono-Regular,Menlo,monospace}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:12px 0}
dl.meta dt{color:#666}dl.meta dd{margin:0}
nav ul{margin:4px 0;padding-left:20px}nav a{color:#0b57d0}
.intro{color:#555;max-width:980px;margin:2px 0 8px}
.figures{display:flex;gap:12px;flex-wrap:wrap;margin:8px 0}
.figure{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:150px}
.figure .label{color:#666;font-size:12px}.figure .value{font-size:22px;font-weight:600}
.figure .detail{color:#777;font-size:12px}.alarm{color:#b3261e;font-weight:600}
.figure.alarm{border-color:#d62728;background:#fdf1f0}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:14px 22px}
figure.plot{margin:0}figure.plot figcaption{font-weight:600;font-size:13px;margin:2px 0}
.empty,.note{color:#666;font-style:italic}.dropped{color:#8a5a00;font-size:12px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
caption{text-align:left;color:#555;padding:2px 0}
th,td{border-bottom:1px solid #e6e6e6;padding:3px 10px;text-align:left;vertical-align:top;
white-space:nowrap}td.wrap{white-space:normal;overflow-wrap:anywhere;min-width:200px}
th{background:#f4f4f6;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.alarm{background:#fdf1f0}
details pre{white-space:pre-wrap;font-size:12px;background:#f7f7f9;padding:8px}
footer{margin-top:40px;color:#777;font-size:12px}
@media print{h2{break-before:page}.plots{grid-template-columns:1fr 1fr}}
"""


def render(report: Report) -> str:
    names = ", ".join(m.name for m in report.models)
    title = f"mlmon report: {names} ({utc(report.span.start)} – {utc(report.span.end)})"
    body = [
        _header(report),
        *(_model(i, m, report.span) for i, m in enumerate(report.models, 1)),
        *(_section(f"other-{s.key}", s, report.span) for s in report.other),
        _footer(report),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="mlmon {escape(__version__)}">\n'
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _header(report: Report) -> str:
    span = report.span
    meta = [
        ("Prometheus", report.prometheus),
        ("From", utc(span.start)),
        ("To", f"{utc(span.end)} ({duration(span.seconds)})"),
        ("Step", f"{span.step:g}s ({span.points} points per series at most)"),
        ("Generated", f"{utc(report.generated)} by mlmon {__version__}, {report.queries} queries"),
        ("Models", ", ".join(m.name for m in report.models)),
    ]
    if report.unreported_models:
        left = report.unreported_models
        shown = ", ".join(left[:50]) + (f" and {len(left) - 50} more" if len(left) > 50 else "")
        meta.append((f"Not reported (over {limits.MAX_MODELS})", shown))
    rows = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in meta)
    notes = "".join(f"<li>{escape(n)}</li>" for n in report.notes)
    return (
        '<header>\n<h1>Model monitoring report</h1>\n<dl class="meta">'
        + rows
        + "</dl>\n"
        + (f'<ul class="notes">{notes}</ul>\n' if notes else "")
        + _contents(report)
        + "\n</header>"
    )


def _contents(report: Report) -> str:
    items = []
    for i, m in enumerate(report.models, 1):
        parts = " · ".join(f'<a href="#m{i}-{s.key}">{escape(s.title)}</a>' for s in m.sections)
        items.append(f'<li><a href="#m{i}"><code>{escape(m.name)}</code></a>: {parts}</li>')
    for s in report.other:
        items.append(f'<li><a href="#other-{s.key}">{escape(s.title)}</a></li>')
    return "<nav><strong>Contents</strong><ul>" + "".join(items) + "</ul></nav>"


def _model(index: int, model: ModelReport, span: Span) -> str:
    sections = "\n".join(_section(f"m{index}-{s.key}", s, span) for s in model.sections)
    queries = escape("\n\n".join(model.queries))
    return (
        f'<section class="model" id="m{index}" data-model="{escape(model.name)}">\n'
        f"<h2>Model <code>{escape(model.name)}</code></h2>\n{sections}\n"
        f"<details><summary>The {len(model.queries)} PromQL queries behind this model's "
        f"sections</summary><pre>{queries}</pre></details>\n</section>"
    )


def _section(anchor: str, section: Section, span: Span) -> str:
    out = [
        f'<section class="part" id="{anchor}" data-section="{section.key}">',
        f"<h3>{escape(section.title)}</h3>",
    ]
    if section.intro:
        out.append(f'<p class="intro">{escape(section.intro)}</p>')
    plots: list[str] = []
    for block in section.blocks:
        if isinstance(block, Plot):
            plots.append(_plot(block, span))
            continue
        if plots:
            out.append('<div class="plots">' + "\n".join(plots) + "</div>")
            plots = []
        out.append(_block(block))
    if plots:
        out.append('<div class="plots">' + "\n".join(plots) + "</div>")
    out.append("</section>")
    return "\n".join(out)


def _block(block: Block) -> str:
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Figures):
        return _figures(block)
    if isinstance(block, Note):
        return f'<p class="note">{escape(block.text)}</p>'
    raise TypeError(f"not a block: {block!r}")


def _plot(plot: Plot, span: Span) -> str:
    svg = chart(plot, span)
    body = svg or '<p class="empty">No data in this range.</p>'
    dropped = (
        f'<p class="dropped">{plot.dropped} more series not drawn (at most '
        f"{limits.MAX_SERIES_PER_PLOT} per plot: those that reach highest are shown).</p>"
        if plot.dropped
        else ""
    )
    return (
        f'<figure class="plot"><figcaption>{escape(plot.title)}</figcaption>'
        f"{body}{dropped}</figure>"
    )


def _cell(c: Cell) -> str:
    classes = (["num"] if c.value is not None else []) + (["alarm"] if c.alarm else [])
    classes += ["wrap"] if len(c.text) > WRAP_CHARS else []
    cls = f' class="{" ".join(classes)}"' if classes else ""
    value = f' data-value="{c.value!r}"' if c.value is not None else ""
    return f"<td{cls}{value}>{escape(c.text)}</td>"


def _table(table: Table) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in table.columns)
    rows = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>\n" for row in table.rows)
    caption = f"<caption>{escape(table.caption)}</caption>" if table.caption else ""
    dropped = (
        f'<p class="dropped">{table.dropped} more rows not shown (at most '
        f"{limits.MAX_TABLE_ROWS}).</p>"
        if table.dropped
        else ""
    )
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>\n{rows}</tbody></table>{dropped}"


def _figures(figures: Figures) -> str:
    out = []
    for f in figures.items:
        cls = "figure alarm" if f.alarm else "figure"
        value = f' data-value="{f.value!r}"' if f.value is not None else ""
        detail = f'<div class="detail">{escape(f.detail)}</div>' if f.detail else ""
        out.append(
            f'<div class="{cls}"{value}><div class="label">{escape(f.label)}</div>'
            f'<div class="value">{escape(f.text)}</div>{detail}</div>'
        )
    return '<div class="figures">' + "".join(out) + "</div>"


def _footer(report: Report) -> str:
    return (
        "<footer>Limits: at most "
        f"{limits.MAX_POINTS + 1} points per series, {limits.MAX_SERIES_PER_PLOT} series per "
        f"plot, {limits.MAX_FEATURE_PLOTS} drift plots and {limits.MAX_TABLE_ROWS} table rows "
        f"per model, {limits.MAX_MODELS} models per report, "
        f"{limits.QUERY_TIMEOUT_SECONDS:g}s per query by default. Thresholds come from the "
        "bundle's model:mlmon_threshold_* rules. Times are UTC.</footer>"
    )
