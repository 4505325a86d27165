"""`mlmon backfill`: a model's history from a prediction log, as timestamped OpenMetrics.

The log (CSV or JSONL, the rows `mlmon check` reads, each with its ``timestamp``) and an
optional labels file (JSONL ``{"id", "label", "timestamp"}``) are replayed in event time
through the live ingest code (`history.replay`), with a copy of the config that has no
shared store and no snapshots: a backfill never takes live labels or writes live state.
At every step the collector's families are rendered, stamped with the step's time and the
target labels a scrape would add, into one OpenMetrics file that `promtool tsdb
create-blocks-from openmetrics` turns into blocks (``--tsdb``).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.metrics_core import Metric

from mlmon.core.batchfile import FileError
from mlmon.core.config import Config
from mlmon.core.fields import bad_timestamp
from mlmon.core.monitor import Monitor
from mlmon.history.logfile import event_rows, label_rows
from mlmon.history.openmetrics import TimestampedWriter
from mlmon.history.replay import Item, ReplayClock, ReplayError, ReplayStats, merged, replay
from mlmon.metrics.collector import MlmonCollector


@dataclass(frozen=True)
class BackfillRequest:
    model: str
    data: Path
    output: Path
    labels: Path | None = None
    step: float = 60.0
    job: str = "mlmon"
    instance: str = "backfill"
    tsdb: Path | None = None


def offline_config(cfg: Config, model: str) -> Config:
    """``cfg`` with only ``model``, no shared store and no snapshot directory."""
    chosen = tuple(m for m in cfg.models if m.name == model)
    if not chosen:
        names = ", ".join(m.name for m in cfg.models)
        raise FileError(f"no model {model!r} in the config (it has {names})")
    server = dataclasses.replace(cfg.server, snapshot_dir=None)
    return dataclasses.replace(cfg, models=chosen, store=None, server=server)


def _timed(rows: Iterator[tuple[str, Any]], label: bool) -> Iterator[Item]:
    """Items of a file's rows; each needs a timestamp, and the file must be in time order
    (within one window: an item further behind is late, as live)."""
    for where, body in rows:
        ts = body.get("timestamp") if type(body) is dict else None
        if ts is None or bad_timestamp(ts):
            raise FileError(f"{where}: timestamp: required in a history (seconds since the epoch)")
        yield Item(float(ts), label, body, where)


def run(cfg: Config, req: BackfillRequest) -> ReplayStats:
    """Replay the log and write the OpenMetrics file (and the blocks with ``tsdb``)."""
    schema = Monitor(offline_config(cfg, req.model)).models[req.model].schema
    streams = [_timed(event_rows(req.data, schema), False)]
    if req.labels is not None:
        streams.append(_timed(label_rows(req.labels), True))
    stats = replay_items(cfg, req, merged(*streams))
    if stats.steps == 0:
        raise ReplayError(f"{req.data.name}: no events")
    return stats


def replay_items(cfg: Config, req: BackfillRequest, items: Iterable[Item]) -> ReplayStats:
    """Replay time-ordered items (predictions and labels) through a fresh monitor of
    ``req.model``, writing ``req.output`` (and the blocks with ``req.tsdb``)."""
    if not (req.step >= 1.0 and math.isfinite(req.step)):
        raise FileError(f"--step must be at least 1s, got {req.step}")
    clock = ReplayClock()
    monitor = Monitor(offline_config(cfg, req.model), clock=clock)
    collector = MlmonCollector(monitor)
    writer = TimestampedWriter({"job": req.job, "instance": req.instance}, req.output.parent)
    try:
        m = monitor.models[req.model]
        stats = replay(m, clock, items, req.step, lambda at: writer.add(_scrape(collector), at))
        if stats.steps:
            writer.write(req.output)
    finally:
        writer.close()
    if stats.steps and req.tsdb is not None:
        create_blocks(req.output, req.tsdb)
    return stats


def _scrape(collector: MlmonCollector) -> list[Metric]:
    """What one scrape stores: the collector's families, and the `up` series Prometheus
    adds to every scrape (alerts on a missing exporter read it)."""
    up = Metric("up", "The target was scraped (written by mlmon backfill).", "gauge")
    up.add_sample("up", {}, 1.0)
    return [*collector.collect(), up]


def create_blocks(openmetrics: Path, tsdb: Path) -> None:
    """`promtool tsdb create-blocks-from openmetrics FILE DIR`."""
    promtool = shutil.which("promtool")
    if promtool is None:
        raise FileError("--tsdb needs promtool (Debian: apt-get install prometheus)")
    tsdb.mkdir(parents=True, exist_ok=True)
    cmd = [promtool, "tsdb", "create-blocks-from", "openmetrics", str(openmetrics), str(tsdb)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise FileError(f"promtool failed: {(done.stderr or done.stdout).strip()[-2000:]}")
