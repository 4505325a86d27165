"""History: replaying logged predictions in event time into timestamped OpenMetrics and
Prometheus blocks (`mlmon backfill`), and evaluating the alerting rules over stored data
(`mlmon backtest`). May import core and metrics (a replay renders what a scrape would);
never http or capture; the demo's process helpers only inside functions.

Modules: `logfile.py` (the rows of a log), `replay.py` (event-time replay through the live
ingest code), `openmetrics.py` (timestamped OpenMetrics, family by family), `backfill.py`,
`rules.py` (rule files and their dependency levels), `backtest.py`, `command.py` (the CLI).
"""
