"""Row batches decoded straight into typed values: the fast path of `events.parse_events`.

For each model a msgspec type describes a valid ``{"events": [...]}`` body: every field of
an event with its type and range, the model's features as a struct with one field each
(numeric: a number or null; categorical: a string of at most ``max_string_length``
characters, a 64-bit integer, a boolean or null). msgspec decodes and validates the body in
C, without a dict per event, and the batch's arrays are gathered from the structs with a
few C-level calls per batch.

The fast path only ever *accepts*: a body it cannot take whole (any error, an unknown
field, a value outside its narrower types, attributions or embeddings, a NaN token or a
lone surrogate, both of which msgspec refuses) gives None, and the caller decodes it with
orjson and `parse_events`, which answers every error exactly as it always has. Whatever
it accepts, `parse_events` accepts too and turns into the same Batch
(tests/test_typed_rows.py checks both on generated bodies).
"""

from __future__ import annotations

import math
from itertools import chain, repeat
from operator import attrgetter, itemgetter
from typing import Annotated, Any, NamedTuple

import msgspec
import numpy as np
from msgspec.structs import astuple

from mlmon.core.baseline import OTHER
from mlmon.core.fields import Batch, bad_version, failure_index, tracked_score
from mlmon.core.schema import CategoricalBlock, ModelSchema
from mlmon.core.values import label_text

# Integers are taken within 64 bits (signed), a subset of what the row checks accept for
# every field (ids and classes below 2**64, numbers below 2**1024): a larger one leaves the
# fast path.
_INT = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_NUMBER = _INT | float


class Columns(NamedTuple):
    """A decoded batch's event fields, each as a tuple over the events."""

    features: tuple[Any, ...]
    prediction: tuple[Any, ...]
    scores: tuple[Any, ...]
    version: tuple[Any, ...]
    id: tuple[Any, ...]
    timestamp: tuple[Any, ...]
    latency_seconds: tuple[Any, ...]
    error: tuple[Any, ...]
    groups: tuple[Any, ...]


_FIELDS = attrgetter(*Columns._fields)


class RowDecoder:
    """The fast path for one model's schema and limits; `batch(body)` -> Batch or None."""

    def __init__(self, schema: ModelSchema, limits: dict[str, int]) -> None:
        self.schema, self.limits = schema, limits
        self.usable = not schema.embeddings and len(schema.feature_kinds) <= int(
            limits["max_features_per_event"]
        )
        envelope, features = _types(schema, limits)
        self._decoder = msgspec.json.Decoder(envelope)
        self.no_features = features()  # every value missing: a failed call's

    def batch(self, body: bytes) -> Batch | None:
        """The body as a Batch when every event in it is valid, else None."""
        if not self.usable:
            return None
        try:
            events = self._decoder.decode(body).events
        except (msgspec.MsgspecError, ValueError):  # ValueError: bytes that are no UTF-8
            return None
        if not events:
            return None
        return _to_batch(self, events)


def _types(schema: ModelSchema, limits: dict[str, int]) -> tuple[type, type]:
    """The type of a valid body, and of an event's features (numeric ones first)."""
    max_str = limits["max_string_length"]
    text = Annotated[str, msgspec.Meta(max_length=max_str)]
    label = text | _INT | bool
    feature_fields = [(n, _NUMBER | None, None) for n in schema.inputs_numeric]
    feature_fields += [(n, label | None, None) for n in schema.categorical.names]
    features = msgspec.defstruct("Features", feature_fields, forbid_unknown_fields=True)
    classification = schema.prediction_classes is not None
    unit = Annotated[int, msgspec.Meta(ge=0, le=1)] | Annotated[float, msgspec.Meta(ge=0, le=1)]
    fields: list[tuple[str, Any, Any]] = [
        ("features", features | None, None),
        ("prediction", (label if classification else _NUMBER) | None, None),
        ("version", str | None, None),  # names checked by `_needs_row_checks`
        ("id", text | _INT | None, None),
        ("timestamp", _NUMBER | None, None),
        (
            "latency_seconds",
            Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
            | Annotated[float, msgspec.Meta(ge=0)]
            | None,
            None,
        ),
        ("error", text | None, None),
        ("groups", dict[str, label] | None, None),
    ]
    if classification:
        fields.append(("scores", dict[str, unit] | unit | None, None))
    else:
        fields.append(("scores", None, None))  # only null: scores are refused for regression
    event = msgspec.defstruct("Event", fields, forbid_unknown_fields=True)
    envelope = msgspec.defstruct(
        "Envelope",
        [("events", Annotated[list[event], msgspec.Meta(max_length=limits["max_batch_events"])])],
        forbid_unknown_fields=True,
    )
    return envelope, features


