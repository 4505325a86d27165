"""The running exporter's state: every configured model with its schema, counts, thresholds
and cached drift, plus the exporter's own ingest counters. Knows nothing of HTTP."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import drift
from .baseline import BaselineError, load_profile
from .config import LIMIT_DEFAULTS, Config, ConfigError, ModelConfig
from .events import REJECT_REASONS, Batch, parse_events
from .schema import ModelSchema, resolve
from .state import Layout, ModelState, VersionSnapshot

ENDPOINTS = ("predictions",)


class IngestCounters:
    """Counters about the exporter's own intake, keyed by bounded label tuples. Every known
    combination starts at 0, so rate() works from the first scrape."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter(dict.fromkeys(ENDPOINTS, 0))
        self.rejected: Counter[tuple[str, str]] = Counter(
            {(e, r): 0 for e in ENDPOINTS for r in REJECT_REASONS}
        )
        self.events: Counter[str] = Counter()  # model
        self.rejected_events: Counter[str] = Counter()  # model
        self.limit_hits: Counter[str] = Counter(dict.fromkeys(LIMIT_DEFAULTS, 0))

    def count(self, counter: Counter, key: Any, n: int = 1) -> None:
        with self.lock:
            counter[key] += n


@dataclass
class VersionView:
    """One version's window and totals, with the drift of its window."""

    snapshot: VersionSnapshot
    report: drift.DriftReport


class ModelMonitor:
    def __init__(
        self,
        schema: ModelSchema,
        limits: dict[str, int],
        clock: Callable[[], float],
        counters: IngestCounters,
    ) -> None:
        self.schema = schema
        self.limits = limits
        self.counters = counters
        self.state = ModelState(
            schema, limits, clock, on_limit=lambda name: counters.count(counters.limit_hits, name)
        )
        self.thresholds = dict(schema.config.thresholds)
        self._cache: dict[str, tuple[tuple, drift.DriftReport]] = {}
        self._cache_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.schema.name

    @property
    def layout(self) -> Layout:
        return self.state.layout

    def ingest(self, events: list[Any], partial: bool = False) -> tuple[Batch, list[dict]]:
        batch, details = parse_events(events, self.schema, self.limits, partial=partial)
        self.state.ingest(batch)
        return batch, details

    def views(self) -> list[VersionView]:
        """Every version's snapshot with its drift; drift is recomputed only when the counts
        or thresholds changed since the last call."""
        out = []
        th_key = tuple(sorted(self.thresholds.items()))
        for snap in self.state.snapshot():
            key = (snap.generation, th_key)
            with self._cache_lock:
                cached = self._cache.get(snap.version)
            if cached is None or cached[0] != key:
                report = self._drift(snap.window)
                with self._cache_lock:
                    self._cache[snap.version] = (key, report)
            else:
                report = cached[1]
            out.append(VersionView(snap, report))
        return out

    def _drift(self, window: np.ndarray) -> drift.DriftReport:
        lay = self.layout
        v = Layout.view
        return drift.evaluate(
            self.schema,
            v(window, lay.num_bins),
            v(window, lay.cat_bins),
            v(window, lay.pred_bins),
            v(window, lay.score_bins),
            self.thresholds,
        )

    def stats(self) -> dict[str, Any]:
        """JSON-ready snapshot of the windowed statistics of every version."""
        lay = self.layout
        s = self.schema
        v = Layout.view
        versions = {}
        for view in self.views():
            w = view.snapshot.window
            r = view.report
            ok = int(w[lay.ok_events.start])
            num_missing = v(w, lay.num_missing)
            cat_missing = v(w, lay.cat_missing)
            present_num = v(w, lay.num_bins).sum(axis=-1)
            oor = v(w, lay.num_below) + v(w, lay.num_above)
            features = {}
            for i, name in enumerate(r.features):
                entry: dict[str, Any] = {
                    "kind": r.kinds[i],
                    "present": int(r.n[i]),
                    "drifted": bool(r.drifted[i]),
                    "test": r.test[i],
                    "p_value": _num(r.p_value[i]),
                    "p_value_adjusted": _num(r.p_adjusted[i]),
                    "scores": {m: _num(a[i]) for m, a in r.scores.items() if not np.isnan(a[i])},
                }
                if r.kinds[i] == "numeric":
                    missing = int(num_missing[i])
                    entry["out_of_range_ratio"] = _ratio(oor[i], present_num[i])
                else:
                    missing = int(cat_missing[i - len(s.numeric)])
                entry["missing"] = missing
                entry["missing_ratio"] = _ratio(missing, ok)
                features[name] = entry
            failures = v(w, lay.failures)
            events = int(w[lay.events.start])
            versions[view.snapshot.version] = {
                "window_events": events,
                "window_failed_events": int(failures.sum()),
                "error_ratio": _ratio(int(failures.sum()), events),
                "features_tested": r.tested_count,
                "drifted_features": r.drifted_count,
                "drifted_feature_names": [
                    f for f, d in zip(r.features, r.drifted, strict=True) if d
                ],
                "features": features,
                "prediction": {
                    o.output: {
                        "present": o.n,
                        "drifted": o.drifted,
                        "p_value": _num(o.p_value),
                        "scores": {k: _num(x) for k, x in o.scores.items()},
                    }
                    for o in r.outputs
                },
            }
        cfg = s.config
        return {
            "model": s.name,
            "task": s.task,
            "baseline": {"hash": s.baseline_hash, "rows": s.baseline_rows},
            "window_seconds": cfg.window.length_seconds,
            "min_samples": cfg.drift.min_samples,
            "correction": cfg.drift.correction,
            "thresholds": dict(self.thresholds),
            "versions": versions,
        }


def _num(x: float) -> float | None:
    x = float(x)
    return None if np.isnan(x) else x


def _ratio(a: float, b: float) -> float | None:
    return float(a) / float(b) if b else None


class Monitor:
    """Every model of a configuration. Construction loads and checks all baselines and
    reports every problem at once."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.started = time.time()
        self.counters = IngestCounters()
        self.models: dict[str, ModelMonitor] = {}
        errors = []
        for m in config.models:
            try:
                self.models[m.name] = self._load(m)
            except BaselineError as e:
                errors.append(f"model {m.name!r}: {e}")
        if errors:
            raise ConfigError(errors, str(config.path or "config"))

    def _load(self, m: ModelConfig) -> ModelMonitor:
        schema = resolve(m, load_profile(m.baseline))
        return ModelMonitor(schema, self.config.limits, self.clock, self.counters)
