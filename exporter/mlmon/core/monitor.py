"""The running exporter's state: every configured model with its schema, counts, thresholds
and cached drift, plus the exporter's own ingest counters. Knows nothing of HTTP."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from operator import itemgetter
from typing import Any

import numpy as np

from mlmon.core import fleet, overrides, rebaseline, snapshot
from mlmon.core.baseline import OTHER, BaselineError, load_profile
from mlmon.core.columns import parse_columns
from mlmon.core.config import (
    CLOSE_REASONS,
    LIMIT_DEFAULTS,
    THRESHOLDS,
    Config,
    ConfigError,
    ModelConfig,
    label_text,
    load_config,
)
from mlmon.core.decoding import REJECT_REASONS, BadRequest
from mlmon.core.events import parse_events
from mlmon.core.fields import Batch, bad_class, bad_id, bad_timestamp, finite_number
from mlmon.core.groundtruth import LabelStore, Pending, pending_rows
from mlmon.core.schema import ModelSchema, resolve
from mlmon.core.state import EventTimes, Layout, ModelState, VersionSnapshot, label_delta
from mlmon.core.typedcolumns import ColumnDecoder
from mlmon.core.typedrows import RowDecoder
from mlmon.stats import attribution, drift, evaluation, joint

log = logging.getLogger("mlmon")
ENDPOINTS = ("predictions", "labels")


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
        # by model: events stamped before the window (totals only), and stamped too far
        # ahead of the clock (counted at now)
        self.late_events: Counter[str] = Counter()
        self.future_events: Counter[str] = Counter()
        # connections the exporter's HTTP server closed, by reason (see `guard`)
        self.connections_closed: Counter[str] = Counter(dict.fromkeys(CLOSE_REASONS, 0))
        # feature values refused, by (model, feature, reason); feature is a configured one
        # or __other__
        self.refused_values: Counter[tuple[str, str, str]] = Counter()
        # events that carried a feature name their model does not have, by (model, name):
        # the first limits.max_unknown_features names of a model count under their own
        # name (remembered in unknown_names), later ones under __other__
        self.unknown_features: Counter[tuple[str, str]] = Counter()
        self.unknown_names: dict[str, set[str]] = {}

    def count(self, counter: Counter, key: Any, n: int = 1) -> None:
        with self.lock:
            counter[key] += n


@dataclass
class VersionView:
    """One version's window and totals, with the drift of its window."""

    snapshot: VersionSnapshot
    report: drift.DriftReport
    performance: evaluation.PerformanceReport
    attribution: attribution.AttributionReport
    joint: joint.JointReport | None  # None: no multivariate model in the baseline
    # (embedding name, the multivariate report of its own reconstruction) per scored one
    embeddings: tuple[tuple[str, joint.JointReport], ...] = ()


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
        # the config's values, the runtime overrides (`Monitor.put_thresholds`), and what
        # applies: the overrides over the config (replaced whole, never mutated, so a
        # reader always sees one consistent dict)
        self.config_thresholds = dict(schema.config.thresholds)
        self.overrides: dict[str, float] = {}
        self.thresholds = dict(self.config_thresholds)
        self.clock = clock
        self.labels = LabelStore(schema.config.labels.max_entries, schema.config.labels.ttl_seconds)
        # with a store shared by the replicas, predictions wait for their labels there
        self.shared: fleet.SharedStore | None = None
        # Group names per sensitive attribute, in order of first sight; at most max_groups,
        # the rest share the last slot (__other__).
        self.group_names: list[list[str]] = [[] for _ in schema.config.sensitive_attributes]
        self._group_index: list[dict[str, int]] = [{} for _ in schema.config.sensitive_attributes]
        self._groups_lock = threading.Lock()
        self._cache: dict[str, tuple[Any, ...]] = {}
        self._cache_lock = threading.Lock()
        # the typed decoders (`typedrows`, `typedcolumns`) of the current schema and limits
        self._decoders: dict[type, RowDecoder | ColumnDecoder] = {}

    @property
    def name(self) -> str:
        return self.schema.name

    def set_thresholds(
        self, config: dict[str, float] | None = None, runtime: dict[str, float] | None = None
    ) -> None:
        """New config values and/or runtime overrides; the overrides win until deleted."""
        if config is not None:
            self.config_thresholds = dict(config)
        if runtime is not None:
            self.overrides = {k: v for k, v in runtime.items() if k in THRESHOLDS}
        self.thresholds = {**self.config_thresholds, **self.overrides}

    def threshold_sources(self) -> dict[str, dict[str, Any]]:
        """Each threshold's value, where it comes from (runtime or config), and the
        config's value."""
        return {
            k: {
                "value": v,
                "source": "runtime" if k in self.overrides else "config",
                "config": self.config_thresholds.get(k, v),
            }
            for k, v in self.thresholds.items()
        }

    @property
    def layout(self) -> Layout:
        return self.state.layout

    def ingest(self, events: list[Any], partial: bool = False) -> tuple[Batch, list[dict]]:
        refused: dict[tuple[str, str], int] = {}
        try:
            batch, details = parse_events(events, self.schema, self.limits, partial, refused)
        finally:  # counted whether the batch is refused whole or accepted in part
            self._count_refused(refused)
        self._count_unknown(batch.unknown_features)
        attrs = self.schema.config.sensitive_attributes
        if attrs:
            batch.group_idx = self._group_indices(batch.groups)
        self._apply(batch)
        return batch, details

    def ingest_typed(self, body: bytes) -> Batch | None:
        """A row body through the typed fast path (`typedrows`): the applied Batch when every
        event in it is valid, else None, with nothing applied (`ingest` decides then)."""
        return self._ingest_fast(RowDecoder, body)

    def ingest_typed_columns(self, body: bytes) -> Batch | None:
        """A columnar body through the typed fast path (`typedcolumns`): the applied Batch
        when every value in it is valid, else None, with nothing applied (`ingest_columns`
        decides then)."""
        return self._ingest_fast(ColumnDecoder, body)

    def _ingest_fast(self, kind: type[RowDecoder | ColumnDecoder], body: bytes) -> Batch | None:
        decoder = self._decoders.get(kind)
        if (
            decoder is None
            or decoder.schema is not self.schema
            or decoder.limits is not self.limits
        ):
            decoder = self._decoders[kind] = kind(self.schema, self.limits)
        batch = decoder.batch(body)
        if batch is None:
            return None
        if self.schema.config.sensitive_attributes:
            batch.group_idx = self._group_indices(batch.groups)
        self._apply(batch)
        return batch

    def _apply(self, batch: Batch) -> None:
        """Add a parsed batch to the windows, each event at its time, and keep the
        predictions that wait for labels."""
        times = self.state.ingest(batch)
        c = self.counters
        if times.late or times.future:
            with c.lock:
                c.late_events[self.name] += times.late
                c.future_events[self.name] += times.future
        self._remember(batch, times)

    def ingest_columns(self, columns: Any) -> Batch:
        """A columnar batch (see `columns.parse_columns`), applied whole."""
        refused: dict[tuple[str, str], int] = {}
        try:
            batch = parse_columns(columns, self.schema, self.limits, refused)
        finally:
            self._count_refused(refused)
        self._count_unknown(batch.unknown_features)
        if self.schema.config.sensitive_attributes:
            batch.group_idx = self._group_indices(batch.groups)
        self._apply(batch)
        return batch

    def _count_refused(self, refused: dict[tuple[str, str], int]) -> None:
        if not refused:
            return
        kinds, c = self.schema.feature_kinds, self.counters
        with c.lock:
            for (feature, reason), n in refused.items():
                c.refused_values[(self.name, feature if feature in kinds else OTHER, reason)] += n

    def _count_unknown(self, unknown: dict[str, int]) -> None:
        """Count events by the unknown feature names they carried: a name gets its own
        series while the model has fewer than limits.max_unknown_features of them (and it
        is no longer than limits.max_string_length); the rest count under __other__."""
        if not unknown:
            return
        cap, max_len = self.limits["max_unknown_features"], self.limits["max_string_length"]
        c = self.counters
        with c.lock:
            seen = c.unknown_names.setdefault(self.name, set())
            for name, n in unknown.items():
                if name not in seen and len(seen) < cap and len(name) <= max_len:
                    seen.add(name)
                if name in seen:
                    c.unknown_features[(self.name, name)] += n
                    continue
                c.unknown_features[(self.name, OTHER)] += n
                if len(name) <= max_len:  # folded by the cap, not for its length
                    c.limit_hits["max_unknown_features"] += 1

    def _group_indices(self, groups: list[dict[str, Any] | None]) -> np.ndarray:
        attrs = self.schema.config.sensitive_attributes
        out = np.full((len(groups), len(attrs)), -1, dtype=np.int64)
        cap = self.limits["max_groups"]
        with self._groups_lock:
            for i, g in enumerate(groups):
                if not g:
                    continue
                for a, attr in enumerate(attrs):
                    if attr not in g or g[attr] is None:
                        continue
                    name = label_text(g[attr])
                    index = self._group_index[a]
                    j = index.get(name)
                    if j is None:
                        if len(index) < cap:
                            j = index[name] = len(index)
                            self.group_names[a].append(name)
                        else:
                            j = cap
                            if OTHER not in self.group_names[a]:
                                self.group_names[a].append(OTHER)
                            self.counters.count(self.counters.limit_hits, "max_groups")
                    out[i, a] = j
        return out

    def _remember(self, batch: Batch, times: EventTimes) -> None:
        """Successful predictions with an id wait for their label, with their event time:
        in the label store, or in the store shared by the replicas."""
        ids = batch.ids
        ok = batch.ok.all()
        if ok and None not in ids:  # the usual batch: every event, column by column
            pick: Callable[[list], list] = list
            rows = range(batch.n)
        else:
            rows = [i for i, key in enumerate(ids) if key is not None and batch.ok[i]]
            if not rows:
                return
            get = itemgetter(*rows)
            pick = (lambda c: list(get(c))) if len(rows) > 1 else (lambda c: [get(c)])
        at = [times.now] * len(rows) if times.times is None else pick(times.times.tolist())
        if batch.group_idx.size:
            gi = pick(list(map(tuple, batch.group_idx.tolist())))
        else:
            gi = [()] * len(rows)
        columns = (
            pick(batch.versions),
            at,
            pick(batch.pred_idx.tolist()),
            pick(batch.pred_value.tolist()),
            pick(batch.score.tolist()),
            gi,
        )
        keys = [k if type(k) is str else str(k) for k in pick(ids)]
        if self.shared is not None:
            self._remember_shared(keys, list(zip(*columns, strict=True)))
            return
        self.labels.put_many(keys, pending_rows(*columns))

    def _remember_shared(self, keys: list[str], rows: list[tuple]) -> None:
        """Join records to the shared store's queue. A group past limits.max_groups goes as
        none: its slot is this replica's ``__other__``, not a name another replica knows."""
        shared = self.shared
        assert shared is not None
        cap = self.limits["max_groups"]
        names = self.group_names
        try:
            records = [
                (
                    shared.join_key(self.name, key),
                    fleet.encode(
                        version,
                        at,
                        predicted,
                        value,
                        score,
                        [names[a][j] if 0 <= j < cap else None for a, j in enumerate(groups)],
                    ),
                )
                for key, (version, at, predicted, value, score, groups) in zip(
                    keys, rows, strict=True
                )
            ]
        except Exception:  # never fail a request whose events are counted already
            log.exception("%s: join records not written", self.name)
            shared.drop("invalid", len(keys))
            return
        shared.enqueue(records, self.schema.config.labels.ttl_seconds)

    def ingest_labels(self, items: list[Any], partial: bool = False) -> tuple[dict, list[dict]]:
        """Join labels to their predictions; returns counts by outcome and the error details
        of invalid items (raises BadRequest for any when not ``partial``, and 503 when the
        shared store does not answer: nothing is applied then)."""
        details = []
        valid = []
        for i, item in enumerate(items):
            if bad := self._bad_label(item):
                details.append({"index": i, "field": bad[0], "message": bad[1]})
            else:
                valid.append((str(item["id"]), item["label"], item.get("timestamp")))
        if details and not partial:
            raise BadRequest(
                400,
                "invalid_event",
                f"{len(details)} of {len(items)} label(s) invalid; nothing was applied",
                details[:100],
            )
        now = self.clock()
        keys = [key for key, _, _ in valid]
        failure = None
        if self.shared is not None:
            taken, failure = self._take_shared(keys, now)
            valid = valid[: len(taken)]  # the labels the store answered for
        else:
            taken = [self.labels.take(key, now) for key in keys]
        outcomes: dict[str, int] = {}
        # by version and the slice of the label's time (its timestamp, never after now)
        joined: dict[tuple[str, int], list[tuple[Pending, Any, float]]] = {}
        slice_seconds = self.state.slice_seconds
        for (outcome, p), (_, label, ts) in zip(taken, valid, strict=True):
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if p is not None:
                at = now if ts is None else min(float(ts), now)
                joined.setdefault((p.version, int(at // slice_seconds)), []).append((p, label, at))
        for (version, _), rows in joined.items():
            self._apply_labels(version, rows)
        # after the joins, so a label that comes just too late counts as expired
        self.labels.purge(now)
        if failure is not None:
            raise failure
        return outcomes, details

    def _apply_labels(self, version: str, rows: list[tuple[Pending, Any, float]]) -> None:
        """Labels joined to predictions of one version, all of one slice: each label's delay
        is from its prediction's time to its own (never below 0)."""
        ps = [p for p, _, _ in rows]
        delta, fdelta = label_delta(
            self.layout,
            self.schema,
            predicted=np.fromiter((p.predicted for p in ps), np.int64, len(ps)),
            values=np.fromiter((p.value for p in ps), np.float64, len(ps)),
            scores=np.fromiter((p.score for p in ps), np.float64, len(ps)),
            groups=np.array([p.groups for p in ps], dtype=np.int64).reshape(len(ps), -1),
            delays=np.fromiter((max(at - p.time, 0.0) for p, _, at in rows), np.float64, len(ps)),
            labels=[lab for _, lab, _ in rows],
        )
        self.state.add(version, delta, fdelta, rows[0][2])

    def _take_shared(
        self, keys: list[str], now: float
    ) -> tuple[list[tuple[str, Pending | None]], BadRequest | None]:
        """`LabelStore.take` for each key, through the shared store, the outcomes counted
        here, on the replica that received the labels. When the store fails part-way, the
        labels it answered for are returned (and applied) with the 503 to raise after."""
        shared = self.shared
        assert shared is not None
        failure = None
        try:
            records = shared.take([shared.join_key(self.name, k) for k in keys])
        except fleet.StoreUnavailable as e:
            records = e.done
            failure = BadRequest(
                503,
                "store_unavailable",
                f"the store that joins labels to predictions is unavailable ({e}); "
                f"{len(records)} of {len(keys)} label(s) were applied: send them all again "
                "(those count as duplicates)",
                retry_after=max(1, round(fleet.RETRY_SECONDS)),
            )
        out = self._outcomes_of(records, now)
        with self.labels.lock:
            self.labels.outcomes.update(outcome for outcome, _ in out)
        return out, failure

    def _outcomes_of(self, records: list[bytes], now: float) -> list[tuple[str, Pending | None]]:
        """Each record's outcome, and its prediction when matched (groups by this replica's
        indices; the delay never below 0, whatever the replicas' clocks)."""
        ttl = self.schema.config.labels.ttl_seconds
        n_classes = len(self.schema.classes)
        attrs = self.schema.config.sensitive_attributes
        out: list[tuple[str, Pending | None]] = []
        groups: list[dict[str, Any] | None] = []
        for record in records:
            if not record:
                out.append(("unmatched", None))
                continue
            if record == fleet.TAKEN:
                out.append(("duplicate", None))
                continue
            try:
                version, at, predicted, value, score, names = fleet.decode(record)
            except ValueError:
                log.warning("%s: a join record in the store is not mlmon's; ignored", self.name)
                out.append(("unmatched", None))
                continue
            if not -1 <= predicted < n_classes:  # from a replica with other classes
                out.append(("unmatched", None))
            elif now - at > ttl:
                out.append(("expired", None))
            else:
                out.append(("matched", Pending(version, min(at, now), predicted, value, score, ())))
                groups.append({a: g for a, g in zip(attrs, names, strict=False) if g != OTHER})
        indices = iter(self._group_indices(groups).tolist())
        return [(o, p if p is None else p._replace(groups=tuple(next(indices)))) for o, p in out]

    def _bad_label(self, item: Any) -> tuple[str, str] | None:
        """What is wrong with one label item, as (field, message), or None. A classifier's
        label must be one of its classes; a regression label a finite number."""
        if type(item) is not dict:
            return "", "a label must be an object"
        key = item.get("id")
        max_str = self.limits["max_string_length"]
        if bad_id(key, max_str):
            return "id", "required: the prediction's id (a string or an integer)"
        if item.get("timestamp") is not None and (bad := bad_timestamp(item["timestamp"])):
            return "timestamp", bad
        label = item.get("label")
        classes = self.schema.prediction_classes
        if classes is None:
            return None if finite_number(label) else ("label", "required: a finite number")
        if bad_class(label, max_str):
            return "label", "required: a class (string or integer)"
        text = label_text(label)
        if text not in classes.vocab[0]:
            return (
                "label",
                f"{text!r} is not a class of this model ({_classes(self.schema.classes)})",
            )
        return None

    def views(self) -> list[VersionView]:
        """Every version's snapshot with its drift; drift is recomputed only when the counts
        or thresholds changed since the last call."""
        out = []
        th_key = tuple(sorted(self.thresholds.items()))
        groups = [list(g) for g in self.group_names]
        for snap in self.state.snapshot():
            key = (snap.generation, th_key, tuple(len(g) for g in groups))
            with self._cache_lock:
                cached = self._cache.get(snap.version)
            if cached is None or cached[0] != key:
                report = self._drift(snap.window)
                perf = evaluation.evaluate(
                    self.schema, self.layout, snap.window, snap.fwindow, groups
                )
                attr = self._attribution(snap.window, snap.fwindow)
                multi = self._joint(snap.fwindow)
                emb = self._embedding_joint(snap.fwindow)
                with self._cache_lock:
                    self._cache[snap.version] = (key, report, perf, attr, multi, emb)
            else:
                report, perf, attr, multi, emb = cached[1:]
            out.append(VersionView(snap, report, perf, attr, multi, emb))
        return out

    def rebaseline(self, version: str | None = None) -> dict[str, Any]:
        """Make a version's current window the baseline (by default the version with the
        most events in the window); the previous profile is kept as a backup."""
        snaps = {s.version: s for s in self.state.snapshot()}
        lay = self.layout
        if version is None and snaps:
            version = max(snaps, key=lambda k: snaps[k].window[lay.ok_events.start])
        snap = snaps.get(version or "")
        if snap is None or snap.window[lay.ok_events.start] == 0:
            raise ValueError(f"no events in the window of version {version!r}")
        old = self.schema.baseline_hash
        profile = rebaseline.profile_from_window(
            self.schema.profile, self.schema, lay, snap.window, snap.fwindow
        )
        backup = rebaseline.replace_profile(self.schema.config.baseline, profile)
        self._apply_profile(profile)
        return {
            "model": self.name,
            "version": version,
            "rows": profile["rows"],
            "before": old,
            "after": profile["hash"],
            "backup": backup.name,
        }

    def restore_baseline(self) -> dict[str, Any]:
        old = self.schema.baseline_hash
        profile, backup = rebaseline.restore_latest(self.schema.config.baseline)
        self._apply_profile(profile)
        return {
            "model": self.name,
            "before": old,
            "after": profile["hash"],
            "restored": backup.name,
        }

    def _apply_profile(self, profile: dict[str, Any]) -> None:
        # edges and vocabularies are unchanged, so the layout -- and the counts -- still fit
        schema = resolve(self.schema.config, profile)
        self.schema = schema
        self.state.schema = schema
        with self._cache_lock:
            self._cache.clear()

    def comparisons(self, views: list[VersionView]) -> list[evaluation.Comparison]:
        return evaluation.compare_versions(
            self.schema,
            self.layout,
            {v.snapshot.version: (v.snapshot.window, v.snapshot.fwindow) for v in views},
        )

    def _attribution(
        self, window: np.ndarray, fwindow: np.ndarray
    ) -> attribution.AttributionReport:
        lay = self.layout
        return attribution.report(
            self.schema.attribution_baseline,
            Layout.view(window, lay.attr_n),
            Layout.view(fwindow, lay.attr_abs),
            self.schema.config.drift.min_samples,
            self.thresholds["attribution_ndcg_min"],
        )

    def _joint(self, fwindow: np.ndarray) -> joint.JointReport | None:
        model = self.schema.joint
        if model is None:
            return None
        sums = Layout.view(fwindow, self.layout.joint)
        return joint.report(model.reconstruction, sums, self.schema.config.drift.min_samples)

    def _embedding_joint(self, fwindow: np.ndarray) -> tuple[tuple[str, joint.JointReport], ...]:
        part = self.layout.emb_joint
        if not part.shape[0]:
            return ()
        sums = Layout.view(fwindow, part)
        min_samples = self.schema.config.drift.min_samples
        return tuple(
            (e.name, joint.report(e.projection, sums[j], min_samples))
            for j, e in enumerate(self.schema.embeddings)
            if e.projection.scored
        )

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
        s = self.schema
        views = self.views()
        cfg = s.config
        return {
            "model": s.name,
            "task": s.task,
            "baseline": {"hash": s.baseline_hash, "rows": s.baseline_rows},
            "window_seconds": cfg.window.length_seconds,
            "min_samples": cfg.drift.min_samples,
            "correction": cfg.drift.correction,
            "thresholds": dict(self.thresholds),
            "threshold_overrides": dict(self.overrides),
            "versions": {view.snapshot.version: self._version_json(view) for view in views},
            "comparisons": [_comparison_json(c) for c in self.comparisons(views)],
            "labels": {"waiting": len(self.labels), **dict(self.labels.outcomes)},
        }

    def _version_json(self, view: VersionView) -> dict[str, Any]:
        w, r, lay = view.snapshot.window, view.report, self.layout
        failures = Layout.view(w, lay.failures)
        events = int(w[lay.events.start])
        return {
            "window_events": events,
            "window_failed_events": int(failures.sum()),
            "error_ratio": _ratio(int(failures.sum()), events),
            "features_tested": r.tested_count,
            "drifted_features": r.drifted_count,
            "drifted_feature_names": [f for f, d in zip(r.features, r.drifted, strict=True) if d],
            "features": self._features_json(view),
            "prediction": {
                o.output: {
                    "present": o.n,
                    "drifted": o.drifted,
                    "p_value": _num(o.p_value),
                    "scores": {k: _num(x) for k, x in o.scores.items()},
                }
                for o in r.outputs
            },
            "performance": _performance_json(view.performance),
            "multivariate": _joint_json(view.joint) if view.joint is not None else None,
            "embeddings": {name: _joint_json(r) for name, r in view.embeddings},
            "attribution": self._attribution_json(view.attribution),
        }

    def _attribution_json(self, a: attribution.AttributionReport) -> dict[str, Any] | None:
        if not a.events.any():
            return None
        names = self.schema.attribution_names
        return {
            "ndcg": _num(a.ndcg),
            "reported": a.reported,
            "drifted": a.drifted,
            "features": {
                n: {
                    "events": int(a.events[i]),
                    "mean_abs": _num(a.live[i]),
                    "shift": _num(a.shift[i]),
                }
                for i, n in enumerate(names)
                if a.events[i]
            },
        }

    def _features_json(self, view: VersionView) -> dict[str, Any]:
        w, r, lay, v = view.snapshot.window, view.report, self.layout, Layout.view
        ok = int(w[lay.ok_events.start])
        num_missing = v(w, lay.num_missing)
        cat_missing = v(w, lay.cat_missing)
        present_num = v(w, lay.num_bins).sum(axis=-1)
        oor = v(w, lay.num_below) + v(w, lay.num_above)
        n_numeric = len(self.schema.numeric)
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
                missing = int(cat_missing[i - n_numeric])
            entry["missing"] = missing
            entry["missing_ratio"] = _ratio(missing, ok)
            features[name] = entry
        return features


def _joint_json(r: joint.JointReport) -> dict[str, Any]:
    return {
        "method": joint.METHOD,
        "events": r.events,
        "reported": r.reported,
        "score": _num(r.score),
        "threshold": _num(r.threshold) if np.isfinite(r.threshold) else None,
        "drifted": r.drifted,
    }


def _comparison_json(c: evaluation.Comparison) -> dict[str, Any]:
    return {
        "champion": c.champion,
        "challenger": c.challenger,
        "accuracy_difference": _num(c.accuracy_difference),
        "p_value": _num(c.p_value),
        "prediction_drift": c.prediction_drift,
        "latency_ratio": _num(c.latency_ratio),
    }


def _performance_json(r: evaluation.PerformanceReport) -> dict[str, Any]:
    out: dict[str, Any] = {"labelled": r.labelled, "reported": r.reported}
    if r.reported:
        out.update(
            accuracy=_num(r.accuracy),
            roc_auc=_num(r.roc_auc),
            calibration_error=_num(r.calibration_error),
            brier=_num(r.brier),
            classes={c: {k: _num(v) for k, v in m.items()} for c, m in r.per_class.items()},
        )
        if r.regression is not None:
            out["regression"] = {
                k: _num(getattr(r.regression, k)) for k in ("mae", "rmse", "r2", "bias")
            }
    if r.estimates is not None:
        out["estimates"] = {
            k: _num(getattr(r.estimates, k)) for k in ("accuracy", "precision", "recall", "f1")
        }
    out["fairness"] = {
        fr.attribute: {
            "reference": fr.groups[fr.metrics.reference] if fr.metrics.reference >= 0 else None,
            "groups": {
                g: {
                    "predictions": int(fr.predictions[i]),
                    "selection_rate": _num(fr.metrics.selection_rate[i]),
                    "true_positive_rate": _num(fr.metrics.true_positive_rate[i]),
                    "false_positive_rate": _num(fr.metrics.false_positive_rate[i]),
                    "disparate_impact": _num(fr.metrics.disparate_impact[i]),
                }
                for i, g in enumerate(fr.groups)
            },
        }
        for fr in r.fairness
    }
    return out


def _same_schema(a: ModelConfig, b: ModelConfig) -> bool:
    """Equal but for thresholds, which a reload may change without losing state."""
    return replace(a, thresholds={}) == replace(b, thresholds={})


def _classes(classes: tuple[str, ...], shown: int = 10) -> str:
    """The classes for an error message: the first ``shown``, and how many more."""
    text = ", ".join(repr(c) for c in classes[:shown])
    more = len(classes) - shown
    return f"classes: {text}" + (f" and {more} more" if more > 0 else "")


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
        # runtime thresholds of every model, persisted beside the snapshots if any
        # the store shared with the other replicas (`fleet`), if configured
        self.shared = fleet.SharedStore(config.store) if config.store is not None else None
        self.overrides_store = overrides.open_store(config.server.snapshot_dir, self.shared)
        self.overrides = self._load_overrides()
        self._overrides_lock = threading.Lock()
        self.models: dict[str, ModelMonitor] = {}
        errors = []
        for m in config.models:
            try:
                self.models[m.name] = self._load(m)
            except BaselineError as e:
                errors.append(f"model {m.name!r}: {e}")
        if errors:
            raise ConfigError(errors, str(config.path or "config"))
        self.snapshot_writes: Counter[str] = Counter({"ok": 0, "error": 0})
        self.snapshot_restores: Counter[str] = Counter()
        self.last_snapshot = 0.0
        if config.server.snapshot_dir is not None:
            for m in self.models.values():
                self.snapshot_restores[snapshot.restore(m, config.server.snapshot_dir)] += 1

    def write_snapshots(self) -> bool:
        """Snapshot every model (see `snapshot`); False if any failed (logged, counted)."""
        directory = self.config.server.snapshot_dir
        if directory is None:
            return True
        ok = True
        for m in self.models.values():
            try:
                snapshot.save(m, directory)
            except OSError as e:
                logging.getLogger("mlmon.snapshot").error("cannot snapshot %s: %s", m.name, e)
                ok = False
        self.snapshot_writes["ok" if ok else "error"] += 1
        if ok:
            self.last_snapshot = time.time()
        return ok

    def put_thresholds(self, model: str, values: dict[str, float]) -> dict[str, float]:
        """Override thresholds of a model at run time; stored (see `overrides`) before
        they apply, so an OSError changes nothing. Returns the values they replace."""
        with self._overrides_lock:
            m = self.models[model]
            before = {k: m.thresholds[k] for k in values}
            updated = {**self.overrides, model: {**self.overrides.get(model, {}), **values}}
            self.overrides_store.put(model, values, updated)
            self.overrides = updated
            m.set_thresholds(runtime=updated[model])
            return before

    def delete_threshold(self, model: str, name: str) -> tuple[float, float] | None:
        """Drop a runtime override, so the config's value applies again; returns (old,
        new), or None when the threshold has no override. Stored before it applies."""
        with self._overrides_lock:
            m = self.models[model]
            current = self.overrides.get(model, {})
            if name not in current:
                return None
            rest = {k: v for k, v in current.items() if k != name}
            updated = {k: v for k, v in self.overrides.items() if k != model}
            if rest:
                updated[model] = rest
            self.overrides_store.delete(model, name, updated)
            self.overrides = updated
            old = m.thresholds[name]
            m.set_thresholds(runtime=rest)
            return old, m.thresholds[name]

    def _load_overrides(self) -> overrides.Overrides:
        try:
            return self.overrides_store.load()
        except fleet.StoreUnavailable as e:  # read again by `refresh_overrides`
            logging.getLogger("mlmon.overrides").error("runtime thresholds unread: %s", e)
            return {}

    def refresh_overrides(self) -> bool:
        """Read the shared store's runtime thresholds and apply any change (every replica
        calls this every few seconds); False when the store did not answer."""
        if self.shared is None:
            return True
        # under the lock: a read that started before a PUT must not undo it afterwards
        with self._overrides_lock:
            try:
                stored = self.shared.load()
            except fleet.StoreUnavailable:
                return False
            if stored != self.overrides:
                logging.getLogger("mlmon.overrides").info(
                    "runtime thresholds from the store: %s (were %s)", stored, self.overrides
                )
                self.overrides = stored
                for name, m in self.models.items():
                    m.set_thresholds(runtime=stored.get(name, {}))
        return True

    def close(self) -> None:
        """Write the join records still queued for the shared store (shutdown)."""
        if self.shared is not None:
            self.shared.close()

    def reload(self) -> dict[str, list[str]]:
        """Re-read the config file. Models whose schema and baseline did not change keep
        their state (and take the new thresholds and limits; runtime overrides still win);
        changed and new models start clean; removed ones go. Raises ConfigError, changing
        nothing, on a bad config."""
        if self.config.path is None:
            raise ConfigError(["$: this exporter was not started from a config file"])
        with self._overrides_lock:  # no override lands on a model being replaced
            return self._reload(load_config(self.config.path))

    def _reload(self, cfg: Config) -> dict[str, list[str]]:
        fresh: dict[str, ModelMonitor] = {}
        kept, started = [], []
        errors = []
        for mc in cfg.models:
            old = self.models.get(mc.name)
            try:
                if (
                    old is not None
                    and _same_schema(old.schema.config, mc)
                    and load_profile(mc.baseline)["hash"] == old.schema.baseline_hash
                ):
                    fresh[mc.name] = old
                    kept.append(mc.name)
                else:
                    fresh[mc.name] = self._load(mc, cfg.limits)
                    started.append(mc.name)
            except BaselineError as e:
                errors.append(f"model {mc.name!r}: {e}")
        if errors:
            raise ConfigError(errors, str(cfg.path))
        for name in kept:  # only now: a refused reload changes nothing
            mc = next(c for c in cfg.models if c.name == name)
            fresh[name].set_thresholds(config=mc.thresholds)
            fresh[name].limits = cfg.limits
            fresh[name].state.max_versions = cfg.limits["max_versions"]
        removed = sorted(set(self.models) - set(fresh))
        # the server and the proxy themselves stay as started
        self.config = replace(cfg, server=self.config.server, proxy=self.config.proxy)
        self.models = fresh
        return {"kept": kept, "started": started, "removed": removed}

    def _load(self, m: ModelConfig, limits: dict[str, int] | None = None) -> ModelMonitor:
        schema = resolve(m, load_profile(m.baseline))
        cap = self.config.limits["max_classes"]
        if len(schema.classes) > cap:
            # per-class gauges and the confusion matrix grow with the square of the classes
            raise BaselineError(f"{len(schema.classes)} classes exceed limits.max_classes ({cap})")
        mm = ModelMonitor(schema, limits or self.config.limits, self.clock, self.counters)
        mm.set_thresholds(runtime=self.overrides.get(m.name, {}))
        mm.shared = self.shared
        return mm
