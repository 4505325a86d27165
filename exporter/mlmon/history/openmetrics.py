"""OpenMetrics with timestamps, as `promtool tsdb create-blocks-from openmetrics` reads it
and as the specification lays it out: every family once, each of its metrics (a label set;
for a histogram, its buckets, count and sum together) with all its points in time order,
then ``# EOF``.

A replay hands over one scrape per step: the collector's families, each sample stamped
with the step's time and given the target labels a scrape would add (job, instance). A
series' name and labels are formatted once, when it first appears (after that, a step
costs the formatting of its numbers). The lines arrive step by step, every metric of a
family at each step, and must leave metric by metric: they go into an SQLite table on
disk (the standard library's maintained sorter), keyed by family, metric and arrival, so
memory holds one step however long the history is; `write` reads them back in that order.

The lines are written here rather than by prometheus_client's OpenMetrics writer, which
costs 50 ms per scrape in label escaping and rewrites the colons of recorded names to
underscores; the output is checked against prometheus_client's strict parser in the tests.
"""

from __future__ import annotations

import math
import re
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client.metrics_core import Metric

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_TYPES = ("counter", "gauge", "histogram", "unknown")


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def _meta(name: str, kind: str, doc: str) -> list[str]:
    if kind not in _TYPES:
        raise ValueError(f"{name}: cannot write a {kind} family")
    if not _METRIC_NAME.fullmatch(name):
        raise ValueError(f"not a metric name: {name!r}")
    text = doc.replace("\\", "\\\\").replace("\n", "\\n")
    return [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]


def _head(name: str, labels: dict[str, str]) -> str:
    """A sample line's name and labels (`name{a="1",b="2"}`), the values escaped."""
    if not _METRIC_NAME.fullmatch(name):
        raise ValueError(f"not a metric name: {name!r}")
    for k in labels:
        if not _LABEL_NAME.fullmatch(k) or k.startswith("__"):
            raise ValueError(f"not a label name: {k!r}")
    text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return f"{name}{{{text}}}" if text else name


def _metric_key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The metric a sample belongs to: its labels but a histogram bucket's bound."""
    return tuple(sorted((k, v) for k, v in labels.items() if k != "le"))


def gauge_lines(
    name: str, series: Iterable[tuple[dict[str, str], list[tuple[float, float]]]]
) -> Iterator[str]:
    """A gauge family's lines: ``# TYPE``, then each series' (time, value) points in time
    order. For recorded series, whose names hold colons."""
    yield _meta(name, "gauge", "")[1]
    for labels, points in series:
        head = _head(name, dict(sorted(labels.items())))
        for t, v in points:
            yield f"{head} {_number(v)} {_number(t)}"


class TimestampedWriter:
    """Collects scrapes at successive times and writes them as one OpenMetrics file."""

    def __init__(self, labels: dict[str, str], spool_dir: Path | None = None) -> None:
        self.labels = labels
        self._tmp = tempfile.TemporaryDirectory(dir=spool_dir, prefix="mlmon-backfill-")
        self._db = sqlite3.connect(Path(self._tmp.name) / "spool.db")
        self._db.execute("CREATE TABLE s (family INTEGER, metric INTEGER, seq INTEGER, line TEXT)")
        self._meta: dict[str, tuple[int, list[str]]] = {}
        self._metrics: dict[tuple[int, tuple], int] = {}  # a family's label sets, no `le`
        self._series: dict[tuple, tuple[int, str]] = {}  # a sample's metric and its head
        self.steps = 0
        self.samples = 0

    def add(self, metrics: Iterable[Metric], at: float) -> None:
        """One scrape: every sample of ``metrics`` at time ``at`` (seconds)."""
        rows = []
        stamp = _number(at)
        for m in metrics:
            family = self._meta.setdefault(
                m.name, (len(self._meta), _meta(m.name, m.type, m.documentation))
            )[0]
            for s in m.samples:
                found = self._series.get((family, s.name, tuple(s.labels.items())))
                if found is None:
                    found = self._new_series(family, s.name, s.labels)
                line = f"{found[1]} {_number(s.value)} {stamp}"
                rows.append((family, found[0], self.samples + len(rows), line))
        self._db.executemany("INSERT INTO s VALUES (?, ?, ?, ?)", rows)
        self.samples += len(rows)
        self.steps += 1

    def _new_series(self, family: int, name: str, labels: dict[str, str]) -> tuple[int, str]:
        metric = self._metrics.setdefault((family, _metric_key(labels)), len(self._metrics))
        found = (metric, _head(name, {**labels, **self.labels}))
        self._series[(family, name, tuple(labels.items()))] = found
        return found

    def write(self, out: Path) -> None:
        """The file: each family's metadata, then its metrics one after the other, each
        with its points in time order; then ``# EOF``."""
        self._db.execute("CREATE INDEX s_order ON s (family, metric, seq)")
        with out.open("w", encoding="utf-8") as fh:
            for family, meta in sorted(self._meta.values()):
                fh.write("\n".join(meta) + "\n")
                query = "SELECT line FROM s WHERE family = ? ORDER BY metric, seq"
                for (line,) in self._db.execute(query, (family,)):
                    fh.write(line + "\n")
            fh.write("# EOF\n")

    def close(self) -> None:
        self._db.close()
        self._tmp.cleanup()
