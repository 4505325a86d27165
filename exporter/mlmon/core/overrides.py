"""Thresholds changed at run time (`PUT /v1/models/{model}/thresholds`), kept apart from
the config's values so a reload or a restart does not lose them.

A store holds every model's overrides as ``{model: {threshold: value}}``. Two stores exist:
in memory (no ``server.snapshot_dir``: overrides last until the process ends) and a JSON
file beside the snapshots, rewritten atomically and fsynced before the admin call is
answered, so a ``kill -9`` right after the answer keeps the change. With a `store`, the
shared store (`fleet.SharedStore`) implements the same methods and every replica reads it,
so the replicas agree by construction; the `MlmonThresholdsDisagree` alert catches the
rest (replicas without the store, or one that cannot reach it).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Protocol

log = logging.getLogger("mlmon.overrides")
FILE = "thresholds.overrides.json"
FORMAT = 1

Overrides = dict[str, dict[str, float]]


class Store(Protocol):
    """Where runtime overrides live: ``load`` at start, and each change stored before it
    is answered: ``put`` values of a model or ``delete`` one, ``after`` being every
    model's overrides once the change is made (for stores that write the whole set)."""

    kind: str

    def load(self) -> Overrides: ...

    def put(self, model: str, values: dict[str, float], after: Overrides) -> None: ...

    def delete(self, model: str, name: str, after: Overrides) -> None: ...


class MemoryStore:
    """No persistence: the overrides live in the monitor only, as long as the process."""

    kind = "memory"

    def load(self) -> Overrides:
        return {}

    def put(self, model: str, values: dict[str, float], after: Overrides) -> None:
        return None

    def delete(self, model: str, name: str, after: Overrides) -> None:
        return None


class FileStore:
    """One JSON file in ``directory``: ``{"format": 1, "models": {model: {name: value}}}``."""

    kind = "file"

    def __init__(self, directory: Path) -> None:
        self.path = directory / FILE

    def load(self) -> Overrides:
        """The saved overrides; none (logged) when the file is missing or unreadable."""
        if not self.path.exists():
            return {}
        try:
            doc = json.loads(self.path.read_text())
            if doc.get("format") != FORMAT:
                raise ValueError(f"format {doc.get('format')!r}")
            return checked(doc["models"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            log.error(
                "runtime thresholds in %s are unreadable (%s); using the config's", self.path, e
            )
            return {}

    def put(self, model: str, values: dict[str, float], after: Overrides) -> None:
        self.save(after)

    def delete(self, model: str, name: str, after: Overrides) -> None:
        self.save(after)

    def save(self, overrides: Overrides) -> None:
        """Write to a temporary file, fsync it, rename it over the old one, fsync the
        directory: after this returns, the overrides survive a crash. Raises OSError."""
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"format": FORMAT, "models": overrides}, indent=2, sort_keys=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".thresholds.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself must reach the disk
        finally:
            os.close(dir_fd)


def checked(models: object) -> Overrides:
    """The stored models, refusing anything but ``{str: {str: finite number >= 0}}``."""
    if not isinstance(models, dict):
        raise ValueError("models is not an object")
    out: Overrides = {}
    for model, values in models.items():
        if not isinstance(values, dict):
            raise ValueError(f"{model}: not an object")
        out[str(model)] = {}
        for name, v in values.items():
            if type(v) not in (int, float) or not (0 <= v < float("inf")):
                raise ValueError(f"{model}.{name}: {v!r} is not a finite number >= 0")
            out[str(model)][str(name)] = float(v)
    return out


def open_store(snapshot_dir: Path | None, shared: Store | None = None) -> Store:
    """The shared store when there is one, else the file beside the snapshots when there is
    a snapshot dir, else memory."""
    if shared is not None:
        return shared
    return FileStore(snapshot_dir) if snapshot_dir is not None else MemoryStore()
