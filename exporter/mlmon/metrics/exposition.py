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
import orjson
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
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def _escape_label(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n")


class Family:
    """One metric family, its samples held as columns: name suffixes, label values and
    values; histogram bucket samples carry the `le` value as their last label value."""

    __slots__ = ("doc", "kind", "label_values", "labelnames", "name", "suffixes", "values")

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
        self.suffixes: list[str] = []
        self.label_values: list[tuple[str, ...]] = []
        self.values: list[float] = []
        if value is not None:
            self.add_metric((), value)

    @property
    def samples(self) -> list[tuple[str, tuple[str, ...], float]]:
        """(name suffix, label values, value) of every sample."""
        return list(zip(self.suffixes, self.label_values, self.values, strict=True))

    def add_metric(self, labels: Sequence[str], value: float) -> None:
        self.suffixes.append("_total" if self.kind == "counter" else "")
        self.label_values.append(tuple(labels))
        self.values.append(value)

    def add_many(self, labels: Iterable[tuple[str, ...]], values: Iterable[float]) -> None:
        """`add_metric` for many label tuples and their values at once."""
        labels = labels if type(labels) is list else list(labels)
        values = values.tolist() if isinstance(values, np.ndarray) else list(values)
        if len(labels) != len(values):
            raise ValueError(f"{self.name}: {len(labels)} label sets, {len(values)} values")
        self.label_values += labels
        self.values += values
        self.suffixes += repeat("_total" if self.kind == "counter" else "", len(labels))

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
        rows = _HISTOGRAM_ROWS.get(key)
        if rows is None:
            if len(_HISTOGRAM_ROWS) > 100_000:
                _HISTOGRAM_ROWS.clear()
            rows = _HISTOGRAM_ROWS[key] = [(*base, le) for le in (*les, "+Inf")] + [base, base]
        cum = cumulative.tolist() if isinstance(cumulative, np.ndarray) else list(cumulative)
        if len(cum) != len(les):
            raise ValueError(f"{self.name}: {len(les)} bounds but {len(cum)} counts")
        values = self.values
        values += cum
        values += (count, count, total)
        self.label_values += rows
        self.suffixes += _histogram_suffixes(len(les))

    def add_histograms(
        self,
        labels: list[tuple[str, ...]],
        bounds: Sequence[Sequence[float]],
        cumulative: np.ndarray,
        counts: np.ndarray,
        sums: np.ndarray,
    ) -> None:
        """`add` for many histograms at once: histogram j has the label values
        ``labels[j]``, the bounds ``bounds[j]`` and its cumulative counts at them in row j
        of ``cumulative`` (padded beyond its bounds), its count and sum in ``counts[j]``
        and ``sums[j]``. The values are gathered from the arrays in one step."""
        rows, suffixes, index = _plan_of(labels, bounds, cumulative.shape[1])
        table = np.concatenate((cumulative.ravel(), counts.ravel(), sums.ravel()), dtype=np.float64)
        self.values += table[index].tolist()
        self.label_values += rows
        self.suffixes += suffixes

    def to_metric(self) -> Metric:
        m = Metric(self.name, self.doc, self.kind)
        for suffix, values, value in self.samples:
            names = (*self.labelnames, "le") if suffix == "_bucket" else self.labelnames
            m.add_sample(self.name + suffix, dict(zip(names, values, strict=True)), float(value))
        return m


def _histogram_suffixes(bounds: int) -> tuple[str, ...]:
    suffixes = _SUFFIXES.get(bounds)
    if suffixes is None:
        suffixes = _SUFFIXES[bounds] = ("_bucket",) * (bounds + 1) + ("_count", "_sum")
    return suffixes


def _plan_of(labels: list[tuple[str, ...]], bounds: Sequence[Sequence[float]], width: int):
    """`_histogram_plan` of these labels and bounds, found by the objects' identity when
    the caller passes the same ones as before (the collector's shared label rows and
    schema edges, never changed), else by their content."""
    ident = (id(labels), id(bounds), width)
    hit = _PLANS_BY_ID.get(ident)
    if hit is not None and hit[0] is labels and hit[1] is bounds:
        return hit[2]
    key = (tuple(labels), tuple(map(tuple, bounds)), width)
    plan = _HISTOGRAM_PLANS.get(key)
    if plan is None:
        if len(_HISTOGRAM_PLANS) > 10_000:
            _HISTOGRAM_PLANS.clear()
        plan = _HISTOGRAM_PLANS[key] = _histogram_plan(*key)
    if len(_PLANS_BY_ID) > 10_000:
        _PLANS_BY_ID.clear()
    # holding both objects keeps their ids from being reused by others
    _PLANS_BY_ID[ident] = (labels, bounds, plan)
    return plan


def _histogram_plan(
    labels: tuple[tuple[str, ...], ...], bounds: tuple[tuple[float, ...], ...], width: int
) -> tuple[list[tuple[str, ...]], list[str], np.ndarray]:
    """The label values and suffixes of `add_histograms`' samples, and where each sample's
    value sits in the table [cumulative (flattened) | counts | sums]: +Inf and _count both
    read the count."""
    rows: list[tuple[str, ...]] = []
    suffixes: list[str] = []
    index: list[int] = []
    counts = len(labels) * width
    sums = counts + len(labels)
    for j, (base, b) in enumerate(zip(labels, bounds, strict=True)):
        les = _le_texts(b)
        rows += [(*base, le) for le in (*les, "+Inf")] + [base, base]
        suffixes += _histogram_suffixes(len(les))
        start = j * width
        index += [*range(start, start + len(les)), counts + j, counts + j, sums + j]
    return rows, suffixes, np.asarray(index, dtype=np.intp)


_SUFFIXES: dict[int, tuple[str, ...]] = {}
_HISTOGRAM_PLANS: dict[tuple, tuple[list[tuple[str, ...]], list[str], np.ndarray]] = {}
_PLANS_BY_ID: dict[tuple[int, int, int], tuple[Any, Any, tuple]] = {}
# (label values, `le` texts) -> the label values of the histogram's samples
_HISTOGRAM_ROWS: dict[tuple[tuple[str, ...], tuple[str, ...]], list[tuple[str, ...]]] = {}
_LE_CACHE: dict[tuple[float, ...], tuple[str, ...]] = {}


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


class Block:
    """A family already written out, header and sample lines, which `Renderer.render` copies
    as it is (see `blocks.BlockCache`)."""

    __slots__ = ("name", "text")

    def __init__(self, name: str, text: bytes) -> None:
        self.name = name
        self.text = text


# per family: (suffixes, label values, line starts) of the samples it had when last written
Seen = dict[str, tuple[list[str], list[tuple[str, ...]], list[str]]]


class Renderer:
    """Writes families as exposition text, caching each sample's label part."""

    MAX_CACHED = 500_000

    def __init__(self) -> None:
        # sample name -> label values -> 'name{a="x"} '
        self._prefix: dict[str, dict[tuple[str, ...], str]] = {}
        self._size = 0
        self._seen: Seen = {}

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

    def render(self, families: Iterable[Family | Block]) -> bytes:
        items = list(families)
        fams = [f for f in items if type(f) is not Block]
        written = iter(self.write(fams, self._seen))
        return b"".join(
            f.text if type(f) is Block else (header(f) + next(written)).encode() for f in items
        )

    def lines(self, fam: Family, seen: Seen) -> str:
        return self.write([fam], seen)[0]

    def write(self, families: list[Family], seen: Seen) -> list[str]:
        """The sample lines of each family, the values of all of them formatted in one go;
        ``seen`` keeps each family's line starts for the next call."""
        starts = [self._line_starts(fam, seen) for fam in families]
        values: list[float] = []
        for fam in families:
            values += fam.values
        texts = _format_values(values)
        out, i = [], 0
        for s in starts:
            j = i + len(s)
            parts: list[str] = [""] * (2 * len(s))
            parts[::2] = s
            parts[1::2] = texts[i:j]
            out.append("".join(parts))
            i = j
        return out

    def _line_starts(self, fam: Family, seen: Seen) -> list[str]:
        # the same series as at the last scrape (the usual case): the same line starts,
        # found by one comparison of lists in C instead of a lookup per sample
        last = seen.get(fam.name)
        if last is not None and last[1] == fam.label_values and last[0] == fam.suffixes:
            return last[2]
        prefixes = self._prefixes(fam, fam.suffixes, fam.label_values)
        seen[fam.name] = (fam.suffixes, fam.label_values, prefixes)
        return prefixes

    def _prefixes(
        self, fam: Family, suffixes: list[str], label_values: list[tuple[str, ...]]
    ) -> list[str]:
        names = fam.labelnames
        bucket_names = (*names, "le")
        base = fam.name
        cache = self._prefix
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
        return prefixes


def header(fam: Family) -> str:
    name = fam.name + "_total" if fam.kind == "counter" else fam.name
    return f"# HELP {name} {_escape_help(fam.doc)}\n# TYPE {name} {fam.kind}\n"


def _format_values(values: list[Any]) -> list[str]:
    """Every value as `go_float` writes it, each followed by a newline.

    orjson writes a whole array at once, in C, with the shortest digits that read back as
    the same float: Python's repr, for every value from 1e-4 up to 1e16 (checked against
    repr on 80 million random floats; tests/test_collector.py keeps checking). NaN,
    infinities, magnitudes below 1e-4 (repr uses an exponent there) and numbers of a million
    or more (where Go does) are written one by one by `go_float`."""
    arr = np.asarray(values, dtype=np.float64)
    mag = np.abs(arr)
    plain = (arr < 1e6) & (mag < 1e16) & ((mag >= 1e-4) | (arr == 0))  # False for NaN
    if plain.all():
        return _orjson_texts(arr)
    out = np.empty(arr.size, dtype=object)
    if plain.any():
        out[plain] = _orjson_texts(arr[plain])
    out[~plain] = [go_float(v) + "\n" for v in arr[~plain].tolist()]
    return out.tolist()


def _orjson_texts(arr: np.ndarray) -> list[str]:
    if not arr.size:
        return []
    text = orjson.dumps(arr, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    return (text[1:-1].replace(",", "\n,") + "\n").split(",")
