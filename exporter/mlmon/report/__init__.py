"""`mlmon report`: a self-contained static HTML audit report, read from Prometheus over its
HTTP API: per model its service, baseline, drift, performance, fairness, versions and the
alerts that fired. Standard library only (urllib, html); may import `core`'s value parsers,
never the serving path (`http`, `metrics`, `capture`) nor the demo.

Modules: `limits.py` (every bound in one place), `span.py` (the time range and its step),
`fetch.py` (the Prometheus client), `series.py` (series and their helpers), `blocks.py` (what
a section holds: figures, plots, tables, notes), `context.py` (one model's queries),
`sections/` (one module per section), `svg.py` (the line chart), `units.py` (numbers as
text), `page.py` (the HTML page), `build.py` (models to sections), `command.py` (the CLI).
"""
