"""The columnar form of a batch (one array per feature and field) straight into a Batch,
checked with the same field checks as the row form."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mlmon.core.config import label_text
from mlmon.core.decoding import BadRequest
from mlmon.core.fields import (
    NUMBER_TYPES,
    Batch,
    Errors,
    bad_attribution,
    bad_error,
    bad_group,
    bad_id,
    bad_latency,
    bad_prediction,
    bad_score,
    bad_timestamp,
    bad_version,
    embedding_columns,
    failure_index,
    type_name,
)
from mlmon.core.schema import ModelSchema


def _column(
    cols: dict[str, Any], key: str, n: int, errs: Errors, prefix: str = ""
) -> list[Any] | None:
    v = cols.get(key)
    if v is None:
        return None
    if type(v) is not list or len(v) != n:
        errs.add(0, f"{prefix}{key}", f"expected a list of {n} values")
        return None
    return v


def _number_column(values: list[Any], feature: str, errs: Errors) -> np.ndarray:
    """A numeric feature's column as floats (null, NaN, +-inf: NaN). Every refused value is
    counted; the first one of the column is the error detail."""
    if set(map(type, values)) <= NUMBER_TYPES:
        try:
            x = np.array(values, dtype=np.float64)
            x[~np.isfinite(x)] = np.nan
            return x
        except OverflowError:
            pass
    x = np.full(len(values), np.nan)
    first = True
    for i, v in enumerate(values):
        if v is None:
            continue
        if type(v) not in (int, float):
            reason, message = "type_error", f"expected a number, got {type_name(v)}"
        else:
            try:
                x[i] = float(v)
                continue
            except OverflowError:
                reason, message = "out_of_range", "number out of range"
        if first:
            errs.refuse(i, feature, reason, message)
            first = False
        else:
            errs.count_refused(feature, reason)
    x[~np.isfinite(x)] = np.nan
    return x


def parse_columns(
    cols: Any,
    schema: ModelSchema,
    limits: dict[str, int],
    refused: dict[tuple[str, str], int] | None = None,
) -> Batch:
    """A columnar batch -- one array per feature and field -- straight into arrays, for
    high-volume senders. Every value is held to the same checks as in the row form, so a
    batch is accepted in one form exactly when it is accepted in the other, with the same
    state; it is validated whole, and BadRequest names the bad rows of each bad column.
    Refused feature values are added to ``refused`` by (feature, reason); a column under a
    name the model does not have is ignored and counted once per succeeded row."""
    feats, pred = _columns_frame(cols, limits)
    n = len(pred)
    errs = Errors(refused)
    max_str = limits["max_string_length"]
    failure = _error_column(cols, n, errs, max_str)
    if len(feats) > limits["max_features_per_event"]:
        errs.add(0, "features", f"{len(feats)} features exceed the limit")
    if (failure >= 0).any():  # the features of failed inferences are neither checked nor kept
        failed = np.flatnonzero(failure >= 0).tolist()
        feats = {k: _blanked(v, failed) for k, v in feats.items()}
    x, emb_err = _numeric_columns(feats, schema, n, errs)
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
        latency=_checked_numbers(cols, "latency_seconds", n, errs, bad_latency),
        failure=failure,
        ids=_checked_values(cols, "id", n, errs, lambda v: bad_id(v, max_str)),
        timestamps=_checked_values(cols, "timestamp", n, errs, bad_timestamp),
        groups=_group_columns(cols, n, errs, max_str),
        attr=_attribution_columns(cols, schema, n, errs),
        emb_err=emb_err,
    )
    if unknown := feats.keys() - schema.feature_kinds.keys():
        batch.unknown_features.update(dict.fromkeys(unknown, int((failure < 0).sum())))
    if errs.bad:
        raise BadRequest(
            400, "invalid_event", "invalid columnar batch; nothing was applied", errs.items
        )
    return batch


def _attribution_columns(cols: dict[str, Any], schema: ModelSchema, n: int, errs: Errors):
    """``attributions: {feature: [number or null, ...]}`` as the row form's array; names
    the model does not monitor are ignored, as in the row form."""
    given = cols.get("attributions")
    if given is None:
        return np.empty((n, 0))
    if type(given) is not dict:
        errs.add(0, "attributions", "expected an object of feature -> list of numbers")
        return np.empty((n, 0))
    names = schema.attribution_names
    out = np.full((n, len(names)), np.nan)
    for j, name in enumerate(names):
        values = _column(given, name, n, errs, "attributions.")
        for i, v in enumerate(values or ()):
            if v is None:
                continue
            if msg := bad_attribution(v):
                errs.add(i, f"attributions.{name}", msg)
                break
            out[i, j] = v
    return out


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


def _error_column(cols: dict[str, Any], n: int, errs: Errors, max_str: int) -> np.ndarray:
    failure = np.full(n, -1, dtype=np.int64)
    col = _column(cols, "error", n, errs)
    for i, e in enumerate(col or ()):
        if e is None:
            continue
        if msg := bad_error(e, max_str):
            errs.add(i, "error", msg)
        else:
            failure[i] = failure_index(e)
    return failure


def _numeric_columns(
    feats: dict[str, Any], schema: ModelSchema, n: int, errs: Errors
) -> tuple[np.ndarray, np.ndarray]:
    """The numeric matrix (embeddings' components last) and the embeddings' errors [n, E]."""
    x = np.full((n, len(schema.numeric)), np.nan)
    emb_err = np.full((n, len(schema.embeddings)), np.nan)
    for j, name in enumerate(schema.inputs_numeric):
        col = _column(feats, name, n, errs, "features.") if name in feats else None
        if col is not None:
            x[:, j] = _number_column(col, name, errs)
    for j, e in enumerate(schema.embeddings):
        col = _column(feats, e.name, n, errs, "features.") if e.name in feats else None
        if col is not None:
            x[:, e.columns], emb_err[:, j] = embedding_columns(col, e, errs, every=False)
    return x, emb_err


def _categorical_columns(
    feats: dict[str, Any], schema: ModelSchema, n: int, errs: Errors, max_str: int
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
                errs.refuse(i, name, "too_long", f"string longer than {max_str} characters")
            elif t in (str, int, bool):
                cat_idx[i, j] = vocab.get(label_text(v), other)
            else:
                errs.refuse(i, name, "type_error", f"expected a string, got {type_name(v)}")
    return cat_idx


def _prediction_column(
    pred: list[Any], schema: ModelSchema, failure: np.ndarray, errs: Errors, max_str: int
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
        elif msg := bad_prediction(p, classes is not None, max_str):
            errs.add(i, "prediction", msg)
        elif classes is not None:
            pred_idx[i] = classes.vocab[0].get(label_text(p), len(classes.vocab[0]))
        elif math.isfinite(p):
            pred_value[i] = p
    return pred_value, pred_idx


def _score_column(cols: dict[str, Any], schema: ModelSchema, n: int, errs: Errors) -> np.ndarray:
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
            arrays[str(k)] = _checked_numbers(raw, k, n, errs, bad_score, "scores")
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
    return _checked_numbers(cols, "scores", n, errs, bad_score)


def _checked_values(cols: dict[str, Any], key: str, n: int, errs: Errors, bad: Any) -> list[Any]:
    """A column's values, each non-null one held to ``bad`` (the row form's check)."""
    col = _column(cols, key, n, errs)
    if col is None:
        return [None] * n
    for i, v in enumerate(col):
        if v is not None and (msg := bad(v)):
            errs.add(i, key, msg)
    return col


def _checked_numbers(
    cols: dict[str, Any], key: str, n: int, errs: Errors, bad: Any, name: str | None = None
) -> np.ndarray:
    """A numeric column as floats (null: NaN), each non-null value held to ``bad``."""
    col = _column(cols, key, n, errs)
    out = np.full(n, np.nan)
    if not col:  # none, or a batch of no events
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


def _version_column(cols: dict[str, Any], schema: ModelSchema, n: int, errs: Errors) -> list[str]:
    version = cols.get("version")
    default = schema.config.default_version
    if version is None:
        return [default] * n
    if type(version) is str:
        if msg := bad_version(version):
            errs.add(0, "version", msg)
        return [version] * n
    col = _column(cols, "version", n, errs)
    if col is None:
        return [default] * n
    for i, v in enumerate(col):
        if v is not None and (msg := bad_version(v)):
            errs.add(i, "version", msg)
    return [v or default for v in col]


def _group_columns(
    cols: dict[str, Any], n: int, errs: Errors, max_str: int
) -> list[dict[str, Any] | None]:
    raw = cols.get("groups")
    if raw is None:
        return [None] * n
    if type(raw) is not dict or any(type(v) is not list or len(v) != n for v in raw.values()):
        errs.add(0, "groups", f"expected an object of attribute -> list of {n} values")
        return [None] * n
    for attr, values in raw.items():
        for i, g in enumerate(values):
            if msg := bad_group(g, max_str):
                errs.add(i, f"groups.{attr}", msg)
    return [{a: vals[i] for a, vals in raw.items()} for i in range(n)]
