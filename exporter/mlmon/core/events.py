"""A batch of prediction events as rows, validated and turned into column arrays.

A batch is validated whole: either every event is turned into arrays, or a BadRequest
lists what is wrong with each bad event (index and field), and nothing is applied. With
``partial=True`` the valid events are kept and the invalid ones reported.

The hot path checks the types of all feature values of a batch in one pass
(``set(map(type, ...))``) and converts them with one ``np.array`` call; only a batch that
fails that check walks its values one by one to say exactly where it is wrong. Feature names
the model does not have are ignored, but found per batch with set operations and reported
(`fields.unknown_features`); refused values are counted by feature and reason.
"""

from __future__ import annotations

import math
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

from mlmon.core.config import label_text
from mlmon.core.decoding import BadRequest
from mlmon.core.fields import (
    NUMBER_TYPES,
    Batch,
    Errors,
    attribution_matrix,
    bad_error,
    bad_group,
    bad_id,
    bad_latency,
    bad_prediction,
    bad_timestamp,
    bad_version,
    check_scores,
    embedding_columns,
    failure_index,
    tracked_score,
    type_name,
    unknown_features,
)
from mlmon.core.schema import ModelSchema


def parse_events(
    events: list[Any],
    schema: ModelSchema,
    limits: dict[str, int],
    partial: bool = False,
    refused: dict[tuple[str, str], int] | None = None,
) -> tuple[Batch, list[dict[str, Any]]]:
    """Validate ``events`` against ``schema``. Returns the batch of valid events and the error
    details; raises BadRequest(400) when any event is invalid and ``partial`` is false.
    Refused feature values are added to ``refused`` by (feature, reason), refused or not."""
    if len(events) > limits["max_batch_events"]:
        raise BadRequest(
            413,
            "batch_too_large",
            f"batch of {len(events)} events exceeds the limit of {limits['max_batch_events']}",
        )
    errs = Errors(refused)
    max_str = limits["max_string_length"]
    classification = schema.prediction_classes is not None
    feats = [
        _check_event(errs, i, ev, classification, max_str, limits["max_features_per_event"])
        for i, ev in enumerate(events)
    ]

    num_names = schema.inputs_numeric
    rows, num_complete = _feature_rows(feats, num_names)
    x = _numeric_matrix(rows, num_names, errs)
    emb_err = np.empty((len(events), 0))
    if schema.embeddings:
        x, emb_err = _with_embeddings(x, feats, schema, errs)
        num_complete = False  # the shortcut of `unknown_features` counts no embeddings
    cat_rows, cat_complete = _feature_rows(feats, schema.categorical.names)
    cat_idx = _categorical_matrix(feats, cat_rows, schema, errs, max_str)
    attr = attribution_matrix(
        events, schema.attribution_names, errs, limits["max_features_per_event"]
    )

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
        attr = attr[keep]
        emb_err = emb_err[keep]
        feats = [feats[i] for i in keep]
    good = [events[i] for i in keep]
    batch = Batch(
        n=len(good),
        x_num=x,
        cat_idx=cat_idx,
        ids=[ev.get("id") for ev in good],
        timestamps=[ev.get("timestamp") for ev in good],
        groups=[ev.get("groups") for ev in good],
        attr=attr,
        emb_err=emb_err,
        unknown_features=unknown_features(
            feats, schema.feature_kinds, num_complete and cat_complete
        ),
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
            score[j] = tracked_score(s, schema)
        lat = ev.get("latency_seconds")
        if lat is not None:
            latency[j] = lat
        e = ev.get("error")
        if e is not None:
            failure[j] = failure_index(e)
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
    errs: Errors, i: int, ev: Any, classification: bool, max_str: int, max_feats: int
) -> dict[str, Any]:
    """Check one row event's fields (errors go to ``errs``); its feature values to profile."""
    if type(ev) is not dict:
        errs.add(i, "", f"an event must be a JSON object, got {type_name(ev)}")
        return {}
    error = ev.get("error")
    if error is not None and (msg := bad_error(error, max_str)):
        errs.add(i, "error", msg)
    f = ev.get("features")
    if f is None and error is None:
        errs.add(i, "features", "required: an object of feature values")
    elif f is not None and type(f) is not dict:
        errs.add(i, "features", f"expected an object, got {type_name(f)}")
        f = None
    elif f is not None and len(f) > max_feats:
        errs.add(i, "features", f"{len(f)} features exceed the limit of {max_feats}")
    p = ev.get("prediction")
    if p is None:
        if error is None:
            errs.add(i, "prediction", "required unless 'error' is set")
    elif msg := bad_prediction(p, classification, max_str):
        errs.add(i, "prediction", msg)
    v = ev.get("version")
    if v is not None and (msg := bad_version(v)):
        errs.add(i, "version", msg)
    v = ev.get("id")
    if v is not None and (msg := bad_id(v, max_str)):
        errs.add(i, "id", msg)
    v = ev.get("timestamp")
    if v is not None and (msg := bad_timestamp(v)):
        errs.add(i, "timestamp", msg)
    v = ev.get("latency_seconds")
    if v is not None and (msg := bad_latency(v)):
        errs.add(i, "latency_seconds", msg)
    v = ev.get("scores")
    if v is not None:
        check_scores(errs, i, v, classification)
    v = ev.get("groups")
    if v is not None:
        if type(v) is not dict:
            errs.add(i, "groups", f"expected an object, got {type_name(v)}")
        else:
            for k, g in v.items():
                if msg := bad_group(g, max_str):
                    errs.add(i, f"groups.{k}", msg)
    return f if type(f) is dict and error is None else {}


