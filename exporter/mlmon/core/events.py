"""Decoding and validating prediction events into column arrays.

A batch is validated whole: either every event is turned into arrays, or `InvalidBatch`
lists what is wrong with each bad event (index and field), and nothing is applied. With
``partial=True`` the valid events are kept and the invalid ones reported.

The hot path checks the types of all feature values of a batch in one pass
(``set(map(type, ...))``) and converts them with one ``np.array`` call; only a batch that
fails that check walks its values one by one to say exactly where it is wrong.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from mlmon.core.config import FAILURE_REASONS, NAME_RE, label_text
from mlmon.core.schema import ModelSchema

MAX_DETAILS = 100
# The bounded vocabulary of `reason` labels on mlmon_ingest_rejected_requests_total.
REJECT_REASONS = (
    "malformed_json",
    "malformed_body",
    "unsupported_media_type",
    "invalid_event",
    "unknown_model",
    "body_too_large",
    "batch_too_large",
    "internal_error",
    "unauthorized",
    "forbidden",
)
_NUMBER_TYPES = frozenset({int, float, type(None)})
_CATEGORY_TYPES = (str, int, bool)
_REASON_INDEX = {r: i for i, r in enumerate(FAILURE_REASONS)}


class BadRequest(Exception):
    """A request the exporter refuses; ``reason`` is the bounded label it is counted under."""

    def __init__(
        self, status: int, reason: str, message: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message
        self.details = details or []

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "reason": self.reason, "details": self.details}


def gunzip(body: bytes, limit: int) -> bytes:
    """A gzip body decompressed (every member, as `gzip.decompress` reads them), refused
    (413) as soon as it grows past ``limit`` bytes: a small bomb costs at most ``limit``
    bytes of memory and the CPU to produce them. Trailing bytes that are no gzip member are
    an error, not silently dropped."""
    out = bytearray()
    data = body
    try:
        while True:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out += d.decompress(data, limit + 1 - len(out))
            if len(out) > limit:
                break
            if not d.eof:
                raise zlib.error("the gzip stream is truncated")
            data = d.unused_data
            if not data:
                break
    except zlib.error as e:
        raise BadRequest(400, "malformed_body", f"invalid gzip body: {e}") from None
    if len(out) > limit:
        raise BadRequest(
            413, "body_too_large", f"decompressed body exceeds the limit of {limit} bytes"
        )
    return bytes(out)


def decode_json(body: bytes) -> Any:
    """orjson first; the standard parser as fallback, because it accepts the NaN and
    Infinity tokens that Python's and JavaScript's encoders write (counted as missing)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        msg = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
        where = (
            f" at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
        )
        raise BadRequest(400, "malformed_json", f"malformed JSON{where}: {msg}") from None
    except ValueError as e:  # well-formed, but not decodable: an integer of 4,300+ digits
        raise BadRequest(400, "malformed_body", f"undecodable JSON: {e}") from None


def decode_events(
    body: bytes, content_type: str, list_key: str = "events", max_items: int | None = None
) -> list[Any]:
    """The request body as a list of events: one object, ``{"events": [...]}``, or NDJSON.
    An NDJSON body of more than ``max_items`` lines is refused before any line is decoded,
    so its cost stays that of counting them."""
    ctype = (content_type or "application/json").split(";")[0].strip().lower()
    if ctype in ("application/x-ndjson", "application/jsonl", "application/json-lines"):
        lines = body.split(b"\n")
        if max_items is not None and len(lines) > max_items:
            n = sum(1 for line in lines if line.strip())
            if n > max_items:
                raise BadRequest(
                    413, "batch_too_large", f"{n} lines exceed the limit of {max_items} events"
                )
        out = []
        for lineno, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    out.append(decode_json(line))
                except BadRequest as e:
                    raise BadRequest(400, "malformed_json", f"line {lineno}: {e.message}") from None
        return out
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise BadRequest(
            415,
            "unsupported_media_type",
            f"unsupported Content-Type {ctype!r}: send application/json or application/x-ndjson",
        )
    doc = decode_json(body)
    if isinstance(doc, dict) and list_key in doc:
        items = doc[list_key]
        if not isinstance(items, list):
            raise BadRequest(
                400,
                "invalid_event",
                f"'{list_key}' must be a list",
                [{"field": list_key, "message": "expected a list"}],
            )
        return items
    return [doc]


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


