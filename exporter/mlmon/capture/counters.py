"""The proxy's counters, the small interface between the proxy process and the collector:
shared memory the proxy writes and the exporter reads at scrape time, and what the
exporter's capture thread counts. Nothing here knows HTTP."""

from __future__ import annotations

import bisect
import multiprocessing as mp
import threading
from collections import Counter
from typing import Any

import numpy as np

from mlmon.capture.protocols import CAPTURE_FAILURES, PROTOCOLS
from mlmon.core.config import CLOSE_REASONS

# Why the proxy answered itself; `reason` of mlmon_proxy_upstream_failures_total.
UPSTREAM_FAILURES = ("unreachable", "connect_timeout", "timeout", "disconnected", "bad_response")
# Upper bounds of the proxy's request-duration histogram, in seconds.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_CODES = range(100, 600)


class ProxyStats:
    """The proxy's counters, exported as mlmon_proxy_*. What the proxy process counts
    (requests, durations, upstream failures, dropped captures, queue length) sits in
    shared memory it alone writes; what the exporter's capture thread counts (capture
    failures, captured calls) is ordinary state of the exporter."""

    def __init__(self) -> None:
        n_proto, n_buckets = len(PROTOCOLS), len(DURATION_BUCKETS) + 1
        n_closed = len(CLOSE_REASONS)
        self._shm = mp.RawArray(
            "d", n_proto * len(_CODES) + n_proto * (n_buckets + 1) + 7 + n_closed
        )
        flat = np.frombuffer(self._shm, dtype=np.float64)
        i = n_proto * len(_CODES)
        self._requests = flat[:i].reshape(n_proto, len(_CODES))
        j = i + n_proto * n_buckets
        self._durations = flat[i:j].reshape(n_proto, n_buckets)
        self._duration_sums = flat[j : j + n_proto]
        k = j + n_proto
        self._upstream = flat[k : k + len(UPSTREAM_FAILURES)]
        q = k + len(UPSTREAM_FAILURES)
        self._queue = flat[q : q + 2]
        self._closed = flat[q + 2 : q + 2 + n_closed]
        self._closed_index = {r: n for n, r in enumerate(CLOSE_REASONS)}
        self._proto_index = {p: n for n, p in enumerate(PROTOCOLS)}
        self._upstream_index = {r: n for n, r in enumerate(UPSTREAM_FAILURES)}
        self.lock = threading.Lock()
        self.capture_failures: Counter[str] = Counter(dict.fromkeys(CAPTURE_FAILURES, 0))
        self.captured: Counter[str] = Counter()  # exchanges turned into events, by protocol
        self.pid: int | None = None  # the proxy process, once started

    def pid_of(self) -> int | str:
        """The proxy process's id for a /proc reader (a name that is no process before it
        starts, so the reader finds nothing)."""
        return self.pid if self.pid is not None else "no-proxy-yet"

    # written by the proxy process
    def request(self, protocol: str, status: int, seconds: float) -> None:
        p = self._proto_index[protocol]
        if 100 <= status < 600:
            self._requests[p, status - 100] += 1
        self._durations[p, bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        self._duration_sums[p] += seconds

    def upstream_failure(self, reason: str) -> None:
        self._upstream[self._upstream_index[reason]] += 1

    def dropped(self) -> None:
        self._queue[0] += 1

    def set_queue_length(self, n: int) -> None:
        self._queue[1] = n

    def connection_closed(self, reason: str) -> None:
        self._closed[self._closed_index[reason]] += 1

    # written by the exporter
    def count(self, counter: Counter, key: Any, n: int = 1) -> None:
        with self.lock:
            counter[key] += n

    def snapshot(self) -> dict[str, Any]:
        """Every counter, for the collector."""
        req = self._requests.copy()
        with self.lock:
            capture = dict(self.capture_failures)
            captured = dict(self.captured)
        capture["queue_full"] = capture.get("queue_full", 0) + float(self._queue[0])
        rows, cols = req.nonzero()
        return {
            "requests": {
                (PROTOCOLS[p], str(c + 100)): float(req[p, c])
                for p, c in zip(rows.tolist(), cols.tolist(), strict=True)
            },
            "durations": {p: self._durations[n].tolist() for n, p in enumerate(PROTOCOLS)},
            "duration_sums": dict(zip(PROTOCOLS, self._duration_sums.tolist(), strict=True)),
            "upstream_failures": dict(zip(UPSTREAM_FAILURES, self._upstream.tolist(), strict=True)),
            "capture_failures": capture,
            "captured": captured,
            "queue_length": float(self._queue[1]),
            "connections_closed": dict(zip(CLOSE_REASONS, self._closed.tolist(), strict=True)),
        }
