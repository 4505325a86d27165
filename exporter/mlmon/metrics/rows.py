"""Label rows the collector adds at every scrape, made once.

The label values of a version's per-feature (per-class, per-reason, ...) series are the same
from one scrape to the next, so each list of them is built the first time it is asked for
and handed out again after: a scrape then neither builds the tuples again nor makes the
renderer compare them item by item (it finds the very tuples of the last scrape, which
compare by identity). The lists and arrays handed out are shared: never change them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Row = tuple[str, ...]

_LIMIT = 5_000  # cached lists; beyond, start again (versions and schemas come and go)
_ROWS: dict[tuple, list[Row]] = {}
_TABLES: dict[int, tuple[list[Row], np.ndarray]] = {}


def rows(head: Sequence[str], names: Sequence[str], *tail: str) -> list[Row]:
    """``[(*head, name, *tail) for name in names]``, the same list at every call."""
    key = (tuple(head), tuple(names), tail)
    out = _ROWS.get(key)
    if out is None:
        if len(_ROWS) > _LIMIT:
            _ROWS.clear()
        out = _ROWS[key] = [(*key[0], name, *tail) for name in key[1]]
    return out


def pairs(head: Sequence[str], names: Sequence[str], tails: Sequence[str]) -> list[Row]:
    """``[(*head, name, tail) for name, tail in zip(names, tails)]``, the same list at
    every call."""
    key = (tuple(head), tuple(names), "pairs", tuple(tails))
    out = _ROWS.get(key)
    if out is None:
        if len(_ROWS) > _LIMIT:
            _ROWS.clear()
        out = _ROWS[key] = [(*key[0], n, t) for n, t in zip(key[1], key[3], strict=True)]
    return out


def table(rows_: list[Row]) -> np.ndarray:
    """The rows as a 1-d object array (the same array for the same list), so that a
    boolean mask picks some of them in one step: ``table(r)[mask].tolist()``."""
    hit = _TABLES.get(id(rows_))
    if hit is not None and hit[0] is rows_:
        return hit[1]
    if len(_TABLES) > _LIMIT:
        _TABLES.clear()
    arr = np.empty(len(rows_), dtype=object)
    for i, r in enumerate(rows_):  # item by item: a tuple would be read as a row of items
        arr[i] = r
    _TABLES[id(rows_)] = (rows_, arr)  # holding rows_ keeps its id from being reused
    return arr