def _type_name(v: Any) -> str:
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


class _Errors:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.bad: set[int] = set()

    def add(self, index: int, field: str, message: str) -> None:
        self.bad.add(index)
        if len(self.items) < MAX_DETAILS:
            self.items.append({"index": index, "field": field, "message": message})


def _finite_number(v: Any) -> bool:
    t = type(v)
    if t is float:
        return math.isfinite(v)
    return t is int and v.bit_length() < 1024  # larger integers are no float


# Checks of one value of an event field, shared by the row and the columnar forms so both
# accept and refuse exactly the same values: each returns what is wrong, or None.


def _bad_error(v: Any, max_str: int) -> str | None:
    if type(v) is not str or len(v) > max_str:
        return f"expected null or a string of at most {max_str} characters"
    return None


def _bad_class(v: Any, max_str: int) -> bool:
    """A class, category or group: a string of at most max_str characters, a 64-bit integer
    or a boolean (label values stay short)."""
    t = type(v)
    if t is str:
        return len(v) > max_str
    if t is int:
        return v.bit_length() > 64
    return t is not bool


def _bad_prediction(v: Any, classification: bool, max_str: int) -> str | None:
    if classification:
        if _bad_class(v, max_str):
            return f"expected a class (string or integer), got {_type_name(v)}"
        return None
    if type(v) not in (int, float):
        return f"expected a number, got {_type_name(v)}"
    if type(v) is int and v.bit_length() >= 1024:
        return "number out of range"
    return None


def _bad_version(v: Any) -> str | None:
    if type(v) is not str or not NAME_RE.match(v):
        return "expected 1-64 characters of letters, digits, _ . : -"
    return None


def _bad_id(v: Any, max_str: int) -> str | None:
    t = type(v)
    if (t is str and len(v) <= max_str) or (t is int and v.bit_length() <= 64):
        return None
    return f"expected a string of at most {max_str} characters or a 64-bit integer"


def _bad_timestamp(v: Any) -> str | None:
    return None if _finite_number(v) else "expected seconds since the epoch as a number"


def _bad_latency(v: Any) -> str | None:
    return None if _finite_number(v) and v >= 0 else "expected a non-negative number"


def _bad_score(v: Any) -> str | None:
    if type(v) not in (int, float) or not 0.0 <= v <= 1.0:
        return "probabilities must be numbers in [0, 1]"
    return None


def parse_events(
    events: list[Any], schema: ModelSchema, limits: dict[str, int], partial: bool = False
) -> tuple[Batch, list[dict[str, Any]]]:
    """Validate ``events`` against ``schema``. Returns the batch of valid events and the error
    details; raises BadRequest(400) when any event is invalid and ``partial`` is false."""
    if len(events) > limits["max_batch_events"]:
        raise BadRequest(
            413,
            "batch_too_large",
            f"batch of {len(events)} events exceeds the limit of {limits['max_batch_events']}",
        )
    errs = _Errors()
    max_str = limits["max_string_length"]
    classification = schema.prediction_classes is not None
    feats = [
        _check_event(errs, i, ev, classification, max_str, limits["max_features_per_event"])
        for i, ev in enumerate(events)
    ]

    num_names = schema.numeric.names
    rows = _feature_rows(feats, num_names)
    x = _numeric_matrix(rows, num_names, errs)
    cat_idx = _categorical_matrix(feats, schema, errs, max_str)

    if errs.bad and not partial:
        raise BadRequest(
            400,
            "invalid_event",
            f"{len(errs.bad)} of {len(events)} event(s) invalid; nothing was applied",
            errs.items,
        )
    keep = [i for i in range(len(events)) if i not in errs.bad]
    if errs.bad:
        x = x[keep]
        cat_idx = cat_idx[keep]
    good = [events[i] for i in keep]
    batch = Batch(
        n=len(good),
        x_num=x,
        cat_idx=cat_idx,
        ids=[ev.get("id") for ev in good],
        timestamps=[ev.get("timestamp") for ev in good],
        groups=[ev.get("groups") for ev in good],
        **_outcomes(good, schema),
    )
    return batch, errs.items


