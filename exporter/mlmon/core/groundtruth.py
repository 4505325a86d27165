"""The bounded store that joins late ground-truth labels to their predictions by id.

Every successful prediction that carries an ``id`` waits here with what its label needs
(version, predicted class or value, score, groups, time) until its label arrives, its
time-to-live passes, or the store is full and it is the oldest. Memory is bounded by
``max_entries`` whatever the traffic. A label for an unknown id, an expired one, or one that
was already labelled changes no performance number; each outcome is counted.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from functools import partial
from itertools import repeat
from typing import NamedTuple

OUTCOMES = ("matched", "unmatched", "expired", "duplicate")


class Pending(NamedTuple):
    """A prediction waiting for its label. A tuple, so a batch of them is built in C (see
    `pending_rows`); being labelled replaces the entry with a marked copy, in place."""

    version: str
    time: float
    predicted: int  # class index, -1 for regression
    value: float  # regression prediction (NaN for classifiers)
    score: float  # tracked score (NaN when none)
    groups: tuple[int, ...]  # group index per sensitive attribute, -1 when absent
    labelled: bool = False


def pending_rows(*columns: list) -> list[Pending]:
    """Pending entries from columns of versions, times, predicted classes, values, scores
    and groups: one tuple per row, none labelled yet."""
    return list(map(partial(tuple.__new__, Pending), zip(*columns, repeat(False))))


class LabelStore:
    def __init__(self, max_entries: int, ttl_seconds: float) -> None:
        self.max_entries = max_entries
        self.ttl = ttl_seconds
        self.lock = threading.Lock()
        self._items: OrderedDict[str, Pending] = OrderedDict()
        self.outcomes: Counter[str] = Counter(dict.fromkeys(OUTCOMES, 0))
        self.evicted = 0  # still waiting when pushed out by a full store
        self.expired_unlabelled = 0  # still waiting when their time-to-live passed

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: str, pending: Pending) -> None:
        with self.lock:
            if key in self._items:
                self._items.move_to_end(key)
            self._items[key] = pending
            while len(self._items) > self.max_entries:
                _, old = self._items.popitem(last=False)
                if not old.labelled:
                    self.evicted += 1

    def put_many(self, keys: list[str], pendings: list[Pending]) -> None:
        """`put` for a whole batch, under one lock."""
        with self.lock:
            items = self._items
            for key in items.keys() & keys:  # ids seen before move to the newest end
                items.move_to_end(key)
            items.update(zip(keys, pendings, strict=True))
            while len(items) > self.max_entries:
                _, old = items.popitem(last=False)
                if not old.labelled:
                    self.evicted += 1

    def take(self, key: str, now: float) -> tuple[str, Pending | None]:
        """The outcome of a label for ``key``: matched (with its prediction), unmatched,
        expired or duplicate. A matched entry stays, marked, to recognise duplicates."""
        with self.lock:
            p = self._items.get(key)
            if p is None:
                outcome = "unmatched"
            elif now - p.time > self.ttl:
                del self._items[key]
                if not p.labelled:
                    self.expired_unlabelled += 1
                outcome = "expired"
            elif p.labelled:
                outcome = "duplicate"
            else:
                p = self._items[key] = p._replace(labelled=True)  # keeps its place
                outcome = "matched"
            self.outcomes[outcome] += 1
            return outcome, (p if outcome == "matched" else None)

    def purge(self, now: float) -> None:
        """Drop entries past their time-to-live (oldest first, so this stops early)."""
        with self.lock:
            while self._items:
                key, p = next(iter(self._items.items()))
                if now - p.time <= self.ttl:
                    break
                del self._items[key]
                if not p.labelled:
                    self.expired_unlabelled += 1
