"""Columnar batches decoded straight into typed values: the fast path of
`columns.parse_columns`.

For each model a msgspec type describes a valid ``{"columns": {...}}`` body: the model's
features as a struct with one column each (numeric: numbers or nulls; categorical:
strings of at most ``max_string_length`` characters, 64-bit integers, booleans or nulls),
and every other column with its type and range in each of the shapes the columnar checks
accept. msgspec decodes and validates the body in C; what it cannot say -- that every
column has as many values as the predictions, that a missing prediction belongs to a
failed call, that no group is named as the overflow slot, that a single version is a
valid name -- is checked with a few C-level calls per column, and the arrays are gathered
with one or two more.

Like `typedrows`, the fast path only ever *accepts*: a body it cannot take whole (any
error, an unknown field or feature, attributions, embeddings, a column of another length,
a value outside its narrower types, a NaN token or a lone surrogate) gives None, and the
caller decodes it with orjson and `parse_columns`, which answers every error exactly as
it always has. Whatever it accepts, `parse_columns` accepts too and turns into the same
Batch (tests/test_typed_columns.py checks both on generated bodies).
"""

from __future__ import annotations

from itertools import repeat
from typing import Annotated, Any

import msgspec
import numpy as np
from msgspec.structs import astuple

from mlmon.core.baseline import OTHER
from mlmon.core.fields import Batch, bad_version, failure_index
from mlmon.core.schema import ModelSchema
from mlmon.core.values import label_text

# Integers within 64 bits (signed), as in `typedrows`: a subset of what the columnar checks
# accept for every field; a larger one leaves the fast path.
_INT = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_NUMBER = _INT | float
_UNIT = Annotated[int, msgspec.Meta(ge=0, le=1)] | Annotated[float, msgspec.Meta(ge=0, le=1)]
_LATENCY = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] | Annotated[float, msgspec.Meta(ge=0)]


class ColumnDecoder:
    """The fast path for one model's schema and limits; `batch(body)` -> Batch or None."""

    def __init__(self, schema: ModelSchema, limits: dict[str, int]) -> None:
        self.schema, self.limits = schema, limits
        self.usable = not schema.embeddings and len(schema.feature_kinds) <= int(
            limits["max_features_per_event"]
        )
        self._decoder = msgspec.json.Decoder(_envelope(schema, limits))

    def batch(self, body: bytes) -> Batch | None:
        """The body as a Batch when every value in it is valid, else None."""
        if not self.usable:
            return None
        try:
            cols = self._decoder.decode(body).columns
        except (msgspec.MsgspecError, ValueError):  # ValueError: bytes that are no UTF-8
            return None
        return _to_batch(self.schema, cols)


def _envelope(schema: ModelSchema, limits: dict[str, int]) -> type:
    """The type of a valid body: ``{"columns": {...}}`` and nothing else."""
    text = Annotated[str, msgspec.Meta(max_length=limits["max_string_length"])]
    label = text | _INT | bool
    features = msgspec.defstruct(
        "FeatureColumns",
        [(n, list[_NUMBER | None] | None, None) for n in schema.inputs_numeric]
        + [(n, list[label | None] | None, None) for n in schema.categorical.names],
        forbid_unknown_fields=True,
    )
    classification = schema.prediction_classes is not None
    if classification:
        scores: Any = dict[str, list[_UNIT | None]] | list[_UNIT | None] | None
    else:
        scores = list[None] | None  # only nulls: scores are refused for regression
    prediction = Annotated[
        list[(label if classification else _NUMBER) | None],
        msgspec.Meta(max_length=limits["max_batch_events"]),
    ]
    columns = msgspec.defstruct(
        "Columns",
        [
            ("features", features),
            ("prediction", prediction),
            ("scores", scores, None),
            # versions are checked by `_needs_checks`, not by a msgspec pattern: msgspec
            # 0.22 crashed freeing a union of a pattern-constrained str and a list
            ("version", str | list[str | None] | None, None),
            ("id", list[text | _INT | None] | None, None),
            ("timestamp", list[_NUMBER | None] | None, None),
            ("latency_seconds", list[_LATENCY | None] | None, None),
            ("error", list[text | None] | None, None),
            ("groups", dict[str, list[label]] | None, None),
            ("attributions", None, None),  # only null: attributions take the full checks
        ],
        forbid_unknown_fields=True,
    )
    return msgspec.defstruct("Envelope", [("columns", columns)], forbid_unknown_fields=True)