def _outcomes(good: list[dict[str, Any]], schema: ModelSchema) -> dict[str, Any]:
    """Per event of a valid batch: its version, success, prediction (a value or a class
    index), tracked score, latency and failure reason, as the Batch's arrays."""
    classification = schema.prediction_classes is not None
    class_vocab = schema.prediction_classes.vocab[0] if classification else {}
    n = len(good)
    ok = np.fromiter((ev.get("error") is None for ev in good), dtype=bool, count=n)
    pred_value = np.full(n, np.nan)
    pred_idx = np.full(n, -1, dtype=np.int64)
    score = np.full(n, np.nan)
    latency = np.full(n, np.nan)
    failure = np.full(n, -1, dtype=np.int64)
    other_class = len(class_vocab)
    default_version = schema.config.default_version
    versions = []
    for j, ev in enumerate(good):
        versions.append(ev.get("version") or default_version)
        p = ev.get("prediction")
        if p is not None:
            if classification:
                pred_idx[j] = class_vocab.get(label_text(p), other_class)
            elif math.isfinite(p):
                pred_value[j] = p
        s = ev.get("scores")
        if s is not None and classification:
            score[j] = _tracked_score(s, schema)
        lat = ev.get("latency_seconds")
        if lat is not None:
            latency[j] = lat
        e = ev.get("error")
        if e is not None:
            failure[j] = _reason(e)
    return {
        "versions": versions,
        "ok": ok,
        "pred_value": pred_value,
        "pred_idx": pred_idx,
        "score": score,
        "latency": latency,
        "failure": failure,
    }


def _check_event(
    errs: _Errors, i: int, ev: Any, classification: bool, max_str: int, max_feats: int
) -> dict[str, Any]:
    """Check one row event's fields (errors go to ``errs``); its feature values to profile."""
    if type(ev) is not dict:
        errs.add(i, "", f"an event must be a JSON object, got {_type_name(ev)}")
        return {}
    error = ev.get("error")
    if error is not None and (msg := _bad_error(error, max_str)):
        errs.add(i, "error", msg)
    f = ev.get("features")
    if f is None and error is None:
        errs.add(i, "features", "required: an object of feature values")
    elif f is not None and type(f) is not dict:
        errs.add(i, "features", f"expected an object, got {_type_name(f)}")
        f = None
    elif f is not None and len(f) > max_feats:
        errs.add(i, "features", f"{len(f)} features exceed the limit of {max_feats}")
    p = ev.get("prediction")
    if p is None:
        if error is None:
            errs.add(i, "prediction", "required unless 'error' is set")
    elif msg := _bad_prediction(p, classification, max_str):
        errs.add(i, "prediction", msg)
    v = ev.get("version")
    if v is not None and (msg := _bad_version(v)):
        errs.add(i, "version", msg)
    v = ev.get("id")
    if v is not None and (msg := _bad_id(v, max_str)):
        errs.add(i, "id", msg)
    v = ev.get("timestamp")
    if v is not None and (msg := _bad_timestamp(v)):
        errs.add(i, "timestamp", msg)
    v = ev.get("latency_seconds")
    if v is not None and (msg := _bad_latency(v)):
        errs.add(i, "latency_seconds", msg)
    v = ev.get("scores")
    if v is not None:
        _check_scores(errs, i, v, classification)
    v = ev.get("groups")
    if v is not None:
        if type(v) is not dict:
            errs.add(i, "groups", f"expected an object, got {_type_name(v)}")
        else:
            for k, g in v.items():
                if _bad_class(g, max_str):
                    errs.add(i, f"groups.{k}", "expected a string")
    return f if type(f) is dict and error is None else {}


