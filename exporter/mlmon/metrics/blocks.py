"""The models' part of /metrics as text blocks, written again only when what they show
changed.

The collector cuts a scrape into units — a model's settings and baselines, its label join,
its version comparisons, each of its versions — and gives each a stamp: what its text
depends on (the version's generation, which every change of its counts renews; the
thresholds; the schema; the group names). A unit whose stamp is the same as at the last
scrape keeps its text; the others are built into families and written again, reusing
their line starts while their label sets stay the same. The units' text is then merged by
family, so that a family appears once, in the order its first sample came, exactly as if
all units had added their samples to one set of families.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field

from mlmon.metrics.exposition import Block, Family, Renderer, Seen, header
from mlmon.metrics.families import Families

# (family name, its header, the unit's sample lines of it)
Chunk = tuple[str, bytes, bytes]


@dataclass(frozen=True)
class Unit:
    key: Hashable  # which part of the scrape, e.g. ("version", model, version)
    stamp: tuple | None  # what its text depends on; None: written at every scrape
    build: Callable[[Families], None]
    # objects whose id() is in the stamp, held with the text so that no other object can
    # take their id while the stamp is compared with it
    keep: tuple = ()


@dataclass
class _Entry:
    stamp: tuple | None
    keep: tuple
    chunks: list[Chunk]
    seen: Seen = field(default_factory=dict)


class BlockCache:
    """Every unit's text of the last scrape. Scrapes take turns (a lock of their own,
    which ingest never takes), so two scrapes never write the same unit twice."""

    def __init__(self) -> None:
        self._renderer = Renderer()
        self._entries: dict[Hashable, _Entry] = {}
        self._lock = threading.Lock()
        self.written = 0  # units written (not reused) since the start

    def render(self, units: Iterable[Unit]) -> list[Block]:
        with self._lock:
            entries: dict[Hashable, _Entry] = {}
            for unit in units:
                entry = self._entries.get(unit.key)
                if entry is None or unit.stamp is None or entry.stamp != unit.stamp:
                    entry = self._write(unit, entry)
                entries[unit.key] = entry
            self._entries = entries  # units gone since (versions, models) are dropped
        return merge(e.chunks for e in entries.values())

    def _write(self, unit: Unit, last: _Entry | None) -> _Entry:
        self.written += 1
        families = Families()
        unit.build(families)
        seen = last.seen if last is not None else {}
        fams = list(families.all())
        lines = self._renderer.write(fams, seen)
        chunks = [
            (fam.name, _header(fam), text.encode()) for fam, text in zip(fams, lines, strict=True)
        ]
        return _Entry(unit.stamp, unit.keep, chunks, seen)


def _header(fam: Family) -> bytes:
    key = (fam.name, fam.kind, fam.doc)
    text = _HEADERS.get(key)
    if text is None:
        if len(_HEADERS) > 10_000:
            _HEADERS.clear()
        text = _HEADERS[key] = header(fam).encode()
    return text


_HEADERS: dict[tuple[str, str, str], bytes] = {}


def merge(units: Iterable[list[Chunk]]) -> list[Block]:
    """The units' chunks as one block per family, in the order of first appearance."""
    parts: dict[str, list[bytes]] = {}
    for chunks in units:
        for name, head, lines in chunks:
            p = parts.get(name)
            if p is None:
                parts[name] = [head, lines]
            else:
                p.append(lines)
    return [Block(name, b"".join(p)) for name, p in parts.items()]
