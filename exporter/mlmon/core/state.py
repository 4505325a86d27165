"""Per model and version: fixed-size count vectors with a ring of time slices.

Every counter of one model version lives in one flat int64 vector whose `Layout` names the
parts (feature bins, missing, out-of-range, categories, prediction, score, service). A
batch becomes one ``np.bincount`` over flat indices and is added to the current slice, the
sliding-window sum and the all-time totals. Rotating the ring subtracts the slice that
leaves the window. Memory depends on the schema only, never on the length of the stream.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlmon.core.config import FAILURE_REASONS, label_text
from mlmon.core.fields import Batch
from mlmon.core.schema import ModelSchema, NumericBlock

# Inference latency buckets: 1 ms to 10 s covers in-process models to heavy GPU batches
# with about two buckets per decade, so p50/p90/p99 interpolate within a factor of 2.5.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OTHER_VERSION = "__other__"
# Label delay buckets: a minute to a month, for labels that come back in seconds (clicks)
# or in weeks (loan defaults, chargebacks).
LABEL_DELAY_BUCKETS = (
    60.0,
    300.0,
    900.0,
    3600.0,
    10800.0,
    21600.0,
    86400.0,
    259200.0,
    604800.0,
    1209600.0,
    2592000.0,
)
# Absolute-error buckets of regression models, in units of the baseline's spread of
# predictions: from 1% to 4 standard deviations.
ABS_ERROR_SCALE = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class Part:
    start: int
    shape: tuple[int, ...]
    stop: int = field(init=False)

    def __post_init__(self) -> None:
        # read at every scrape for every family: computed once
        object.__setattr__(self, "stop", self.start + math.prod(self.shape))


class Layout:
    """Where each counter of a version sits in the flat int (and float) vectors."""

    def __init__(self, schema: ModelSchema, max_groups: int = 20) -> None:
        self.size = 0
        self.fsize = 0
        self.groups = max_groups + 1  # + __other__
        num, cat = schema.numeric, schema.categorical
        self.num_bins = self._add((len(num), num.width))
        self.num_missing = self._add((len(num),))
        self.num_below = self._add((len(num),))
        self.num_above = self._add((len(num),))
        self.cat_bins = self._add((len(cat), cat.width))
        self.cat_missing = self._add((len(cat),))
        pn, pc, sc = schema.prediction_numeric, schema.prediction_classes, schema.score
        pwidth = pn.width if pn is not None else (pc.width if pc is not None else 1)
        self.pred_bins = self._add((1, pwidth))
        self.pred_missing = self._add((1,))
        self.score_bins = self._add((1, sc.width if sc is not None else 1))
        self.events = self._add((1,))
        self.ok_events = self._add((1,))
        self.failures = self._add((len(FAILURE_REASONS),))
        self.latency = self._add((len(LATENCY_BUCKETS) + 1,))
        self.latency_observed = self._add((1,))
        self.num_sum = self._addf((len(num),))
        self.pred_sum = self._addf((1,))
        self.score_sum = self._addf((1,))
        self.latency_sum = self._addf((1,))
        # label-free estimates, at ingest (classifiers with scores): binary models count
        # and sum the positive probability per predicted class (negative, positive);
        # multiclass models the top probability.
        self.est_n = self._add((2,))
        self.est_p = self._addf((2,))
        attrs = len(schema.config.sensitive_attributes)
        classification = pc is not None
        ncls = len(schema.classes)
        self.group_pred = self._add((attrs if classification else 0, self.groups, pwidth))
        # joined labels, at label arrival
        self.labelled = self._add((1,))
        self.correct = self._add((1,))
        self.label_delay = self._add((len(LABEL_DELAY_BUCKETS) + 1,))
        self.label_delay_sum = self._addf((1,))
        lw = ncls + 1 if classification else 0  # + labels that are no class of the model
        self.conf = self._add((pwidth if classification else 0, lw))
        binary = schema.task == "binary"
        self.group_conf = self._add(
            (attrs if binary else 0, self.groups, pwidth if binary else 0, lw if binary else 0)
        )
        self.score_label = self._add((sc.width if sc is not None else 0, 2))
        self.score_label_sum = self._addf((len(sc.coarse_edges[0]) + 1 if sc is not None else 0,))
        self.brier_sum = self._addf((1,))
        self.abs_error = self._add((len(ABS_ERROR_SCALE) + 1 if pn is not None else 0,))
        # feature attributions, at ingest: per feature, the events that carried one and
        # the sum of their absolute values (global attribution = sum / events)
        features = len(num) + len(cat)
        self.attr_n = self._add((features,))
        self.attr_abs = self._addf((features,))
        # multivariate drift, at ingest: events scored, and the sum and sum of squares of
        # their reconstruction errors (the window's mean error needs no stored events)
        self.joint = self._addf((3 if schema.joint is not None else 0,))
        # the same per embedding, for the error of its own reconstruction
        scored = any(e.projection.scored for e in schema.embeddings)
        self.emb_joint = self._addf((len(schema.embeddings) if scored else 0, 3))
        self.reg = self._addf((5 if pn is not None else 0,))  # err, |err|, err^2, y, y^2

    def _add(self, shape: tuple[int, ...]) -> Part:
        p = Part(self.size, shape)
        self.size = p.stop
        return p

    def _addf(self, shape: tuple[int, ...]) -> Part:
        p = Part(self.fsize, shape)
        self.fsize = p.stop
        return p

    @staticmethod
    def view(vec: np.ndarray, part: Part) -> np.ndarray:
        return vec[part.start : part.stop].reshape(part.shape)


def _numeric_indices(
    block: NumericBlock,
    x: np.ndarray,
    bins_part: Part,
    missing_part: Part,
    below: Part | None,
    above: Part | None,
) -> list[np.ndarray]:
    if x.shape[1] == 0 or x.shape[0] == 0:
        return []
    bins = block.bin(x)
    bins += np.arange(bins_part.start, bins_part.start + x.shape[1] * block.width, block.width)
    missing = np.isnan(x)
    if missing.any():
        out = [bins[~missing], missing_part.start + np.nonzero(missing)[1]]
    else:
        out = [bins.ravel()]
    if below is not None and above is not None:
        with np.errstate(invalid="ignore"):
            out.append(below.start + np.nonzero(x < block.mins)[1])
            out.append(above.start + np.nonzero(x > block.maxs)[1])
    return out


def batch_delta(
    layout: Layout, schema: ModelSchema, batch: Batch, rows: np.ndarray | slice
) -> tuple[np.ndarray, np.ndarray]:
    """The int and float increments that the selected rows of a batch add to a version."""
    all_rows = np.arange(batch.n)[rows]
    ok_rows = all_rows[batch.ok[all_rows]]
    if ok_rows.size == batch.n:  # every event of the batch, and every one succeeded
        x, cats = batch.x_num, batch.cat_idx
    else:
        x, cats = batch.x_num[ok_rows], batch.cat_idx[ok_rows]
    idx = _numeric_indices(
        schema.numeric, x, layout.num_bins, layout.num_missing, layout.num_below, layout.num_above
    )
    if cats.shape[1] and cats.shape[0]:
        cols = np.broadcast_to(np.arange(cats.shape[1]), cats.shape)
        present = cats >= 0
        idx.append(layout.cat_bins.start + (cols * schema.categorical.width + cats)[present])
        idx.append(layout.cat_missing.start + cols[~present])

    fdelta = np.zeros(layout.fsize)
    Layout.view(fdelta, layout.num_sum)[:] = np.nansum(x, axis=0) if x.size else 0.0
    if schema.prediction_numeric is not None:
        pv = batch.pred_value[ok_rows][:, None]
        idx += _numeric_indices(
            schema.prediction_numeric, pv, layout.pred_bins, layout.pred_missing, None, None
        )
        fdelta[layout.pred_sum.start] = np.nansum(pv)
    else:
        pi = batch.pred_idx[ok_rows]
        idx.append(layout.pred_bins.start + pi[pi >= 0])
        idx.append(np.full(int((pi < 0).sum()), layout.pred_missing.start))
    if schema.score is not None:
        s = batch.score[ok_rows]
        s = s[~np.isnan(s)]
        idx.append(layout.score_bins.start + schema.score.bin(s[:, None])[:, 0])
        fdelta[layout.score_sum.start] = s.sum()

    if schema.prediction_classes is not None:
        _classifier_deltas(layout, schema, batch, ok_rows, idx, fdelta)
    if schema.joint is not None and ok_rows.size:
        e = schema.joint.errors(x, cats)
        fdelta[layout.joint.start : layout.joint.stop] = (e.size, e.sum(), e @ e)
    if layout.emb_joint.shape[0] and ok_rows.size:
        e = batch.emb_err[ok_rows]
        seen = ~np.isnan(e)
        e = np.where(seen, e, 0.0)
        sums = np.column_stack((seen.sum(axis=0), e.sum(axis=0), (e * e).sum(axis=0)))
        Layout.view(fdelta, layout.emb_joint)[:] = sums
    if batch.attr.shape[1]:
        a = batch.attr[ok_rows]
        present = ~np.isnan(a)
        idx.append(layout.attr_n.start + np.broadcast_to(np.arange(a.shape[1]), a.shape)[present])
        Layout.view(fdelta, layout.attr_abs)[:] = np.abs(np.where(present, a, 0.0)).sum(axis=0)

    lat = batch.latency[all_rows]
    lat = lat[~np.isnan(lat)]
    idx.append(layout.latency.start + np.searchsorted(LATENCY_BUCKETS, lat, side="left"))
    idx.append(np.full(lat.size, layout.latency_observed.start))
    fdelta[layout.latency_sum.start] = lat.sum()
    fail = batch.failure[all_rows]
    idx.append(layout.failures.start + fail[fail >= 0])

    delta = (
        np.bincount(np.concatenate(idx), minlength=layout.size)
        if idx
        else np.zeros(layout.size, dtype=np.int64)
    )
    delta[layout.events.start] += all_rows.size
    delta[layout.ok_events.start] += ok_rows.size
    return delta.astype(np.int64, copy=False), fdelta


def _classifier_deltas(
    layout: Layout,
    schema: ModelSchema,
    batch: Batch,
    ok_rows: np.ndarray,
    idx: list[np.ndarray],
    fdelta: np.ndarray,
) -> None:
    """Predictions by sensitive group, and the sums behind the label-free estimates."""
    pi = batch.pred_idx[ok_rows]
    attrs, groups, width = layout.group_pred.shape
    if attrs and batch.group_idx.size:
        g = batch.group_idx[ok_rows]
        a = np.broadcast_to(np.arange(attrs), g.shape)
        p = np.broadcast_to(pi[:, None], g.shape)
        valid = (g >= 0) & (p >= 0)
        idx.append(layout.group_pred.start + ((a * groups + g) * width + p)[valid])
    s = batch.score[ok_rows]
    has = ~np.isnan(s) & (pi >= 0)
    s, pi = s[has], pi[has]
    if schema.task == "binary":
        prob = schema.recalibrate(s)
        side = (pi == schema.positive_index).astype(np.int64)
        idx.append(layout.est_n.start + side)
        fdelta[layout.est_p.start] = prob[side == 0].sum()
        fdelta[layout.est_p.start + 1] = prob[side == 1].sum()
    else:
        idx.append(np.full(s.size, layout.est_n.start))
        fdelta[layout.est_p.start] = s.sum()


def label_delta(
    layout: Layout,
    schema: ModelSchema,
    predicted: np.ndarray,
    values: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    delays: np.ndarray,
    labels: list,
) -> tuple[np.ndarray, np.ndarray]:
    """The increments that joined labels add to a version: predicted class indices (or
    regression values), tracked scores, group indices [N, A], label delays and the labels."""
    n = len(labels)
    fdelta = np.zeros(layout.fsize)
    idx = [
        np.full(n, layout.labelled.start),
        layout.label_delay.start + np.searchsorted(LABEL_DELAY_BUCKETS, delays, side="left"),
    ]
    fdelta[layout.label_delay_sum.start] = delays.sum()
    if schema.prediction_classes is not None:
        vocab = schema.prediction_classes.vocab[0]
        ncls = len(schema.classes)
        actual = np.fromiter((vocab.get(label_text(v), ncls) for v in labels), np.int64, n)
        correct = (predicted == actual) & (actual < ncls)
        idx.append(np.full(int(correct.sum()), layout.correct.start))
        lw = layout.conf.shape[1]
        idx.append(layout.conf.start + predicted * lw + actual)
        attrs = layout.group_conf.shape[0]
        if attrs:
            g = groups
            a = np.broadcast_to(np.arange(attrs), g.shape)
            valid = g >= 0
            flat = (
                (a * layout.groups + g) * layout.group_conf.shape[2] + predicted[:, None]
            ) * lw + actual[:, None]
            idx.append(layout.group_conf.start + flat[valid])
        if schema.score is not None:
            y = (actual == schema.positive_index) if schema.task == "binary" else correct
            has = ~np.isnan(scores)
            s, y = scores[has], y[has].astype(np.int64)
            bins = schema.score.bin(s[:, None])[:, 0]
            idx.append(layout.score_label.start + bins * 2 + y)
            coarse = np.searchsorted(np.asarray(schema.score.coarse_edges[0]), s, side="left")
            part = layout.score_label_sum
            fdelta[part.start : part.stop] = np.bincount(coarse, weights=s, minlength=part.shape[0])
            fdelta[layout.brier_sum.start] = ((s - y) ** 2).sum()
    else:
        y = np.asarray(labels, dtype=np.float64)
        err = values - y
        edges = np.asarray(ABS_ERROR_SCALE) * schema.error_scale
        idx.append(layout.abs_error.start + np.searchsorted(edges, np.abs(err), side="left"))
        r = layout.reg.start
        fdelta[r : r + 5] = (err.sum(), np.abs(err).sum(), (err**2).sum(), y.sum(), (y**2).sum())
    delta = np.bincount(np.concatenate(idx), minlength=layout.size).astype(np.int64)
    return delta, fdelta


@dataclass(frozen=True)
class EventTimes:
    """When the events of one batch happened, as the window sees them."""

    now: float  # the clock when the batch arrived
    times: np.ndarray | None  # [N] each event's time, clamped to now; None: all now
    heads: np.ndarray | None  # [N] each event's slice number (LATE: before the window)
    late: int  # events older than the window: they enter the all-time totals only
    future: int  # events stamped beyond the tolerance ahead of now: counted at now

    def time_of(self, i: int) -> float:
        return self.now if self.times is None else float(self.times[i])


LATE = -(2**62)  # the slice number of an event older than the window


def event_times(
    timestamps: list[Any], now: float, slice_seconds: float, slices: int, tolerance: float
) -> EventTimes:
    """Each event's time (its `timestamp` in seconds since the epoch, else now) and slice.
    Up to ``tolerance`` ahead of now is clock skew and counts as now; further ahead is
    clamped to now and counted as ``future``. An event before the oldest slice still in
    the window is ``late``. One vectorised pass; a batch without timestamps costs one
    count of its list."""
    n = len(timestamps)
    if timestamps.count(None) == n:
        return EventTimes(now, None, None, 0, 0)
    t = np.fromiter((now if x is None else x for x in timestamps), np.float64, n)
    future = int(np.count_nonzero(t > now + tolerance))
    t = np.minimum(t, now)
    head = int(now // slice_seconds)
    late = t < (head - slices + 1) * slice_seconds
    heads = (np.where(late, now, t) // slice_seconds).astype(np.int64)
    heads[late] = LATE
    return EventTimes(now, t, heads, int(np.count_nonzero(late)), future)


# Every change of any version's counts takes the next number, so a generation never comes
# back, not even for a version retired and created again under its name: what is cached
# per version (drift, /metrics text) is keyed by it.
GENERATIONS = itertools.count(1)


class VersionState:
    """Counts of one model version: all-time totals, and a ring of slices for the window."""

    def __init__(self, layout: Layout, slices: int, head: int, now: float) -> None:
        self.ring = np.zeros((slices, layout.size), dtype=np.int64)
        self.window = np.zeros(layout.size, dtype=np.int64)
        self.total = np.zeros(layout.size, dtype=np.int64)
        self.fring = np.zeros((slices, layout.fsize))
        self.fwindow = np.zeros(layout.fsize)
        self.ftotal = np.zeros(layout.fsize)
        self.head = head
        self.last_update = now
        self.generation = next(GENERATIONS)

    def advance(self, head: int) -> None:
        steps = head - self.head
        if steps <= 0:
            return
        slices = self.ring.shape[0]
        if steps >= slices:
            self.ring[:] = 0
            self.window[:] = 0
            self.fring[:] = 0.0
        else:
            for k in range(1, steps + 1):
                slot = (self.head + k) % slices
                self.window -= self.ring[slot]
                self.ring[slot] = 0
                self.fring[slot] = 0.0
        # Float sums are re-added rather than subtracted, so rounding never accumulates.
        self.fwindow = self.fring.sum(axis=0)
        self.head = head
        self.generation = next(GENERATIONS)

    def add(
        self, delta: np.ndarray, fdelta: np.ndarray, now: float, head: int | None = None
    ) -> None:
        """Add to the totals, and to the slice ``head`` (default: the current one) when it
        is still in the window; an older slice's events enter the totals only."""
        self.total += delta
        self.ftotal += fdelta
        head = self.head if head is None else min(head, self.head)
        if self.head - head < self.ring.shape[0]:
            slot = head % self.ring.shape[0]
            self.ring[slot] += delta
            self.window += delta
            self.fring[slot] += fdelta
            self.fwindow += fdelta
        self.last_update = now
        self.generation = next(GENERATIONS)