def _feature_rows(feats: list[dict[str, Any]], names: tuple[str, ...]) -> list[Any]:
    """Each event's values of ``names``: one C-level itemgetter call per event when every
    event has every feature (the common case), dict.get per value otherwise."""
    if not names:
        return [() for _ in feats]
    getter = itemgetter(*names)
    try:
        if len(names) == 1:
            return [(getter(f),) for f in feats]
        return [getter(f) for f in feats]
    except KeyError:
        return [[f.get(n) for n in names] for f in feats]


def _numeric_matrix(rows: list[list[Any]], names: tuple[str, ...], errs: _Errors) -> np.ndarray:
    n, f = len(rows), len(names)
    if f == 0:
        return np.empty((n, 0))
    if set(map(type, chain.from_iterable(rows))) <= _NUMBER_TYPES:
        try:
            x = np.array(rows, dtype=np.float64).reshape(n, f)
        except OverflowError:
            x = None
        if x is not None:
            x[~np.isfinite(x)] = np.nan  # NaN and +-inf count as missing
            return x
    x = np.full((n, f), np.nan)
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            if v is None:
                continue
            if type(v) not in (int, float):
                errs.add(i, f"features.{names[j]}", f"expected a number, got {_type_name(v)}")
                continue
            try:
                fv = float(v)
            except OverflowError:
                errs.add(i, f"features.{names[j]}", "number out of range")
                continue
            if math.isfinite(fv):
                x[i, j] = fv
    return x


def _categorical_matrix(
    feats: list[dict[str, Any]], schema: ModelSchema, errs: _Errors, max_str: int
) -> np.ndarray:
    block = schema.categorical
    if len(block) and feats:
        rows = _feature_rows(feats, block.names)
        flat = list(chain.from_iterable(rows))
        if set(map(type, flat)) == {str} and max(map(len, flat)) <= max_str:
            # every value present and a string: one dict lookup per value, no checks
            cols = zip(*rows, strict=True)
            return np.array(
                [
                    [vocab.get(v, len(vocab)) for v in col]
                    for col, vocab in zip(cols, block.vocab, strict=True)
                ],
                dtype=np.int64,
            ).T.copy()
    out = np.full((len(feats), len(block)), -1, dtype=np.int64)
    for j, name in enumerate(block.names):
        vocab = block.vocab[j]
        other = block.other_index(j)
        for i, f in enumerate(feats):
            v = f.get(name)
            if v is None:
                continue
            t = type(v)
            if t is str:
                if len(v) > max_str:
                    errs.add(i, f"features.{name}", f"string longer than {max_str} characters")
                    continue
                out[i, j] = vocab.get(v, other)
            elif t is int or t is bool:
                out[i, j] = vocab.get(label_text(v), other)
            elif t is float and not math.isfinite(v):
                continue  # NaN counts as missing, as for numeric features
            else:
                errs.add(i, f"features.{name}", f"expected a string, got {_type_name(v)}")
    return out


def _check_scores(errs: _Errors, i: int, v: Any, classification: bool) -> None:
    if not classification:
        errs.add(i, "scores", "only classification models have class scores")
        return
    values = v.values() if type(v) is dict else [v]
    if type(v) is not dict and type(v) not in (int, float):
        errs.add(i, "scores", "expected an object of class -> probability, or a number")
        return
    for s in values:
        if msg := _bad_score(s):
            errs.add(i, "scores", msg)
            return


def _tracked_score(s: Any, schema: ModelSchema) -> float:
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


