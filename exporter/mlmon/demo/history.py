"""The demo's past: days of the credit-risk model's traffic with a daily cycle, replayed by
`mlmon backfill`'s code into Prometheus blocks, so the demo's dashboards open with history
(trend averages, seasonal anomaly bands) instead of an empty left edge.

Traffic follows the hour of the day (busiest mid-afternoon, quietest before dawn, a third
of the peak), in one burst per 15 minutes; every prediction carries an id and its label
comes 10 minutes later. The
history ends an hour before the demo starts and is undrifted: the demo's live drift is
the anomaly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mlmon.core.config import Config
from mlmon.demo import synthetic
from mlmon.history.backfill import BackfillRequest, replay_items
from mlmon.history.replay import Item, ReplayStats

MODEL = "credit-risk"
LABEL_DELAY = 600.0
STEP = 900.0  # one sample per 15 minutes: a rate over an hour still sees four
# events per second at the daily peak; the quietest hour, a third of it, still holds the
# 100 events an hour the anomaly bands need (anomaly_min_events)
PEAK = 0.1
ERROR_RATE = 0.01  # failed inferences (timeouts), as the live demo has some


def hourly_rate(at: float, peak: float) -> float:
    """Events per second at time ``at``: a cosine over the day, peak at 15:00 UTC."""
    hour = (at % 86_400) / 3_600
    return peak * (2 + math.cos((hour - 15) / 24 * 2 * math.pi)) / 3


def items(start: float, end: float, peak: float) -> Iterator[Item]:
    """Predictions and their labels in time order: one burst per STEP (the step's traffic
    at its start: the replay then adds each burst to one slice, at a cost per step rather
    than per event), its labels LABEL_DELAY later."""
    spec = synthetic.credit_spec()
    labels: list[Item] = []  # of the previous bursts, due in order
    for k, at in enumerate(range(int(start), int(end), int(STEP))):
        n = max(1, round(hourly_rate(at, peak) * STEP))
        where = f"history burst {k}"
        rows = synthetic.events(spec, n, seed=10_000 + k, version="v1", id_prefix=f"h{k}-")
        rng = np.random.default_rng(k)
        latency = rng.lognormal(math.log(0.05), 0.4, n)
        failed = rng.random(n) < ERROR_RATE
        while labels and labels[0].at < at:
            yield labels.pop(0)
        for i, row in enumerate(rows):
            row["latency_seconds"] = round(float(latency[i]), 4)
            label = row.pop("label")
            if failed[i]:
                yield Item(at, False, _failed(row, at), where)
                continue
            yield Item(at, False, {**row, "timestamp": at}, where)
            due = {"id": row["id"], "label": label, "timestamp": at + LABEL_DELAY}
            labels.append(Item(at + LABEL_DELAY, True, due, where))
    yield from labels


def _failed(row: dict, at: float) -> dict:
    """A failed inference: no prediction, no label to wait for."""
    return {
        "version": row["version"], "error": "timeout", "timestamp": at,
        "latency_seconds": row["latency_seconds"],
    }  # fmt: skip


def build(
    cfg: Config, workdir: Path, days: float, end: float, peak: float = PEAK
) -> tuple[Path, ReplayStats]:
    """Blocks of ``days`` of history ending at ``end`` (an hour boundary), in
    ``workdir``/blocks; returns that folder and what was replayed."""
    workdir.mkdir(parents=True, exist_ok=True)
    req = BackfillRequest(
        model=MODEL,
        data=workdir / "history.jsonl",  # named in messages only: the items are generated
        output=workdir / "history.om",
        step=STEP,
        tsdb=workdir / "blocks",
    )
    stats = replay_items(cfg, req, items(end - days * 86_400, end, peak))
    req.output.unlink(missing_ok=True)
    return workdir / "blocks", stats
