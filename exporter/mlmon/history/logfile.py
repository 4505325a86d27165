"""The rows of a prediction log and of a labels file, each with its place (file and line)
for error messages, as `mlmon backfill` replays them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlmon.core import batchfile
from mlmon.core.schema import ModelSchema


def event_rows(path: Path, schema: ModelSchema) -> Iterator[tuple[str, Any]]:
    """(place, event) for each row of a JSONL or CSV log."""
    if not path.is_file():
        raise batchfile.FileError(f"{path}: no such file")
    for line, event in batchfile.rows(path, schema):
        yield batchfile.where(path, line), event


def label_rows(path: Path) -> Iterator[tuple[str, Any]]:
    """(place, label) for each line of a JSONL labels file."""
    if not path.is_file():
        raise batchfile.FileError(f"{path}: no such file")
    for line, item in batchfile.jsonl_rows(path):
        yield batchfile.where(path, line), item
