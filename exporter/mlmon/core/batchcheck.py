"""`mlmon check`: a file of events (and labels) through the live ingest code as one window,
then the conditions of the model's drift, performance and fairness alerts decided on it
with the model's thresholds. Knows nothing of argparse; `checkreport` prints the result.

The monitor runs on a frozen clock, and `batchfile` removes every event's ``timestamp``:
the whole file lands in one slice of one window, and no prediction waits past its
label's time-to-live. Every decision is the exporter's own (`ModelMonitor.views`), judged
by `conditions`.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mlmon.core.baseline import OTHER
from mlmon.core.batchfile import FileError, read_events, read_labels, where
from mlmon.core.conditions import (
    Check,
    comparison_checks,
    drift_checks,
    estimate_checks,
    fairness_checks,
    feature_checks,
    feature_rows,
    performance_checks,
)
from mlmon.core.config import Config, ConfigError
from mlmon.core.decoding import BadRequest
from mlmon.core.monitor import ModelMonitor, Monitor, VersionView

SHOWN_ERRORS = 5  # errors named in a bad batch's message; the rest are counted


@dataclass
class Intake:
    """What the files brought in."""

    events: int = 0
    labels_given: bool = False
    labels: Counter[str] = field(default_factory=Counter)  # outcome of the join
    # predictions pushed out of the full label store (labels.max_entries) before their label
    evicted: int = 0
    unknown_features: Counter[str] = field(default_factory=Counter)


@dataclass
class CheckResult:
    model: str
    data: str
    labels: str | None
    intake: Intake
    stats: dict[str, Any]  # `ModelMonitor.stats()` of the window
    features: list[dict[str, Any]]  # one row per version and feature
    checks: list[Check]
    untested: list[str]  # why the check could not decide: nothing tested at all

    @property
    def conditions(self) -> list[Check]:
        return [c for c in self.checks if c.holds]

    @property
    def exit_code(self) -> int:
        if self.conditions:
            return 1
        return 2 if self.untested else 0


def run(cfg: Config, model: str | None, data: str | Path, labels: str | Path | None) -> CheckResult:
    """Ingest ``data`` (and ``labels``) into a fresh monitor of ``model`` and decide."""
    mm = monitor_for(cfg, model)
    intake = Intake()
    ingest_events(mm, Path(data), intake)
    if labels is not None:
        ingest_labels(mm, Path(labels), intake)
    intake.evicted = mm.labels.evicted
    return evaluate(mm, intake, str(data), None if labels is None else str(labels))


def monitor_for(cfg: Config, name: str | None) -> ModelMonitor:
    """A monitor of one model alone, on a frozen clock, with the config's thresholds: no
    snapshot is restored and no shared store is joined (a live exporter's state and runtime
    overrides stay out of a check)."""
    if name is None and len(cfg.models) == 1:
        name = cfg.models[0].name
    model = cfg.model(name) if name is not None else None
    if model is None:
        known = ", ".join(m.name for m in cfg.models)
        what = f"no model named {name!r}" if name else "--model is required"
        raise ConfigError([f"{what} (known: {known})"], str(cfg.path or "config"))
    server = replace(cfg.server, snapshot_dir=None)
    cfg = replace(cfg, models=(model,), server=server, store=None, proxy=None)
    frozen = time.time()
    return Monitor(cfg, clock=lambda: frozen).models[model.name]


def ingest_events(mm: ModelMonitor, path: Path, intake: Intake) -> None:
    """Every event of the file through `ModelMonitor.ingest`, one batch of
    limits.max_batch_events at a time; labels carried by the rows are joined per batch."""
    for chunk in read_events(path, mm.schema, mm.limits["max_batch_events"]):
        try:
            batch, _ = mm.ingest(chunk.events)
        except BadRequest as e:
            raise FileError(explain(path, chunk.lines, e)) from None
        intake.events += batch.n
        _count_unknown(intake.unknown_features, batch.unknown_features, mm.limits)
        if chunk.labels:
            _join(mm, path, chunk.label_lines, chunk.labels, intake)


def _count_unknown(seen: Counter[str], batch: dict[str, int], limits: dict[str, int]) -> None:
    """As the exporter counts them: the first limits.max_unknown_features names each under
    its own name, the rest under __other__, so a file of made-up names stays small."""
    for name, n in batch.items():
        if name not in seen and len(seen) >= limits["max_unknown_features"]:
            name = OTHER
        seen[name] += n


def ingest_labels(mm: ModelMonitor, path: Path, intake: Intake) -> None:
    intake.labels_given = True
    for lines, items in read_labels(path, mm.limits["max_batch_events"]):
        _join(mm, path, lines, items, intake)


def _join(mm: ModelMonitor, path: Path, lines: list[int], items: list[Any], intake: Intake) -> None:
    intake.labels_given = True
    try:
        outcomes, _ = mm.ingest_labels(items)
    except BadRequest as e:
        raise FileError(explain(path, lines, e)) from None
    intake.labels.update(outcomes)


def explain(path: Path, lines: list[int], e: BadRequest) -> str:
    """An ingest refusal in the file's terms: each bad row by its line and field, in the
    order of the file; the first few, and how many more."""
    if not e.details:
        return f"{path.name} lines {lines[0]}-{lines[-1]}: {e.message}"
    details = sorted(e.details, key=lambda d: d["index"])
    shown = [
        f"{where(path, lines[d['index']], d.get('field', ''))}: {d['message']}"
        for d in details[:SHOWN_ERRORS]
    ]
    if len(details) > SHOWN_ERRORS:
        shown.append(
            f"... and {len(details) - SHOWN_ERRORS} more error(s) in lines up to {lines[-1]}"
        )
    return "\n".join(shown)


def evaluate(mm: ModelMonitor, intake: Intake, data: str, labels: str | None) -> CheckResult:
    views = mm.views()
    stats = mm.stats()
    checks: list[Check] = []
    for view in views:
        checks += feature_checks(mm, view)
        checks += drift_checks(mm, view)
        if intake.labels_given or view.performance.labelled:
            checks += performance_checks(mm, view)
        checks += estimate_checks(view)
        checks += fairness_checks(mm, view)
    checks += comparison_checks(mm, views)
    return CheckResult(
        model=mm.name,
        data=data,
        labels=labels,
        intake=intake,
        stats=stats,
        features=feature_rows(mm, views, stats),
        checks=checks,
        untested=untested(mm, views, intake),
    )


def untested(mm: ModelMonitor, views: list[VersionView], intake: Intake) -> list[str]:
    """Why nothing could be decided: no feature of any version reached drift.min_samples,
    or labels were given and no version reached performance.min_labels."""
    cfg = mm.schema.config
    out = []
    if not any(v.report.tested_count for v in views):
        out.append(
            f"too few rows to test drift: {intake.events} event(s), and no feature has "
            f"drift.min_samples ({cfg.drift.min_samples}) present values"
        )
    if intake.labels_given and not any(v.performance.reported for v in views):
        most = max((v.performance.labelled for v in views), default=0)
        out.append(
            f"too few labels to test performance: at most {most} labelled prediction(s) in a "
            f"version, performance.min_labels is {cfg.performance.min_labels} "
            f"(labels: {_outcomes(intake.labels)})"
        )
    return out


def _outcomes(c: Counter[str]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(c.items())) or "none"
