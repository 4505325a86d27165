"""Files of events and labels for `mlmon check`, read as a stream of batches.

A data file is CSV with a header (the columns `mlmon baseline` reads: the features,
``prediction``, ``score`` or ``score_<class>``, ``attr_<feature>``, ``label``, ``id``,
``version``, plus ``error``, ``latency_seconds`` and one column per sensitive attribute) or
JSONL (one event per line, in the ingest API's shape, optionally with its ``label``). Each
row becomes an event in the ingest API's shape, with its line number; the ingest code then
validates it exactly as it validates a request. A labels file is JSONL of
``{"id": ..., "label": ...}``, as the labels API takes them.

Nothing is held beyond one batch: the caller ingests a batch and asks for the next.
`read_events` removes ``timestamp`` from every event (the whole file is one window);
`rows` keeps it, for `mlmon backfill`.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlmon.core.baseline import ATTRIBUTION_PREFIX
from mlmon.core.decoding import BadRequest, decode_json
from mlmon.core.schema import ModelSchema

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
MISSING_TEXT = frozenset({"", "na", "nan", "null", "none", "n/a"})  # as `mlmon baseline`
# An id for a row that carries a label but no id, so its label can be joined through the
# label store like any other; the NUL makes it unlike any id a model server sends.
ROW_ID = "\0line:{}"


class FileError(ValueError):
    """A file that cannot be checked, with a message naming the file and line."""


@dataclass
class Chunk:
    """Up to one batch of events, each with its line, and the labels the rows carried."""

    lines: list[int] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)
    labels: list[dict[str, Any]] = field(default_factory=list)  # {"id", "label"}
    label_lines: list[int] = field(default_factory=list)


def where(path: Path, line: int, fieldname: str = "") -> str:
    """`current.jsonl line 7: features.age` -- how every error names its place."""
    return f"{path.name} line {line}" + (f": {fieldname}" if fieldname else "")


def rows(path: Path, schema: ModelSchema) -> Iterator[tuple[int, Any]]:
    """(line, event) for each row of a CSV or JSONL file, every field kept (a CSV's
    ``timestamp`` column too)."""
    if not path.is_file():
        raise FileError(f"{path}: no such file")
    if path.suffix.lower() in JSONL_SUFFIXES:
        return _jsonl_events(path)
    return _csv_events(path, schema)


def jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line, object) for each non-blank line of a JSONL file."""
    if not path.is_file():
        raise FileError(f"{path}: no such file")
    return _jsonl_events(path)


def read_events(path: Path, schema: ModelSchema, batch: int) -> Iterator[Chunk]:
    """The events of a CSV or JSONL file, ``batch`` at a time."""
    rows_ = rows(path, schema)
    chunk = Chunk()
    for line, event in rows_:
        _add(chunk, line, event)
        if len(chunk.events) >= batch:
            yield chunk
            chunk = Chunk()
    if chunk.events:
        yield chunk


def _add(chunk: Chunk, line: int, event: Any) -> None:
    chunk.lines.append(line)
    chunk.events.append(event)
    if type(event) is not dict:
        return  # the ingest code says what is wrong with it
    event.pop("timestamp", None)
    label = event.pop("label", None)
    if label is not None:
        if event.get("id") is None:
            event["id"] = ROW_ID.format(line)
        chunk.labels.append({"id": event["id"], "label": label})
        chunk.label_lines.append(line)


def read_labels(path: Path, batch: int) -> Iterator[tuple[list[int], list[Any]]]:
    """The labels of a JSONL file, ``batch`` at a time, with their lines."""
    if not path.is_file():
        raise FileError(f"{path}: no such file")
    lines: list[int] = []
    items: list[Any] = []
    for line, item in _jsonl_events(path):
        lines.append(line)
        items.append(item)
        if len(items) >= batch:
            yield lines, items
            lines, items = [], []
    if items:
        yield lines, items