def _reason(error: str) -> int:
    head = error.strip().split(":", 1)[0].split(None, 1)
    key = head[0].lower() if head else ""
    return _REASON_INDEX.get(key, _REASON_INDEX["other"])


def _column(
    cols: dict[str, Any], key: str, n: int, errs: _Errors, prefix: str = ""
) -> list[Any] | None:
    v = cols.get(key)
    if v is None:
        return None
    if type(v) is not list or len(v) != n:
        errs.add(0, f"{prefix}{key}", f"expected a list of {n} values")
        return None
    return v


def _number_column(
    values: list[Any], field_name: str, errs: _Errors, allow_missing: bool = True
) -> np.ndarray:
    if set(map(type, values)) <= _NUMBER_TYPES:
        try:
            x = np.array(values, dtype=np.float64)
            x[~np.isfinite(x)] = np.nan
            return x
        except OverflowError:
            pass
    x = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        if v is None:
            continue
        if type(v) not in (int, float):
            errs.add(i, field_name, f"expected a number, got {_type_name(v)}")
            return x
        try:
            x[i] = float(v)
        except OverflowError:
            errs.add(i, field_name, "number out of range")
            return x
    x[~np.isfinite(x)] = np.nan
    return x


def parse_columns(cols: Any, schema: ModelSchema, limits: dict[str, int]) -> Batch:
    """A columnar batch -- one array per feature and field -- straight into arrays, for
    high-volume senders. Every value is held to the same checks as in the row form, so a
    batch is accepted in one form exactly when it is accepted in the other, with the same
    state; it is validated whole, and BadRequest names the bad rows of each bad column."""
    feats, pred = _columns_frame(cols, limits)
    n = len(pred)
    errs = _Errors()
    max_str = limits["max_string_length"]
    failure = _error_column(cols, n, errs, max_str)
    if len(feats) > limits["max_features_per_event"]:
        errs.add(0, "features", f"{len(feats)} features exceed the limit")
    if (failure >= 0).any():  # the features of failed inferences are neither checked nor kept
        failed = np.flatnonzero(failure >= 0).tolist()
        feats = {k: _blanked(v, failed) for k, v in feats.items()}
    x = _numeric_columns(feats, schema, n, errs)
    cat_idx = _categorical_columns(feats, schema, n, errs, max_str)
    pred_value, pred_idx = _prediction_column(pred, schema, failure, errs, max_str)
    batch = Batch(
        n=n,
        versions=_version_column(cols, schema, n, errs),
        ok=failure < 0,
        x_num=x,
        cat_idx=cat_idx,
        pred_value=pred_value,
        pred_idx=pred_idx,
        score=_score_column(cols, schema, n, errs),
        latency=_checked_numbers(cols, "latency_seconds", n, errs, _bad_latency),
        failure=failure,
        ids=_checked_values(cols, "id", n, errs, lambda v: _bad_id(v, max_str)),
        timestamps=_checked_values(cols, "timestamp", n, errs, _bad_timestamp),
        groups=_group_columns(cols, n, errs, max_str),
    )
    if errs.bad:
        raise BadRequest(
            400, "invalid_event", "invalid columnar batch; nothing was applied", errs.items
        )
    return batch


def _columns_frame(cols: Any, limits: dict[str, int]) -> tuple[dict[str, Any], list[Any]]:
    """The feature columns and the prediction column, or a BadRequest for the shape."""
    if type(cols) is not dict:
        raise BadRequest(
            400,
            "invalid_event",
            "'columns' must be an object",
            [{"field": "columns", "message": "expected an object"}],
        )
    feats = cols.get("features")
    if type(feats) is not dict:
        raise BadRequest(
            400,
            "invalid_event",
            "'columns.features' is required",
            [
                {
                    "field": "columns.features",
                    "message": "expected an object of feature name -> list of values",
                }
            ],
        )
    pred = cols.get("prediction")
    if type(pred) is not list:
        raise BadRequest(
            400,
            "invalid_event",
            "'columns.prediction' is required",
            [{"field": "columns.prediction", "message": "expected a list"}],
        )
    if len(pred) > limits["max_batch_events"]:
        raise BadRequest(
            413,
            "batch_too_large",
            f"batch of {len(pred)} events exceeds the limit of {limits['max_batch_events']}",
        )
    return feats, pred


