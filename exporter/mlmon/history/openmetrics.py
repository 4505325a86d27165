"""OpenMetrics with timestamps, as `promtool tsdb create-blocks-from openmetrics` reads it
and as the specification lays it out: every family once, each of its metrics (a label set;
for a histogram, its buckets, count and sum together) with all its points in time order,
then ``# EOF``.

A replay renders one scrape per step with prometheus_client's OpenMetrics writer, each
sample stamped with the step's time and given the target labels a scrape would add (job,
instance). The lines arrive step by step, every metric of a family at each step, and
must leave metric by metric: they go into an SQLite table on disk (the standard library's
maintained sorter), keyed by family, metric and arrival, so memory holds one step however
long the history is; `write` reads them back in that order.
"""

from __future__ import annotations

import math
import re
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest


class _One:
    """A registry's interface over one metric."""

    def __init__(self, metric: Metric) -> None:
        self.metric = metric

    def collect(self) -> Iterator[Metric]:
        yield self.metric


def stamped(metrics: Iterable[Metric], at: float, labels: dict[str, str]) -> Iterator[Metric]:
    """Copies of ``metrics`` whose samples carry the time ``at`` and ``labels``."""
    for m in metrics:
        copy = Metric(m.name, m.documentation, m.type, m.unit)
        copy.samples = [s._replace(labels={**s.labels, **labels}, timestamp=at) for s in m.samples]
        yield copy


def _series_key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The metric a sample belongs to: its labels but a histogram bucket's bound."""
    return tuple(sorted((k, v) for k, v in labels.items() if k != "le"))


def lines_of(metric: Metric) -> tuple[list[str], list[str]]:
    """(metadata lines, one line per sample in order) as prometheus_client writes them."""
    text = generate_latest(_One(metric)).decode()
    meta, samples = [], []
    for line in text.splitlines():
        if line == "# EOF":
            break
        (meta if line.startswith("#") else samples).append(line)
    if len(samples) != len(metric.samples):
        raise ValueError(f"{metric.name}: {len(samples)} lines for {len(metric.samples)} samples")
    return meta, samples


class TimestampedWriter:
    """Collects scrapes at successive times and writes them as one OpenMetrics file."""

    def __init__(self, labels: dict[str, str], spool_dir: Path | None = None) -> None:
        self.labels = labels
        self._tmp = tempfile.TemporaryDirectory(dir=spool_dir, prefix="mlmon-backfill-")
        self._db = sqlite3.connect(Path(self._tmp.name) / "spool.db")
        self._db.execute("CREATE TABLE s (family INTEGER, series INTEGER, seq INTEGER, line TEXT)")
        self._meta: dict[str, tuple[int, list[str]]] = {}
        self._series: dict[tuple[int, tuple], int] = {}
        self.steps = 0
        self.samples = 0

    def add(self, metrics: Iterable[Metric], at: float) -> None:
        """One scrape: every sample of ``metrics`` at time ``at`` (seconds)."""
        rows = []
        for m in stamped(metrics, at, self.labels):
            meta, lines = lines_of(m)
            family = self._meta.setdefault(m.name, (len(self._meta), meta))[0]
            for s, line in zip(m.samples, lines, strict=True):
                key = (family, _series_key(s.labels))
                series = self._series.setdefault(key, len(self._series))
                rows.append((family, series, self.samples + len(rows), line))
        self._db.executemany("INSERT INTO s VALUES (?, ?, ?, ?)", rows)
        self.samples += len(rows)
        self.steps += 1

    def write(self, out: Path) -> None:
        """The file: each family's metadata, then its metrics one after the other, each
        with its points in time order; then ``# EOF``."""
        self._db.execute("CREATE INDEX s_order ON s (family, series, seq)")
        with out.open("w", encoding="utf-8") as fh:
            for family, meta in sorted(self._meta.values()):
                fh.write("\n".join(meta) + "\n")
                query = "SELECT line FROM s WHERE family = ? ORDER BY series, seq"
                for (line,) in self._db.execute(query, (family,)):
                    fh.write(line + "\n")
            fh.write("# EOF\n")

    def close(self) -> None:
        self._db.close()
        self._tmp.cleanup()


_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def gauge_lines(name: str, series: Iterable[tuple[dict[str, str], list[tuple[float, float]]]]):
    """A gauge family's OpenMetrics lines: ``# TYPE``, then each series' points in time
    order. For recorded series, whose names hold colons (prometheus_client's OpenMetrics
    writer rewrites a colon to an underscore)."""
    if not _METRIC_NAME.fullmatch(name):
        raise ValueError(f"not a metric name: {name!r}")
    yield f"# TYPE {name} gauge"
    for labels, points in series:
        for k in labels:
            if not _LABEL_NAME.fullmatch(k) or k.startswith("__"):
                raise ValueError(f"not a label name: {k!r}")
        text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
        head = f"{name}{{{text}}}" if text else name
        for t, v in points:
            yield f"{head} {_number(v)} {_number(t)}"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))