def _to_batch(schema: ModelSchema, cols: Any) -> Batch | None:
    """The decoded columns as a Batch, or None when the columnar checks must decide."""
    n = len(cols.prediction)
    feats = astuple(cols.features)  # numeric columns first
    if not n or not _lengths_match(cols, feats, n) or _needs_checks(cols):
        return None
    failure = np.full(n, -1, dtype=np.int64)
    failed: list[int] = []
    if cols.error is not None and cols.error.count(None) < n:
        failed = [i for i, e in enumerate(cols.error) if e is not None]
        failure[failed] = [failure_index(cols.error[i]) for i in failed]
    if None in cols.prediction and any(
        p is None and e < 0 for p, e in zip(cols.prediction, failure.tolist(), strict=True)
    ):
        return None  # a prediction is required unless the call failed
    f = len(schema.inputs_numeric)
    x_num, cat_idx = _numeric(feats[:f], n), _categorical(schema, feats[f:], n)
    if failed:  # the features of failed calls are neither checked nor kept
        x_num[failed] = np.nan
        cat_idx[failed] = -1
    pred_value, pred_idx = _prediction(schema, cols.prediction)
    return Batch(
        n=n,
        versions=_versions(schema, cols.version, n),
        ok=failure < 0,
        x_num=x_num,
        cat_idx=cat_idx,
        pred_value=pred_value,
        pred_idx=pred_idx,
        score=_score(schema, cols.scores, n),
        latency=_floats(cols.latency_seconds, n),
        failure=failure,
        ids=[None] * n if cols.id is None else cols.id,
        timestamps=[None] * n if cols.timestamp is None else cols.timestamp,
        groups=_groups(cols.groups, n),
        attr=np.empty((n, 0)),
        emb_err=np.empty((n, 0)),
    )


def _lengths_match(cols: Any, feats: tuple[Any, ...], n: int) -> bool:
    """Every column given has ``n`` values (a scalar version stands for all of them)."""
    lists = [*feats, cols.id, cols.timestamp, cols.latency_seconds, cols.error]
    if type(cols.version) is list:
        lists.append(cols.version)
    if type(cols.scores) is list:
        lists.append(cols.scores)
    elif cols.scores is not None:
        lists += cols.scores.values()
    if cols.groups is not None:
        lists += cols.groups.values()
    return {len(c) for c in lists if c is not None} <= {n}


def _needs_checks(cols: Any) -> bool:
    """True for what the types cannot refuse alone: a group named as the reserved
    overflow slot, a version that is no valid name."""
    if type(cols.version) is str:
        if bad_version(cols.version):
            return True
    elif cols.version is not None and any(
        v is not None and bad_version(v) for v in set(cols.version)
    ):
        return True
    return cols.groups is not None and any(OTHER in g for g in cols.groups.values())


def _numeric(columns: tuple[Any, ...], n: int) -> np.ndarray:
    """The [n, F] numeric matrix (NaN: missing); msgspec gives only finite floats and
    64-bit integers, so every value fits."""
    x = np.empty((len(columns), n))
    for j, col in enumerate(columns):
        x[j] = _floats(col, n)
    return x.T.copy()


def _floats(col: list[Any] | None, n: int) -> np.ndarray:
    """A column of numbers and nulls as floats (NaN: null or not given)."""
    if col is None:
        return np.full(n, np.nan)
    try:
        return np.fromiter(col, np.float64, count=n)
    except TypeError:
        return np.array(col, dtype=np.float64)


def _labels(col: list[Any], vocab: dict[str, int]) -> list[int]:
    """Each value's index in ``vocab`` (unknown: len(vocab), null: -1); integers and
    booleans are looked up as text, as JSON spells them."""
    other = len(vocab)
    kinds = set(map(type, col))
    if kinds == {str}:
        return list(map(vocab.get, col, repeat(other)))
    if bool not in kinds:  # each distinct value looked up once (but True == 1)
        lut = {v: -1 if v is None else vocab.get(label_text(v), other) for v in set(col)}
        return list(map(lut.__getitem__, col))
    return [
        -1 if v is None else vocab.get(v if type(v) is str else label_text(v), other) for v in col
    ]


def _categorical(schema: ModelSchema, columns: tuple[Any, ...], n: int) -> np.ndarray:
    """The [n, G] category indices (-1: missing)."""
    out = np.full((len(columns), n), -1, dtype=np.int64)
    for j, (col, vocab) in enumerate(zip(columns, schema.categorical.vocab, strict=True)):
        if col is not None:
            out[j] = _labels(col, vocab)
    return out.T.copy()


def _prediction(schema: ModelSchema, pred: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """The predicted value (regression) and class index (classification)."""
    n = len(pred)
    if schema.prediction_classes is None:
        return _floats(pred, n), np.full(n, -1, dtype=np.int64)
    idx = np.array(_labels(pred, schema.prediction_classes.vocab[0]), dtype=np.int64)
    return np.full(n, np.nan), idx


def _score(schema: ModelSchema, scores: Any, n: int) -> np.ndarray:
    """The tracked score: the positive class's column when given, else the largest score
    of each event over the classes given (NaN where none is)."""
    if type(scores) is not dict:
        return _floats(scores, n)  # a list of scores (or nulls only), or none
    if schema.positive_class in scores:
        return _floats(scores[schema.positive_class], n)
    if not scores:
        return np.full(n, np.nan)
    return np.fmax.reduce(np.vstack([_floats(c, n) for c in scores.values()]), axis=0)


def _versions(schema: ModelSchema, version: Any, n: int) -> list[str]:
    default = schema.config.default_version
    if version is None or type(version) is str:
        return [version or default] * n
    return [v or default for v in version]


def _groups(groups: dict[str, list[Any]] | None, n: int) -> list[dict[str, Any] | None]:
    if groups is None:
        return [None] * n
    if not groups:
        return [{} for _ in range(n)]
    names = list(groups)
    return [dict(zip(names, values, strict=True)) for values in zip(*groups.values(), strict=True)]
