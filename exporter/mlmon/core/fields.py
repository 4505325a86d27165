"""What both forms of a batch (rows in `events`, columns in `columns`) share: the Batch
they produce, the error collector, and the checks of one field value, so both accept and
refuse exactly the same values."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import sub
from typing import Any

import numpy as np

from mlmon.core.baseline import OTHER
from mlmon.core.config import FAILURE_REASONS, NAME_RE
from mlmon.core.decoding import MAX_DETAILS
from mlmon.core.schema import Embedding, ModelSchema

NUMBER_TYPES = frozenset({int, float, type(None)})
CATEGORY_TYPES = (str, int, bool)
REASON_INDEX = {r: i for i, r in enumerate(FAILURE_REASONS)}
# Why a feature value was refused: the `reason` of mlmon_ingest_refused_values_total. A
# numeric feature refuses what is not a number (type_error) and integers too large for a
# float (out_of_range); a categorical one what is not a string, integer or boolean
# (type_error) and strings over limits.max_string_length (too_long); an embedding what is
# not a list of numbers (type_error), a list of another length (wrong_length) and NaN,
# infinities or integers too large for a float among its numbers (out_of_range).
REFUSED_VALUE_REASONS: dict[str, tuple[str, ...]] = {
    "numeric": ("type_error", "out_of_range"),
    "categorical": ("type_error", "too_long"),
    "embedding": ("type_error", "wrong_length", "out_of_range"),
}
# At most this many unknown feature names are listed in an ingest answer (sorted).
MAX_UNKNOWN_REPORTED = 20
# Up to this many unknown names, each is counted with one C-level pass over the events;
# beyond, one Counter over every event's unknown keys is cheaper.
_FEW_UNKNOWN = 4


@dataclass
class Batch:
    """The accepted events of one request as arrays, in request order."""

    n: int
    versions: list[str]
    ok: np.ndarray  # [N] bool: inference succeeded (inputs and outputs are profiled)
    x_num: np.ndarray  # [N, F] float, NaN = missing
    cat_idx: np.ndarray  # [N, G] int, -1 = missing
    pred_value: np.ndarray  # [N] float (regression), NaN = missing
    pred_idx: np.ndarray  # [N] int (classification), -1 = missing
    score: np.ndarray  # [N] float, NaN = none
    latency: np.ndarray  # [N] float, NaN = not reported
    failure: np.ndarray  # [N] int reason index, -1 = succeeded
    ids: list[Any]
    timestamps: list[Any]
    groups: list[dict[str, str] | None]
    group_idx: np.ndarray = field(default_factory=lambda: np.empty((0, 0), dtype=np.int64))
    # [N, F] each feature's attribution (schema.attribution_names order), NaN = none; no
    # columns when no event of the batch carried attributions
    attr: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    # [N, E] each embedding's reconstruction error (schema.embeddings order), NaN = none
    emb_err: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    # feature names the model does not have, with the accepted events that carried them
    unknown_features: dict[str, int] = field(default_factory=dict)

    def unknown_names(self, max_length: int) -> list[str]:
        """The first MAX_UNKNOWN_REPORTED unknown names in sorted order, each cut to
        ``max_length`` characters: what an ingest answer lists."""
        names = sorted(self.unknown_features)[:MAX_UNKNOWN_REPORTED]
        return [n[:max_length] for n in names]


def type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


class Errors:
    """The error details of a batch (the first MAX_DETAILS), the indices of its bad events,
    and every refused feature value counted by (feature, reason)."""

    def __init__(self, refused: dict[tuple[str, str], int] | None = None) -> None:
        self.items: list[dict[str, Any]] = []
        self.bad: set[int] = set()
        self.refused: dict[tuple[str, str], int] = {} if refused is None else refused

    def add(self, index: int, field: str, message: str) -> None:
        self.bad.add(index)
        if len(self.items) < MAX_DETAILS:
            self.items.append({"index": index, "field": field, "message": message})

    def refuse(self, index: int, feature: str, reason: str, message: str) -> None:
        """A refused value of ``feature``: counted, and a detail of event ``index``."""
        self.count_refused(feature, reason)
        self.add(index, f"features.{feature}", message)

    def count_refused(self, feature: str, reason: str) -> None:
        """A refused value of ``feature`` counted, without a detail of its own."""
        key = (feature, reason)
        self.refused[key] = self.refused.get(key, 0) + 1


def unknown_features(
    feats: list[dict[str, Any]], known: dict[str, Any], complete: bool
) -> dict[str, int]:
    """The feature names of ``feats`` that are not keys of ``known``, with the number of
    events that carried each. ``complete`` says every event has every known feature: then
    equal key counts prove there is nothing unknown, at the cost of one len() per event."""
    if complete and sum(map(len, feats)) == len(feats) * len(known):
        return {}
    names = set().union(*feats).difference(known)
    if not names:
        return {}
    if len(names) <= _FEW_UNKNOWN:
        return {u: sum(map(dict.__contains__, feats, repeat(u))) for u in names}
    return Counter(chain.from_iterable(map(sub, map(dict.keys, feats), repeat(known))))


def finite_number(v: Any) -> bool:
    t = type(v)
    if t is float:
        return math.isfinite(v)
    return t is int and v.bit_length() < 1024  # larger integers are no float


# Checks of one value of an event field, shared by the row and the columnar forms so both
# accept and refuse exactly the same values: each returns what is wrong, or None.


def bad_error(v: Any, max_str: int) -> str | None:
    if type(v) is not str or len(v) > max_str:
        return f"expected null or a string of at most {max_str} characters"
    return None


def valid_unicode(s: str) -> bool:
    """False for a string with a lone surrogate ("\\ud800" is valid JSON but no text): it
    cannot be written as UTF-8, to /metrics or to the shared store."""
    if s.isascii():
        return True
    try:
        s.encode()
    except UnicodeEncodeError:
        return False
    return True


def bad_group(v: Any, max_str: int) -> str | None:
    if bad_class(v, max_str):
        return "expected a string"
    if v == OTHER:
        return f"{OTHER!r} is reserved (the groups beyond limits.max_groups)"
    return None


def bad_class(v: Any, max_str: int) -> bool:
    """A class, category or group: a string of at most max_str characters, a 64-bit integer
    or a boolean (label values stay short)."""
    t = type(v)
    if t is str:
        return len(v) > max_str or not valid_unicode(v)
    if t is int:
        return v.bit_length() > 64
    return t is not bool


def bad_prediction(v: Any, classification: bool, max_str: int) -> str | None:
    if classification:
        if bad_class(v, max_str):
            return f"expected a class (string or integer), got {type_name(v)}"
        return None
    if type(v) not in (int, float):
        return f"expected a number, got {type_name(v)}"
    if type(v) is int and v.bit_length() >= 1024:
        return "number out of range"
    return None


def bad_version(v: Any) -> str | None:
    if type(v) is not str or not NAME_RE.match(v):
        return "expected 1-64 characters of letters, digits, _ . : -"
    return None


def bad_id(v: Any, max_str: int) -> str | None:
    t = type(v)
    if (t is str and len(v) <= max_str and valid_unicode(v)) or (t is int and v.bit_length() <= 64):
        return None
    return f"expected a string of at most {max_str} characters or a 64-bit integer"


def bad_timestamp(v: Any) -> str | None:
    return None if finite_number(v) else "expected seconds since the epoch as a number"


def bad_latency(v: Any) -> str | None:
    return None if finite_number(v) and v >= 0 else "expected a non-negative number"


def bad_score(v: Any) -> str | None:
    if type(v) not in (int, float) or not 0.0 <= v <= 1.0:
        return "probabilities must be numbers in [0, 1]"
    return None


def check_scores(errs: Errors, i: int, v: Any, classification: bool) -> None:
    if not classification:
        errs.add(i, "scores", "only classification models have class scores")
        return
    values = v.values() if type(v) is dict else [v]
    if type(v) is not dict and type(v) not in (int, float):
        errs.add(i, "scores", "expected an object of class -> probability, or a number")
        return
    for s in values:
        if msg := bad_score(s):
            errs.add(i, "scores", msg)
            return


def attribution_matrix(
    events: list[Any], names: tuple[str, ...], errs: Errors, max_feats: int
) -> np.ndarray:
    """Each event's ``attributions`` (feature -> finite number) as an [N, F] array, NaN
    where absent; names the model does not monitor are ignored. No columns when no event
    carries any (the common case costs one dict lookup per event)."""
    carried = [
        (i, a)
        for i, ev in enumerate(events)
        if type(ev) is dict and (a := ev.get("attributions")) is not None
    ]
    if not carried:
        return np.empty((len(events), 0))
    out = np.full((len(events), len(names)), np.nan)
    if all(type(a) is dict and len(a) <= max_feats for _, a in carried):
        # the common case: numbers (or null) only, checked in C over a whole matrix
        rows = [[a.get(n) for n in names] for _, a in carried]
        flat = list(chain.from_iterable(rows))
        if set(map(type, flat)) <= NUMBER_TYPES:
            try:
                values = np.array(rows, dtype=np.float64).reshape(len(rows), len(names))
            except OverflowError:
                values = None
            # null is "none"; NaN or an infinity is refused, as the slow path says
            if values is not None and (
                int(np.isfinite(values).sum()) + flat.count(None) == values.size
            ):
                out[[i for i, _ in carried]] = values
                return out
    index = {n: j for j, n in enumerate(names)}
    for i, a in carried:
        if type(a) is not dict:
            errs.add(
                i, "attributions", f"expected an object of feature -> number, got {type_name(a)}"
            )
        elif len(a) > max_feats:
            errs.add(i, "attributions", f"{len(a)} attributions exceed the limit of {max_feats}")
        else:
            for k, v in a.items():
                j = index.get(k)
                if j is None or v is None:  # not monitored, or none for this feature
                    continue
                if msg := bad_attribution(v):
                    errs.add(i, f"attributions.{k}", msg)
                    break
                out[i, j] = v
    return out


def bad_embedding(v: Any, dim: int) -> tuple[str, str] | None:
    """What is wrong with one embedding value, as (reason, message), or None."""
    if type(v) is not list:
        return "type_error", f"expected a list of {dim} numbers, got {type_name(v)}"
    if len(v) != dim:
        return "wrong_length", f"expected a list of {dim} numbers, got {len(v)}"
    for j, x in enumerate(v):
        if type(x) not in (int, float):
            return "type_error", f"element {j}: expected a number, got {type_name(x)}"
        if not finite_number(x):
            return "out_of_range", f"element {j}: not a finite number"
    return None


def _vectors(values: list[Any], dim: int) -> np.ndarray | None:
    """``values`` as an [n, dim] array when every one is a list of ``dim`` finite numbers
    (checked with a few C-level passes), else None."""
    if (
        set(map(type, values)) != {list}
        or set(map(len, values)) != {dim}
        or not set(map(type, chain.from_iterable(values))) <= {int, float}
    ):
        return None
    try:
        x = np.array(values, dtype=np.float64)
    except OverflowError:
        return None
    return x if np.isfinite(x).all() else None


def embedding_columns(
    values: list[Any], e: Embedding, errs: Errors, every: bool
) -> tuple[np.ndarray, np.ndarray]:
    """An embedding's value in each event (None: missing) projected to its components, as
    [n, k], and its reconstruction error, as [n] (NaN where missing or refused, and every
    error when the embedding is not scored), with one matrix product for the batch. A
    refused value is counted; it is an error detail of its event when ``every``, else only
    the first one is (the columnar form's one detail per column)."""
    x = _vectors(values, e.dim)
    if x is not None:
        coords = x @ e.axes - e.offset
        return coords, e.errors(x, coords)
    out = np.full((len(values), e.projection.k), np.nan)
    err = np.full(len(values), np.nan)
    rows, first = [], True
    for i, v in enumerate(values):
        if v is None:
            continue
        if bad := bad_embedding(v, e.dim):
            if every or first:
                errs.refuse(i, e.name, *bad)
                first = False
            else:
                errs.count_refused(e.name, bad[0])
            continue
        rows.append(i)
    if rows:
        x = np.array([values[i] for i in rows], dtype=np.float64).reshape(len(rows), e.dim)
        out[rows] = coords = x @ e.axes - e.offset
        err[rows] = e.errors(x, coords)
    return out, err


def bad_attribution(v: Any) -> str | None:
    if type(v) not in (int, float):
        return f"expected a number, got {type_name(v)}"
    try:
        return None if math.isfinite(float(v)) else "expected a finite number"
    except OverflowError:
        return "number out of range"


def tracked_score(s: Any, schema: ModelSchema) -> float:
    """The positive class's probability for a binary model, the top probability otherwise."""
    if type(s) is not dict:
        return float(s)
    if not s:
        return math.nan
    if schema.positive_class is not None:
        if schema.positive_class in s:
            return float(s[schema.positive_class])
        if len(s) == 1:
            return 1.0 - float(next(iter(s.values())))
    return float(max(s.values()))


def failure_index(error: str) -> int:
    head = error.strip().split(":", 1)[0].split(None, 1)
    key = head[0].lower() if head else ""
    return REASON_INDEX.get(key, REASON_INDEX["other"])
