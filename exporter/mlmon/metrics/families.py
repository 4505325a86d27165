"""Helpers the domain modules share to make families: standalone ones, and `Families`, which
hands out each family once per scrape however many models add samples to it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from mlmon.core.schema import NumericBlock
from mlmon.metrics.exposition import Family

# the labels of every per-version series
MV = ["model", "version"]


def gauge(name: str, doc: str, labels: Sequence[str] = (), value: float | None = None) -> Family:
    return Family(name, doc, "gauge", labels, value)


def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Family:
    return Family(name, doc, "counter", labels)


def histogram(name: str, doc: str, labels: Sequence[str]) -> Family:
    return Family(name, doc, "histogram", labels)


class Families:
    """Families by name, created on first use, so each appears once across all models."""

    def __init__(self) -> None:
        self._by_name: dict[str, Family] = {}

    def _get(self, name: str, doc: str, kind: str, labels: Sequence[str]) -> Family:
        fam = self._by_name.get(name)
        if fam is None:
            fam = self._by_name[name] = Family(name, doc, kind, labels)
        return fam

    def gauge(self, name: str, doc: str, labels: list[str]) -> Family:
        return self._get(name, doc, "gauge", labels)

    def counter(self, name: str, doc: str, labels: list[str]) -> Family:
        return self._get(name, doc, "counter", labels)

    def histogram(self, name: str, doc: str, labels: list[str]) -> Family:
        return self._get(name, doc, "histogram", labels)

    def all(self) -> Iterator[Family]:
        return iter(self._by_name.values())


def coarse_cumulative(num: NumericBlock, counts: np.ndarray) -> np.ndarray:
    """``num.coarse_cumulative(counts)`` ([F, C] cumulative counts at the coarse edges),
    gathered from the flattened cumulative counts with one index kept per block."""
    width = counts.shape[-1]
    hit = _FLAT_INDEX.get((id(num), width))
    if hit is None or hit[0] is not num:
        if len(_FLAT_INDEX) > 1_000:
            _FLAT_INDEX.clear()
        starts = np.arange(num.coarse_index.shape[0])[:, None] * width
        hit = _FLAT_INDEX[id(num), width] = (num, (num.coarse_index + starts).ravel())
    flat = np.cumsum(counts, axis=-1).ravel()[hit[1]]
    return flat.reshape(num.coarse_index.shape)


# (id(block), width) -> (the block, the index); holding the block keeps its id its own
_FLAT_INDEX: dict[tuple[int, int], tuple[NumericBlock, np.ndarray]] = {}
