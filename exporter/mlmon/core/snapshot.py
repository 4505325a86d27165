"""Restart without amnesia: each model's windows, groups and label store, written
atomically to one file per model and read back at start.

A snapshot is only restored into a model whose layout (its schema and baseline) is the one
it was written for; an unreadable, corrupt or incompatible snapshot is reported (log line
and `mlmon_snapshot_restores_total{outcome}`) and the model starts clean.

Counters are not restored: after any restart they start again from 0, which Prometheus
recognises as a reset. Restoring them from a snapshot taken up to one interval earlier
would put them below what was already exported, and `increase()` would count the
difference twice. The windows behind the gauges (drift, accuracy, fairness) and the
predictions waiting for labels are restored; after a `kill -9` they lack what arrived
since the last snapshot (`server.snapshot_interval`, 60 s by default).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mlmon.core.groundtruth import Pending
from mlmon.core.state import VersionState


class ModelMonitor(Protocol):
    """What a snapshot reads and restores of a `monitor.ModelMonitor` (named by this
    interface, so the monitor and its snapshots do not import each other)."""

    schema: Any
    state: Any
    labels: Any
    group_names: list[list[str]]
    _group_index: list[dict[str, int]]

    @property
    def name(self) -> str: ...

    @property
    def layout(self) -> Any: ...


log = logging.getLogger("mlmon.snapshot")
FORMAT = 1
# What a snapshot holds of each version: the window rings and their sums, not the totals.
WINDOWED = ("ring", "window", "fring", "fwindow")


def _path(directory: Path, model: str) -> Path:
    return directory / f"{model}.snapshot.npz"


def _signature(m: ModelMonitor) -> dict:
    lay = m.layout
    return {
        "format": FORMAT,
        "model": m.name,
        "baseline": m.schema.baseline_hash,
        "size": lay.size,
        "fsize": lay.fsize,
        "slices": m.state.slices,
        "slice_seconds": m.state.slice_seconds,
    }


def save(m: ModelMonitor, directory: Path) -> Path:
    """Write the model's state to a temporary file, then rename it over the old snapshot."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    with m.state.lock:
        versions = list(m.state.versions.items())
        for i, (_, vs) in enumerate(versions):
            for key in WINDOWED:
                arrays[f"v{i}_{key}"] = getattr(vs, key).copy()
        meta = {
            **_signature(m),
            "versions": [[name, vs.head, vs.last_update] for name, vs in versions],
            "groups": m.group_names,
        }
    with m.labels.lock:
        items = list(m.labels._items.items())
    version_names = sorted({p.version for _, p in items})
    vidx = {v: i for i, v in enumerate(version_names)}
    meta["label_versions"] = version_names
    arrays["labels_key"] = np.array([k for k, _ in items], dtype=str)
    arrays["labels_num"] = np.array(
        [
            [vidx[p.version], p.time, p.predicted, p.value, p.score, float(p.labelled)]
            for _, p in items
        ],
        dtype=np.float64,
    ).reshape(len(items), 6)
    width = len(m.schema.config.sensitive_attributes)
    arrays["labels_groups"] = np.array([p.groups for _, p in items], dtype=np.int64).reshape(
        len(items), width
    )
    arrays["meta"] = np.array(json.dumps(meta))
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        target = _path(directory, m.name)
        os.replace(tmp, target)
        return target
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def restore(m: ModelMonitor, directory: Path) -> str:
    """Load the model's snapshot if there is one; returns the outcome: restored, none,
    corrupt or incompatible."""
    path = _path(directory, m.name)
    if not path.exists():
        return "none"
    try:
        # no pickle: a snapshot holds plain arrays and one JSON string
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            sig = _signature(m)
            if {k: meta.get(k) for k in sig} != sig:
                log.warning(
                    "snapshot %s was written for another schema or baseline; starting clean", path
                )
                return "incompatible"
            versions = {}
            for i, (name, head, last) in enumerate(meta["versions"]):
                vs = VersionState(m.layout, m.state.slices, int(head), float(last))
                for key in WINDOWED:  # totals (the counters) start again from 0
                    arr = data[f"v{i}_{key}"]
                    if arr.shape != getattr(vs, key).shape:
                        raise ValueError(f"{key} has shape {arr.shape}")
                    setattr(vs, key, arr.astype(getattr(vs, key).dtype))
                versions[name] = vs
            keys = data["labels_key"]
            num = data["labels_num"]
            groups = data["labels_groups"]
            names = meta["label_versions"]
            pending = [
                (
                    str(k),
                    Pending(
                        names[int(r[0])],
                        float(r[1]),
                        int(r[2]),
                        float(r[3]),
                        float(r[4]),
                        tuple(int(g) for g in gs),
                        bool(r[5]),
                    ),
                )
                for k, r, gs in zip(keys, num, groups, strict=True)
            ]
    except Exception as e:
        log.warning("snapshot %s is unreadable (%s); starting clean", path, e)
        return "corrupt"
    with m.state.lock:
        m.state.versions = versions
    m.group_names[:] = [list(g) for g in meta["groups"]]
    for a, names_a in enumerate(m.group_names):
        m._group_index[a].update({g: i for i, g in enumerate(names_a) if g != "__other__"})
    for key, p in pending:
        m.labels.put(key, p)
    log.info(
        "restored %s: %d version(s), %d waiting prediction(s)", m.name, len(versions), len(pending)
    )
    return "restored"
