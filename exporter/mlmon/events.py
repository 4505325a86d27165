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

from .config import FAILURE_REASONS, NAME_RE, label_text
from .schema import ModelSchema

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
    """A gzip body decompressed, refused (413) as soon as it grows past ``limit`` bytes: a
    small bomb costs at most ``limit`` bytes of memory and the CPU to produce them."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(body, limit + 1)
        if not d.eof and len(out) <= limit:
            raise zlib.error("the gzip stream is truncated")
    except zlib.error as e:
        raise BadRequest(400, "malformed_body", f"invalid gzip body: {e}") from None
    if len(out) > limit:
        raise BadRequest(
            413, "body_too_large", f"decompressed body exceeds the limit of {limit} bytes"
        )
    return out


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


def decode_events(body: bytes, content_type: str, list_key: str = "events") -> list[Any]:
    """The request body as a list of events: one object, ``{"events": [...]}``, or NDJSON."""
    ctype = (content_type or "application/json").split(";")[0].strip().lower()
    if ctype in ("application/x-ndjson", "application/jsonl", "application/json-lines"):
        out = []
        for lineno, line in enumerate(body.split(b"\n"), start=1):
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
    return type(v) in (int, float) and math.isfinite(v)


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
    max_feats = limits["max_features_per_event"]
    classification = schema.prediction_classes is not None
    class_vocab = schema.prediction_classes.vocab[0] if classification else {}
    feats: list[dict[str, Any]] = []
    for i, ev in enumerate(events):
        if type(ev) is not dict:
            errs.add(i, "", f"an event must be a JSON object, got {_type_name(ev)}")
            feats.append({})
            continue
        error = ev.get("error")
        if error is not None and (type(error) is not str or len(error) > max_str):
            errs.add(i, "error", f"expected null or a string of at most {max_str} characters")
        f = ev.get("features")
        if f is None and error is None:
            errs.add(i, "features", "required: an object of feature values")
        elif f is not None and type(f) is not dict:
            errs.add(i, "features", f"expected an object, got {_type_name(f)}")
            f = None
        elif f is not None and len(f) > max_feats:
            errs.add(i, "features", f"{len(f)} features exceed the limit of {max_feats}")
        feats.append(f if type(f) is dict and error is None else {})
        if "prediction" not in ev or ev["prediction"] is None:
            if error is None:
                errs.add(i, "prediction", "required unless 'error' is set")
        else:
            p = ev["prediction"]
            if classification:
                if not isinstance(p, _CATEGORY_TYPES) or (type(p) is str and len(p) > max_str):
                    errs.add(
                        i,
                        "prediction",
                        f"expected a class (string or integer), got {_type_name(p)}",
                    )
            elif type(p) not in (int, float):
                errs.add(i, "prediction", f"expected a number, got {_type_name(p)}")
        v = ev.get("version")
        if v is not None and (type(v) is not str or not NAME_RE.match(v)):
            errs.add(i, "version", "expected 1-64 characters of letters, digits, _ . : -")
        v = ev.get("id")
        if v is not None and (type(v) not in (str, int) or (type(v) is str and len(v) > max_str)):
            errs.add(i, "id", f"expected a string of at most {max_str} characters or an integer")
        v = ev.get("timestamp")
        if v is not None and not _finite_number(v):
            errs.add(i, "timestamp", "expected seconds since the epoch as a number")
        v = ev.get("latency_seconds")
        if v is not None and not (_finite_number(v) and v >= 0):
            errs.add(i, "latency_seconds", "expected a non-negative number")
        v = ev.get("scores")
        if v is not None:
            _check_scores(errs, i, v, classification)
        v = ev.get("groups")
        if v is not None:
            if type(v) is not dict:
                errs.add(i, "groups", f"expected an object, got {_type_name(v)}")
            else:
                for k, g in v.items():
                    if not isinstance(g, _CATEGORY_TYPES) or (type(g) is str and len(g) > max_str):
                        errs.add(i, f"groups.{k}", "expected a string")

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
    n = len(good)
    ok = np.fromiter((ev.get("error") is None for ev in good), dtype=bool, count=n)
    pred_value = np.full(n, np.nan)
    pred_idx = np.full(n, -1, dtype=np.int64)
    score = np.full(n, np.nan)
    latency = np.full(n, np.nan)
    failure = np.full(n, -1, dtype=np.int64)
    other_class = len(class_vocab)
    versions = []
    default_version = schema.config.default_version
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
    batch = Batch(
        n=n,
        versions=versions,
        ok=ok,
        x_num=x,
        cat_idx=cat_idx,
        pred_value=pred_value,
        pred_idx=pred_idx,
        score=score,
        latency=latency,
        failure=failure,
        ids=[ev.get("id") for ev in good],
        timestamps=[ev.get("timestamp") for ev in good],
        groups=[ev.get("groups") for ev in good],
    )
    return batch, errs.items


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
        if type(s) not in (int, float) or not 0.0 <= s <= 1.0:
            errs.add(i, "scores", "probabilities must be numbers in [0, 1]")
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
    high-volume senders. Validated whole; raises BadRequest naming the first bad row of each
    bad column."""
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
    n = len(pred)
    if n > limits["max_batch_events"]:
        raise BadRequest(
            413,
            "batch_too_large",
            f"batch of {n} events exceeds the limit of {limits['max_batch_events']}",
        )
    errs = _Errors()
    max_str = limits["max_string_length"]
    x = np.full((n, len(schema.numeric)), np.nan)
    for j, name in enumerate(schema.numeric.names):
        col = _column(feats, name, n, errs, "features.") if name in feats else None
        if col is not None:
            x[:, j] = _number_column(col, f"features.{name}", errs)
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
            if v is None or (type(v) is float and not math.isfinite(v)):
                continue
            if not isinstance(v, _CATEGORY_TYPES) or (type(v) is str and len(v) > max_str):
                errs.add(i, f"features.{name}", f"expected a string, got {_type_name(v)}")
                break
            cat_idx[i, j] = vocab.get(label_text(v), other)
    pred_value = np.full(n, np.nan)
    pred_idx = np.full(n, -1, dtype=np.int64)
    if schema.prediction_classes is not None:
        vocab = schema.prediction_classes.vocab[0]
        other = len(vocab)
        kinds = set(map(type, pred))
        checked = pred
        if kinds == {str} and max(map(len, pred), default=0) <= max_str:
            pred_idx[:] = [vocab.get(p, other) for p in pred]
            checked = []
        elif kinds == {int}:
            lut = {p: vocab.get(str(p), other) for p in set(pred)}  # a few distinct classes
            pred_idx[:] = [lut[p] for p in pred]
            checked = []
        for i, p in enumerate(checked):
            if not isinstance(p, _CATEGORY_TYPES) or (type(p) is str and len(p) > max_str):
                errs.add(i, "prediction", f"expected a class, got {_type_name(p)}")
                break
            pred_idx[i] = vocab.get(label_text(p), other)
    else:
        pred_value = _number_column(pred, "prediction", errs)
    score = np.full(n, np.nan)
    raw_scores = cols.get("scores")
    if raw_scores is not None:
        if schema.prediction_classes is None:
            errs.add(0, "scores", "only classification models have class scores")
        elif type(raw_scores) is dict:
            arrays = {
                str(k): _number_column(v, f"scores.{k}", errs)
                for k, v in raw_scores.items()
                if type(v) is list and len(v) == n
            }
            if len(arrays) != len(raw_scores):
                errs.add(0, "scores", f"expected lists of {n} probabilities per class")
            elif schema.positive_class in arrays:
                score = arrays[schema.positive_class]
            elif arrays:
                score = np.nanmax(np.vstack(list(arrays.values())), axis=0)
        else:
            col = _column(cols, "scores", n, errs)
            if col is not None:
                score = _number_column(col, "scores", errs)
        bad = ~np.isnan(score) & ((score < 0) | (score > 1))
        if bad.any():
            errs.add(int(np.argmax(bad)), "scores", "probabilities must be numbers in [0, 1]")
    latency = np.full(n, np.nan)
    col = _column(cols, "latency_seconds", n, errs)
    if col is not None:
        latency = _number_column(col, "latency_seconds", errs)
        if (latency < 0).any():
            errs.add(
                int(np.argmax(latency < 0)), "latency_seconds", "expected a non-negative number"
            )
    failure = np.full(n, -1, dtype=np.int64)
    col = _column(cols, "error", n, errs)
    if col is not None:
        for i, e in enumerate(col):
            if e is None:
                continue
            if type(e) is not str or len(e) > max_str:
                errs.add(i, "error", "expected null or a short string")
                break
            failure[i] = _reason(e)
    version = cols.get("version")
    if version is None:
        versions = [schema.config.default_version] * n
    elif type(version) is str and NAME_RE.match(version):
        versions = [version] * n
    elif (
        type(version) is list
        and len(version) == n
        and all(type(v) is str and NAME_RE.match(v) for v in version)
    ):
        versions = version
    else:
        errs.add(0, "version", "expected a version name or a list of them")
        versions = []
    ids = _column(cols, "id", n, errs) or [None] * n
    if any(type(i) not in (str, int, type(None)) for i in ids):
        errs.add(0, "id", "expected strings or integers")
    groups: list[dict[str, str] | None] = [None] * n
    raw_groups = cols.get("groups")
    if raw_groups is not None:
        if type(raw_groups) is not dict or any(
            type(v) is not list or len(v) != n for v in raw_groups.values()
        ):
            errs.add(0, "groups", f"expected an object of attribute -> list of {n} values")
        else:
            groups = [{a: vals[i] for a, vals in raw_groups.items()} for i in range(n)]
    ok = failure < 0
    missing_pred = ok & (pred_idx < 0) & np.isnan(pred_value)
    if schema.prediction_classes is not None and missing_pred.any() and not errs.bad:
        errs.add(int(np.argmax(missing_pred)), "prediction", "required unless 'error' is set")
    if errs.bad:
        raise BadRequest(
            400, "invalid_event", "invalid columnar batch; nothing was applied", errs.items
        )
    return Batch(
        n=n,
        versions=versions,
        ok=ok,
        x_num=x,
        cat_idx=cat_idx,
        pred_value=pred_value,
        pred_idx=pred_idx,
        score=score,
        latency=latency,
        failure=failure,
        ids=ids,
        timestamps=[None] * n,
        groups=groups,
    )
