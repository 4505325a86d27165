"""Metric families and a text renderer for the Prometheus exposition format (0.0.4).

The collector fills light `Family` objects (a name, help, type, label names and a list of
samples as tuples); `Renderer.render` writes the text straight from them. The label part
of every sample line (``name{a="x",b="y"} ``) is cached between scrapes — the label sets
barely change — so a scrape costs one dict lookup and one number format per sample.
`Family.to_metric` gives the same family as a prometheus_client `Metric`, for the client
library's registry and as the reference the tests compare the renderer with.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Sequence
from itertools import accumulate, repeat
from typing import Any

import numpy as np
from prometheus_client.metrics_core import Metric

_INF = math.inf


def go_float(v: float) -> str:
    """A float as Prometheus (Go) writes it: +Inf, -Inf, NaN, and Python's repr otherwise,
    except that large numbers switch to an exponent where Go does."""
    if v != v:
        return "NaN"
    if v == _INF:
        return "+Inf"
    if v == -_INF:
        return "-Inf"
    s = repr(v)
    dot = s.find(".")
    if v > 0 and dot > 6:
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return s


def _escape_label(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n")


class Family:
    """One metric family. Samples are (name suffix, label values, value); histogram bucket
    samples carry the `le` value as their last label value."""

    __slots__ = ("doc", "kind", "labelnames", "name", "samples")

    def __init__(
        self,
        name: str,
        doc: str,
        kind: str,
        labels: Sequence[str] = (),
        value: float | None = None,
    ) -> None:
        self.name = name
        self.doc = doc
        self.kind = kind
        self.labelnames = tuple(labels)
        self.samples: list[tuple[str, tuple[str, ...], float]] = []
        if value is not None:
            self.add_metric((), value)

    def add_metric(self, labels: Sequence[str], value: float) -> None:
        self.samples.append(("_total" if self.kind == "counter" else "", tuple(labels), value))

    def add_many(self, labels: Iterable[tuple[str, ...]], values: Iterable[float]) -> None:
        """`add_metric` for many label tuples and their values at once."""
        suffix = "_total" if self.kind == "counter" else ""
        if isinstance(values, np.ndarray):
            values = values.tolist()
        self.samples.extend(zip(repeat(suffix), labels, values))

    def add(
        self,
        labels: Sequence[str],
        bounds: Iterable[float],
        cumulative: Iterable[float],
        count: float,
        total: float,
    ) -> None:
        """A histogram's buckets (``cumulative`` counts at ``bounds``), +Inf, count and sum;
        `_count` and `_sum` are always written, whatever the bounds."""
        base = tuple(labels)
        les = _le_texts(bounds)
        key = (base, les)
        bucket_labels = _BUCKET_LABELS.get(key)
        if bucket_labels is None:
            if len(_BUCKET_LABELS) > 100_000:
                _BUCKET_LABELS.clear()
            bucket_labels = _BUCKET_LABELS[key] = [(*base, le) for le in les]
        if isinstance(cumulative, np.ndarray):
            cumulative = cumulative.tolist()
        samples = self.samples
        samples.extend(zip(repeat("_bucket"), bucket_labels, cumulative))
        samples.append(("_bucket", (*base, "+Inf"), count))
        samples.append(("_count", base, count))
        samples.append(("_sum", base, total))

    def to_metric(self) -> Metric:
        m = Metric(self.name, self.doc, self.kind)
        for suffix, values, value in self.samples:
            names = (*self.labelnames, "le") if suffix == "_bucket" else self.labelnames
            m.add_sample(self.name + suffix, dict(zip(names, values, strict=True)), float(value))
        return m


_LE_CACHE: dict[tuple[float, ...], tuple[str, ...]] = {}
_BUCKET_LABELS: dict[tuple[tuple[str, ...], tuple[str, ...]], list[tuple[str, ...]]] = {}


def _le_texts(bounds: Iterable[float]) -> tuple[str, ...]:
    key = bounds if type(bounds) is tuple else tuple(float(b) for b in bounds)
    texts = _LE_CACHE.get(key)
    if texts is None:
        if len(_LE_CACHE) > 10_000:
            _LE_CACHE.clear()
        texts = _LE_CACHE[key] = tuple(go_float(float(b)) for b in key)
    return texts


class RenderTimes:
    """How long each /metrics render took: a histogram the next scrape exports (a render
    cannot time itself), so a growing label set shows before scrapes time out."""

    BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = [0] * (len(self.BUCKETS) + 1)
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        with self._lock:
            self._counts[bisect.bisect_left(self.BUCKETS, seconds)] += 1
            self._sum += seconds

    def snapshot(self) -> tuple[list[int], int, float]:
        """Cumulative bucket counts, the count and the sum."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        return list(accumulate(counts[:-1])), sum(counts), total


