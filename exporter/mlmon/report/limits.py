"""Every bound the report keeps, so that a report of a large fleet over a long range stays a
readable file and costs Prometheus a bounded amount of work."""

from __future__ import annotations

# A series has at most MAX_POINTS + 1 points: the step is raised until the range fits (a
# plot is 720 px wide, so finer steps would not show).
MAX_POINTS = 720
MIN_STEP_SECONDS = 1.0
# Lines drawn on one plot (the red threshold line aside); the rest are counted in a note.
MAX_SERIES_PER_PLOT = 8
# Models in one report; more are listed by name only.
MAX_MODELS = 25
# Feature drift plots per model (the features that came closest to their threshold first);
# the table below them still lists every feature, up to MAX_TABLE_ROWS.
MAX_FEATURE_PLOTS = 24
MAX_TABLE_ROWS = 200
# Series kept from one query's answer, and the size of an answer.
MAX_SERIES_PER_QUERY = 2_000
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
# Seconds Prometheus may spend on one query (also the client's socket timeout, plus slack).
QUERY_TIMEOUT_SECONDS = 30.0
# Characters of a series' name shown in a legend (its tooltip and the tables show it whole).
MAX_LEGEND_CHARS = 90