def _to_batch(dec: RowDecoder, events: list[Any]) -> Batch | None:
    """The decoded events as a Batch, or None when the row checks must decide."""
    schema = dec.schema
    n = len(events)
    cols = Columns(*zip(*map(_FIELDS, events), strict=True))
    failed = n - cols.error.count(None)
    if _needs_row_checks(cols):
        return None
    outcomes = _outcomes(schema, cols, failed)
    if outcomes is None:
        return None
    feats = cols.features
    if failed:  # a failed call's inputs are not profiled
        none = dec.no_features
        feats = tuple(f if e is None else none for f, e in zip(feats, cols.error, strict=True))
    rows = list(map(astuple, feats))
    f = len(schema.inputs_numeric)
    return Batch(
        n=n,
        x_num=_numeric(rows, f),
        cat_idx=_categorical(schema.categorical, rows, f),
        ids=list(cols.id),
        timestamps=list(cols.timestamp),
        groups=list(cols.groups),
        attr=np.empty((n, 0)),
        emb_err=np.empty((n, 0)),
        unknown_features={},
        **outcomes,
    )


def _needs_row_checks(cols: Columns) -> bool:
    """True when a value of the batch is one the fast types cannot decide alone: features
    or a prediction missing without an error, a version that is no valid name, a group
    named as the reserved overflow slot.
    Text and numbers need no check of their own: msgspec refuses lone surrogates (the only
    strings the row checks refuse as no valid Unicode) and numbers beyond a float's range
    (the only non-finite numbers JSON can spell)."""
    if None in cols.features or None in cols.prediction:
        for f, p, e in zip(cols.features, cols.prediction, cols.error, strict=True):
            if (f is None or p is None) and e is None:
                return True
    if any(v is not None and bad_version(v) for v in set(cols.version)):
        return True  # checked here, not by a msgspec pattern (see `typedcolumns`)
    return any(g and OTHER in g.values() for g in cols.groups)


def _outcomes(schema: ModelSchema, cols: Columns, failed: int) -> dict[str, Any] | None:
    """The Batch's per-event outcome arrays, as `events._outcomes` builds them."""
    n = len(cols.error)
    ok = np.fromiter((e is None for e in cols.error), dtype=bool, count=n)
    pred_value = np.full(n, np.nan)
    pred_idx = np.full(n, -1, dtype=np.int64)
    score = np.full(n, np.nan)
    if schema.prediction_classes is not None:
        vocab = schema.prediction_classes.vocab[0]
        pred_idx[:] = label_indices(cols.prediction, vocab, len(vocab))
        score[:] = _scores(schema, cols.scores)
    else:
        values = np.array([math.nan if p is None else p for p in cols.prediction], dtype=np.float64)
        if np.isinf(values).any():
            return None
        pred_value[:] = values
    latency = np.array(
        [math.nan if v is None else v for v in cols.latency_seconds], dtype=np.float64
    )
    failure = np.full(n, -1, dtype=np.int64)
    if failed:
        for j, e in enumerate(cols.error):
            if e is not None:
                failure[j] = failure_index(e)
    default_version = schema.config.default_version
    return {
        "versions": [v or default_version for v in cols.version],
        "ok": ok,
        "pred_value": pred_value,
        "pred_idx": pred_idx,
        "score": score,
        "latency": latency,
        "failure": failure,
    }


def label_indices(values: tuple[Any, ...], vocab: dict[str, int], other: int) -> list[int]:
    """Each class or category's index in ``vocab`` (``other`` when not in it, -1 when
    null), in one C-level pass when the values are all strings or all integers (whose
    decimal text is their label text)."""
    kinds = set(map(type, values))
    if kinds == {str}:
        return list(map(vocab.get, values, repeat(other)))
    if kinds == {int}:
        return list(map(vocab.get, map(str, values), repeat(other)))
    return [
        -1 if v is None else vocab.get(v if type(v) is str else label_text(v), other)
        for v in values
    ]


def _scores(schema: ModelSchema, scores: tuple[Any, ...]) -> list[float]:
    """Each event's tracked score (`fields.tracked_score`); a binary model's scores that
    all name the positive class are read in one C-level pass."""
    pos = schema.positive_class
    if pos is not None and set(map(type, scores)) == {dict}:
        try:
            return list(map(itemgetter(pos), scores))
        except KeyError:
            pass
    return [math.nan if s is None else tracked_score(s, schema) for s in scores]


def _numeric(rows: list[tuple[Any, ...]], f: int) -> np.ndarray:
    """The [n, F] numeric matrix (NaN: missing) from each event's feature values (numeric
    first). msgspec gives only finite floats and 64-bit integers, so every value fits."""
    n = len(rows)
    if not f:
        return np.empty((n, 0))
    values = list(map(itemgetter(slice(None, f)), rows))
    try:  # one pass in C when no value is missing
        return np.fromiter(chain.from_iterable(values), np.float64, count=n * f).reshape(n, f)
    except TypeError:  # a null: numpy turns it into NaN
        return np.array(values, dtype=np.float64).reshape(n, f)


def _categorical(block: CategoricalBlock, rows: list[tuple[Any, ...]], f: int) -> np.ndarray:
    """The [n, G] category indices (-1: missing) from each event's feature values, whose
    categorical ones follow the ``f`` numeric ones."""
    n = len(rows)
    if not len(block):
        return np.full((n, 0), -1, dtype=np.int64)
    out = np.empty((len(block), n), dtype=np.int64)
    cols = zip(*map(itemgetter(slice(f, None)), rows), strict=True)
    for j, (col, vocab) in enumerate(zip(cols, block.vocab, strict=True)):
        out[j] = label_indices(col, vocab, len(vocab))
    return out.T.copy()