def _blanked(values: Any, rows: list[int]) -> Any:
    if type(values) is not list:
        return values
    values = list(values)
    for i in rows:
        if i < len(values):
            values[i] = None
    return values


def _error_column(cols: dict[str, Any], n: int, errs: _Errors, max_str: int) -> np.ndarray:
    failure = np.full(n, -1, dtype=np.int64)
    col = _column(cols, "error", n, errs)
    for i, e in enumerate(col or ()):
        if e is None:
            continue
        if msg := _bad_error(e, max_str):
            errs.add(i, "error", msg)
        else:
            failure[i] = _reason(e)
    return failure


def _numeric_columns(
    feats: dict[str, Any], schema: ModelSchema, n: int, errs: _Errors
) -> np.ndarray:
    x = np.full((n, len(schema.numeric)), np.nan)
    for j, name in enumerate(schema.numeric.names):
        col = _column(feats, name, n, errs, "features.") if name in feats else None
        if col is not None:
            x[:, j] = _number_column(col, f"features.{name}", errs)
    return x


def _categorical_columns(
    feats: dict[str, Any], schema: ModelSchema, n: int, errs: _Errors, max_str: int
) -> np.ndarray:
    block = schema.categorical
    cat_idx = np.full((n, len(block)), -1, dtype=np.int64)
    for j, name in enumerate(block.names):
        col = _column(feats, name, n, errs, "features.") if name in feats else None
        if col is None:
            continue
        vocab, other = block.vocab[j], block.other_index(j)
        if set(map(type, col)) == {str} and max(map(len, col), default=0) <= max_str:
            cat_idx[:, j] = [vocab.get(v, other) for v in col]  # the common case, no checks
            continue
        for i, v in enumerate(col):
            t = type(v)
            if v is None or (t is float and not math.isfinite(v)):
                continue  # missing, as in the row form
            if t is str and len(v) > max_str:
                errs.add(i, f"features.{name}", f"string longer than {max_str} characters")
            elif t in (str, int, bool):
                cat_idx[i, j] = vocab.get(label_text(v), other)
            else:
                errs.add(i, f"features.{name}", f"expected a string, got {_type_name(v)}")
    return cat_idx


def _prediction_column(
    pred: list[Any], schema: ModelSchema, failure: np.ndarray, errs: _Errors, max_str: int
) -> tuple[np.ndarray, np.ndarray]:
    n = len(pred)
    pred_value = np.full(n, np.nan)
    pred_idx = np.full(n, -1, dtype=np.int64)
    classes = schema.prediction_classes
    kinds = set(map(type, pred))
    if classes is not None:
        vocab = classes.vocab[0]
        other = len(vocab)
        if kinds == {str} and max(map(len, pred), default=0) <= max_str:
            pred_idx[:] = [vocab.get(p, other) for p in pred]
            return pred_value, pred_idx
        if kinds == {int} and all(p.bit_length() <= 64 for p in set(pred)):
            lut = {p: vocab.get(str(p), other) for p in set(pred)}  # a few distinct classes
            pred_idx[:] = [lut[p] for p in pred]
            return pred_value, pred_idx
    elif kinds <= {int, float}:
        try:
            pred_value[:] = pred
            pred_value[~np.isfinite(pred_value)] = np.nan
            return pred_value, pred_idx
        except OverflowError:
            pred_value[:] = np.nan
    for i, p in enumerate(pred):
        if p is None:
            if failure[i] < 0:
                errs.add(i, "prediction", "required unless 'error' is set")
        elif msg := _bad_prediction(p, classes is not None, max_str):
            errs.add(i, "prediction", msg)
        elif classes is not None:
            pred_idx[i] = classes.vocab[0].get(label_text(p), len(classes.vocab[0]))
        elif math.isfinite(p):
            pred_value[i] = p
    return pred_value, pred_idx