def _feature_rows(feats: list[dict[str, Any]], names: tuple[str, ...]) -> tuple[list[Any], bool]:
    """Each event's values of ``names``, and whether every event has every one of them: one
    C-level itemgetter call per event when so (the common case), dict.get per value
    otherwise."""
    if not names:
        return [() for _ in feats], True
    getter = itemgetter(*names)
    try:
        if len(names) == 1:
            return [(getter(f),) for f in feats], True
        return [getter(f) for f in feats], True
    except KeyError:
        return [[f.get(n) for n in names] for f in feats], False


def _numeric_matrix(rows: list[list[Any]], names: tuple[str, ...], errs: Errors) -> np.ndarray:
    n, f = len(rows), len(names)
    if f == 0:
        return np.empty((n, 0))
    if set(map(type, chain.from_iterable(rows))) <= NUMBER_TYPES:
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
                errs.refuse(i, names[j], "type_error", f"expected a number, got {type_name(v)}")
                continue
            try:
                fv = float(v)
            except OverflowError:
                errs.refuse(i, names[j], "out_of_range", "number out of range")
                continue
            if math.isfinite(fv):
                x[i, j] = fv
    return x


def _with_embeddings(
    x: np.ndarray, feats: list[dict[str, Any]], schema: ModelSchema, errs: Errors
) -> tuple[np.ndarray, np.ndarray]:
    """The numeric matrix with each embedding's projected components appended, and the
    embeddings' reconstruction errors [n, E]."""
    parts, err = [x], []
    for e in schema.embeddings:
        coords, e_err = embedding_columns([f.get(e.name) for f in feats], e, errs, every=True)
        parts.append(coords)
        err.append(e_err)
    return np.hstack(parts), np.column_stack(err)


def _categorical_matrix(
    feats: list[dict[str, Any]], rows: list[Any], schema: ModelSchema, errs: Errors, max_str: int
) -> np.ndarray:
    block = schema.categorical
    if len(block) and feats:
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
                    errs.refuse(i, name, "too_long", f"string longer than {max_str} characters")
                    continue
                out[i, j] = vocab.get(v, other)
            elif t is int or t is bool:
                out[i, j] = vocab.get(label_text(v), other)
            elif t is float and not math.isfinite(v):
                continue  # NaN counts as missing, as for numeric features
            else:
                errs.refuse(i, name, "type_error", f"expected a string, got {type_name(v)}")
    return out