@dataclass
class VersionSnapshot:
    version: str
    window: np.ndarray
    total: np.ndarray
    fwindow: np.ndarray
    ftotal: np.ndarray
    generation: int


class ModelState:
    """All versions of one model, guarded by one lock; the clock is injectable for tests."""

    def __init__(
        self,
        schema: ModelSchema,
        limits: dict[str, int],
        clock: Callable[[], float] = time.time,
        on_limit: Callable[[str], None] | None = None,
    ) -> None:
        self.schema = schema
        self.layout = Layout(schema, limits["max_groups"])
        self.max_versions = limits["max_versions"]
        self.clock = clock
        self.on_limit = on_limit or (lambda name: None)
        self.lock = threading.Lock()
        self.versions: dict[str, VersionState] = {}
        self.slice_seconds = schema.config.window.slice_seconds
        self.slices = schema.config.window.slices
        self.future_tolerance = schema.config.window.future_tolerance_seconds

    def _head(self, now: float) -> int:
        return int(now // self.slice_seconds)

    def _version(self, name: str, now: float) -> VersionState:
        vs = self.versions.get(name)
        if vs is not None:
            return vs
        if len(self.versions) >= self.max_versions:
            if name != OTHER_VERSION:  # a name folded before it got here was counted then
                self.on_limit("max_versions")
            # Retire the longest-idle version if its window has emptied; otherwise fold the
            # newcomer into __other__ so that a flood of versions cannot grow the series.
            idle = min(
                ((v.last_update, k) for k, v in self.versions.items() if k != OTHER_VERSION),
                default=None,
            )
            if idle is not None and now - idle[0] > self.slice_seconds * self.slices:
                del self.versions[idle[1]]
            else:
                name = OTHER_VERSION
                if name in self.versions:
                    return self.versions[name]
        vs = VersionState(self.layout, self.slices, self._head(now), now)
        self.versions[name] = vs
        return vs

    def event_times(self, timestamps: list[Any], now: float) -> EventTimes:
        """Where each event of a batch belongs in time (see `EventTimes`)."""
        return event_times(timestamps, now, self.slice_seconds, self.slices, self.future_tolerance)

    def ingest(self, batch: Batch, times: EventTimes | None = None) -> EventTimes:
        """Add a batch, each event to the slice of its time (`event_times`; by default
        the batch's timestamps against the clock). Returns the times used."""
        now = self.clock() if times is None else times.now
        if times is None:
            times = self.event_times(batch.timestamps, now)
        if batch.n == 0:
            return times
        head = self._head(now)
        names = self._folded(batch.versions)
        groups: dict[tuple[str, int], list[int]] = {}
        if len(names) == 1 and times.heads is None:  # the usual batch: one version, now
            groups[(names[batch.versions[0]], head)] = list(range(batch.n))
        else:
            heads = [head] * batch.n if times.heads is None else times.heads.tolist()
            for i, (v, h) in enumerate(zip(batch.versions, heads, strict=True)):
                groups.setdefault((names[v], h), []).append(i)
        # The deltas are computed outside the lock; only the additions hold it. Versions new
        # in this batch are created in order of their share of it: the order versions were
        # first seen names the default champion, and within one batch that is the majority
        # (__other__ last: it must not take a named version's place).
        share = Counter(map(names.__getitem__, batch.versions))
        order = sorted(
            groups.items(), key=lambda item: (item[0][0] == OTHER_VERSION, -share[item[0][0]])
        )
        deltas = []
        for (version, h), rows in order:
            sel: np.ndarray | slice = slice(None) if len(groups) == 1 else np.asarray(rows)
            deltas.append((version, h, *batch_delta(self.layout, self.schema, batch, sel)))
        with self.lock:
            for vs in self.versions.values():
                vs.advance(head)
            for version, h, d, fd in deltas:
                self._version(version, now).add(d, fd, now, h)
        return times

    def _folded(self, versions: list[str]) -> dict[str, str]:
        """Each distinct version name of a batch, or __other__ where the cap will fold it:
        a batch of many new names costs a few deltas, not one per name. (`_version` makes
        the final choice, which may also retire an idle version.)"""
        now = self.clock()
        with self.lock:
            known = set(self.versions)
            idle = sum(
                1
                for k, vs in self.versions.items()
                if k != OTHER_VERSION and now - vs.last_update > self.slice_seconds * self.slices
            )
        room = self.max_versions - len(known) + idle
        out = {}
        for v in dict.fromkeys(versions):
            if v in known:
                out[v] = v
            elif room > 0:
                out[v] = v
                room -= 1
            else:
                out[v] = OTHER_VERSION
                self.on_limit("max_versions")
        return out

    def add(
        self, version: str, delta: np.ndarray, fdelta: np.ndarray, at: float | None = None
    ) -> None:
        """Add increments (joined labels) to a version: to the slice of time ``at`` (by
        default now; in the future: now), or to its totals only when that slice has left
        the window."""
        now = self.clock()
        head = self._head(now)
        at_head = head if at is None else min(self._head(min(at, now)), head)
        with self.lock:
            for vs in self.versions.values():
                vs.advance(head)
            self._version(version, now).add(delta, fdelta, now, at_head)

    def snapshot(self) -> list[VersionSnapshot]:
        """Copies of every version's counts, the window advanced to now."""
        head = self._head(self.clock())
        with self.lock:
            out = []
            for name, vs in self.versions.items():
                vs.advance(head)
                out.append(
                    VersionSnapshot(
                        name,
                        vs.window.copy(),
                        vs.total.copy(),
                        vs.fwindow.copy(),
                        vs.ftotal.copy(),
                        vs.generation,
                    )
                )
            return out