def _jsonl_events(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open("rb") as fh:
        for line, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                yield line, decode_json(raw.strip())
            except BadRequest as e:  # the decoder's "line 1" is the file's line
                message = e.message.replace(" at line 1 column ", " at column ")
                raise FileError(f"{where(path, line)}: {message}") from None


# ---------------------------------------------------------------- CSV rows to events


@dataclass(frozen=True)
class CsvColumns:
    """Where each part of an event sits in a CSV row."""

    features: dict[str, int]
    attributions: dict[str, int]
    groups: dict[str, int]
    scores: dict[str, int]  # class -> column of its score_<class>
    fields: dict[str, int]  # id, version, prediction, score, label, error, latency_seconds
    width: int


def csv_columns(path: Path, header: list[str], schema: ModelSchema) -> CsvColumns:
    index = {h.strip(): i for i, h in enumerate(header)}
    kinds = schema.feature_kinds
    embeddings = [e.name for e in schema.embeddings]
    if embeddings:
        raise FileError(
            f"{path.name}: embedding feature(s) {', '.join(embeddings)} need JSONL "
            "(a list of numbers per row); CSV cannot hold them"
        )
    attrs = [a for a in schema.config.sensitive_attributes if a not in kinds]
    known = (
        "id", "version", "prediction", "score", "label", "error", "latency_seconds", "timestamp"
    )  # fmt: skip
    return CsvColumns(
        features={n: index[n] for n in kinds if n in index},
        attributions={
            h[len(ATTRIBUTION_PREFIX) :]: i
            for h, i in index.items()
            if h.startswith(ATTRIBUTION_PREFIX) and h[len(ATTRIBUTION_PREFIX) :] in kinds
        },
        groups={a: index[a] for a in attrs if a in index},
        scores={h[6:]: i for h, i in index.items() if h.startswith("score_")},
        fields={k: index[k] for k in known if k in index},
        width=len(header),
    )


def _csv_events(path: Path, schema: ModelSchema) -> Iterator[tuple[int, Any]]:
    with path.open("r", encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise FileError(f"{path.name}: empty file, expected a header row") from None
        cols = csv_columns(path, header, schema)
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) != cols.width:
                raise FileError(f"{where(path, line)}: {len(row)} fields, header has {cols.width}")
            yield line, _csv_event(row, cols, schema, lambda f, ln=line: where(path, ln, f))


def _csv_event(row: list[str], cols: CsvColumns, schema: ModelSchema, at: Any) -> dict[str, Any]:
    kinds = schema.feature_kinds
    features = {
        n: _number(row[i], at(f"features.{n}")) if kinds[n] == "numeric" else _text(row[i])
        for n, i in cols.features.items()
    }
    event: dict[str, Any] = {"features": features}
    for name in ("id", "version", "error"):
        if name in cols.fields and (v := _text(row[cols.fields[name]])) is not None:
            event[name] = v
    for name in ("latency_seconds", "timestamp"):
        if name in cols.fields:
            event[name] = _number(row[cols.fields[name]], at(name))
    _csv_outputs(event, row, cols, schema, at)
    if cols.attributions:
        event["attributions"] = {
            n: _number(row[i], at(f"attributions.{n}")) for n, i in cols.attributions.items()
        }
    if cols.groups:
        event["groups"] = {a: _text(row[i]) for a, i in cols.groups.items()}
    return {k: v for k, v in event.items() if v is not None}


def _csv_outputs(
    event: dict[str, Any], row: list[str], cols: CsvColumns, schema: ModelSchema, at: Any
) -> None:
    """Prediction, scores and label of a CSV row, typed as the model's task needs."""
    regression = schema.prediction_classes is None
    f = cols.fields
    if "prediction" in f:
        raw = row[f["prediction"]]
        event["prediction"] = _number(raw, at("prediction")) if regression else _text(raw)
    if "score" in f:
        event["scores"] = _number(row[f["score"]], at("score"))
    elif cols.scores:
        scores = {c: _number(row[i], at(f"score_{c}")) for c, i in cols.scores.items()}
        event["scores"] = {c: s for c, s in scores.items() if s is not None} or None
    if "label" in f:
        raw = row[f["label"]]
        event["label"] = _number(raw, at("label")) if regression else _text(raw)


def _text(v: str) -> str | None:
    v = v.strip()
    return None if v.lower() in MISSING_TEXT else v


def _number(v: str, place: str) -> float | None:
    text = _text(v)
    if text is None:
        return None
    try:
        x = float(text)
    except ValueError:
        raise FileError(f"{place}: expected a number, got {v!r}") from None
    return x if math.isfinite(x) else None