class Renderer:
    """Writes families as exposition text, caching each sample's label part."""

    MAX_CACHED = 500_000

    def __init__(self) -> None:
        # sample name -> label values -> 'name{a="x"} '
        self._prefix: dict[str, dict[tuple[str, ...], str]] = {}
        self._size = 0
        # family name -> (suffixes, label values, line starts) of its last scrape
        self._families: dict[
            str, tuple[tuple[str, ...], tuple[tuple[str, ...], ...], list[str]]
        ] = {}

    def _line_prefix(self, name: str, names: tuple[str, ...], values: tuple[str, ...]) -> str:
        if self._size > self.MAX_CACHED:
            self._prefix.clear()
            self._size = 0
        if values:
            pairs = ",".join(
                f'{n}="{_escape_label(str(v))}"' for n, v in zip(names, values, strict=True)
            )
            p = f"{name}{{{pairs}}} "
        else:
            p = f"{name} "
        self._prefix.setdefault(name, {})[values] = p
        self._size += 1
        return p

    def render(self, families: Iterable[Family]) -> bytes:
        out: list[str] = []
        append = out.append
        cache = self._prefix
        for fam in families:
            header = fam.name + "_total" if fam.kind == "counter" else fam.name
            append(f"# HELP {header} {_escape_help(fam.doc)}\n# TYPE {header} {fam.kind}\n")
            if not fam.samples:
                continue
            names = fam.labelnames
            bucket_names = (*names, "le")
            base = fam.name
            suffixes, label_values, values = zip(*fam.samples, strict=True)
            # the same series as at the last scrape (the usual case): the same line starts,
            # found by one comparison of tuples in C instead of a lookup per sample
            seen = self._families.get(base)
            if seen is not None and seen[0] == suffixes and seen[1] == label_values:
                prefixes = seen[2]
            else:
                prefixes = []
                last, by_values = None, {}
                for suffix, lv in zip(suffixes, label_values, strict=True):
                    if suffix != last:
                        last = suffix
                        by_values = cache.get(base + suffix) or {}
                    p = by_values.get(lv)
                    if p is None:
                        ln = bucket_names if suffix == "_bucket" else names
                        p = self._line_prefix(base + suffix, ln, lv)
                        by_values = cache[base + suffix]
                    prefixes.append(p)
                self._families[base] = (suffixes, label_values, prefixes)
            append("\n".join(map(str.__add__, prefixes, _format_values(values))))
            append("\n")
        return "".join(out).encode()


def _format_values(values: tuple[Any, ...]) -> list[str]:
    """Every value as `go_float` writes it: the repr of a list formats them all in one call;
    only NaN, infinities and numbers of a million or more need a second look."""
    arr = np.asarray(values, dtype=np.float64)
    if np.isfinite(arr).all() and np.abs(arr).max() < 1e6:
        ints = arr.astype(np.int64)
        if np.array_equal(ints, arr):
            # counts: integers print much faster than floats (-0.0 prints as 0.0)
            return [t + ".0" for t in repr(ints.tolist())[1:-1].split(", ")]
    texts = repr(arr.tolist())[1:-1].split(", ")
    special = ~np.isfinite(arr) | (arr >= 1e6)
    if special.any():
        for i in np.flatnonzero(special).tolist():
            texts[i] = go_float(float(arr[i]))
    return texts