def _score_column(cols: dict[str, Any], schema: ModelSchema, n: int, errs: _Errors) -> np.ndarray:
    score = np.full(n, np.nan)
    raw = cols.get("scores")
    if raw is None:
        return score
    if type(raw) is dict:
        if schema.prediction_classes is None:
            errs.add(0, "scores", "only classification models have class scores")
            return score
        arrays = {}
        for k, v in raw.items():
            if type(v) is not list or len(v) != n:
                errs.add(0, "scores", f"expected lists of {n} probabilities per class")
                return score
            arrays[str(k)] = _checked_numbers(raw, k, n, errs, _bad_score, "scores")
        if schema.positive_class in arrays:
            return arrays[schema.positive_class]
        if arrays:
            stacked = np.vstack(list(arrays.values()))
            if (~np.isnan(stacked)).any(axis=0).all():
                return np.nanmax(stacked, axis=0)
            return np.array([np.nan if np.isnan(c).all() else np.nanmax(c) for c in stacked.T])
        return score
    col = _column(cols, "scores", n, errs)
    if col is None or all(v is None for v in col):
        return score
    if schema.prediction_classes is None:
        errs.add(0, "scores", "only classification models have class scores")
        return score
    return _checked_numbers(cols, "scores", n, errs, _bad_score)


def _checked_values(cols: dict[str, Any], key: str, n: int, errs: _Errors, bad: Any) -> list[Any]:
    """A column's values, each non-null one held to ``bad`` (the row form's check)."""
    col = _column(cols, key, n, errs)
    if col is None:
        return [None] * n
    for i, v in enumerate(col):
        if v is not None and (msg := bad(v)):
            errs.add(i, key, msg)
    return col


def _checked_numbers(
    cols: dict[str, Any], key: str, n: int, errs: _Errors, bad: Any, name: str | None = None
) -> np.ndarray:
    """A numeric column as floats (null: NaN), each non-null value held to ``bad``."""
    col = _column(cols, key, n, errs)
    out = np.full(n, np.nan)
    if col is None:
        return out
    if set(map(type, col)) <= {int, float}:
        try:
            out[:] = col
            if np.isfinite(out).all() and not (bad(float(out.min())) or bad(float(out.max()))):
                return out
        except OverflowError:
            out[:] = np.nan
    for i, v in enumerate(col):
        if v is None:
            continue
        if msg := bad(v):
            errs.add(i, name or key, msg)
        else:
            out[i] = v
    return out


def _version_column(cols: dict[str, Any], schema: ModelSchema, n: int, errs: _Errors) -> list[str]:
    version = cols.get("version")
    default = schema.config.default_version
    if version is None:
        return [default] * n
    if type(version) is str:
        if msg := _bad_version(version):
            errs.add(0, "version", msg)
        return [version] * n
    col = _column(cols, "version", n, errs)
    if col is None:
        return [default] * n
    for i, v in enumerate(col):
        if v is not None and (msg := _bad_version(v)):
            errs.add(i, "version", msg)
    return [v or default for v in col]


def _group_columns(
    cols: dict[str, Any], n: int, errs: _Errors, max_str: int
) -> list[dict[str, Any] | None]:
    raw = cols.get("groups")
    if raw is None:
        return [None] * n
    if type(raw) is not dict or any(type(v) is not list or len(v) != n for v in raw.values()):
        errs.add(0, "groups", f"expected an object of attribute -> list of {n} values")
        return [None] * n
    for attr, values in raw.items():
        for i, g in enumerate(values):
            if _bad_class(g, max_str):
                errs.add(i, f"groups.{attr}", "expected a string")
    return [{a: vals[i] for a, vals in raw.items()} for i in range(n)]
