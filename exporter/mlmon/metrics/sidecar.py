"""The sidecar's own metrics: its build, its HTTP servers, the ingest API, snapshots, limits,
and the proxy's counters (read from shared memory, never from the proxy module)."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from typing import Any

import numpy as np

from mlmon import __version__
from mlmon.capture.counters import DURATION_BUCKETS, ProxyStats
from mlmon.capture.protocols import PROTOCOLS
from mlmon.core.fleet import SharedStore
from mlmon.core.monitor import Monitor
from mlmon.metrics.exposition import Family, RenderTimes
from mlmon.metrics.families import counter, gauge, histogram


def exporter_families(
    monitor: Monitor, proxy: ProxyStats | None, render_times: RenderTimes | None = None
) -> Iterator[Family]:
    """The exporter's families, with the proxy's closed connections beside its own."""
    yield _build_info()
    if render_times is not None:
        yield _render_seconds(render_times)
    c = monitor.counters
    with c.lock:
        requests = dict(c.requests)
        rejected = dict(c.rejected)
        events = dict(c.events)
        rejected_events = dict(c.rejected_events)
        late, future = dict(c.late_events), dict(c.future_events)
        limits = dict(c.limit_hits)
        closed = {("exporter", r): v for r, v in c.connections_closed.items()}
    if proxy is not None:
        closed.update((("proxy", r), v) for r, v in proxy.snapshot()["connections_closed"].items())
    yield _connections_closed(closed)
    yield from _ingest(monitor, requests, rejected, events, rejected_events)
    yield from _event_times(monitor, late, future)
    yield from _snapshots(monitor)
    if monitor.shared is not None:
        yield from _store(monitor.shared)
    yield _by_key(
        counter("mlmon_limit_hits", "Times a configured limit was reached.", labels=["limit"]),
        limits,
    )


def _build_info() -> Family:
    build = gauge(
        "mlmon_build_info", "mlmon build information.", labels=["version", "python_version"]
    )
    build.add_metric([__version__, platform.python_version()], 1.0)
    return build


def _render_seconds(times: RenderTimes) -> Family:
    fam = histogram(
        "mlmon_scrape_render_seconds",
        "Time the exporter took to render one /metrics response (earlier scrapes: a "
        "render is counted once it is done).",
        [],
    )
    buckets, count, total = times.snapshot()
    fam.add([], RenderTimes.BUCKETS, buckets, count, total)
    return fam


def _by_key(fam: Family, counts: dict[Any, float]) -> Family:
    """One sample per key of ``counts``, in key order; a tuple key holds several labels."""
    for k, v in sorted(counts.items()):
        fam.add_metric(list(k) if isinstance(k, tuple) else [k], v)
    return fam


def _connections_closed(closed: dict[tuple[str, str], float]) -> Family:
    return _by_key(
        counter(
            "mlmon_http_connections_closed",
            "Connections the exporter's or the proxy's HTTP server closed, by reason: "
            "timeouts, evictions at the connection cap, malformed or oversized heads.",
            labels=["server", "reason"],
        ),
        closed,
    )


def _ingest(
    monitor: Monitor,
    requests: dict[str, float],
    rejected: dict[tuple[str, str], float],
    events: dict[str, float],
    rejected_events: dict[str, float],
) -> Iterator[Family]:
    yield _by_key(
        counter(
            "mlmon_ingest_requests",
            "Requests received by the ingest API, by endpoint.",
            labels=["endpoint"],
        ),
        requests,
    )
    yield _by_key(
        counter(
            "mlmon_ingest_rejected_requests",
            "Ingest requests refused, by endpoint and reason.",
            labels=["endpoint", "reason"],
        ),
        rejected,
    )
    fam = counter("mlmon_ingest_events", "Events accepted and applied.", labels=["model"])
    fam_r = counter(
        "mlmon_ingest_rejected_events",
        "Events refused as invalid (in refused batches or partial acceptance).",
        labels=["model"],
    )
    for name in monitor.models:
        fam.add_metric([name], events.get(name, 0))
        fam_r.add_metric([name], rejected_events.get(name, 0))
    yield fam
    yield fam_r


def _event_times(
    monitor: Monitor, late: dict[str, float], future: dict[str, float]
) -> Iterator[Family]:
    fam_late = counter(
        "mlmon_late_events",
        "Events whose timestamp is older than the window: in the all-time totals only.",
        labels=["model"],
    )
    fam_future = counter(
        "mlmon_future_events",
        "Events stamped further ahead of the exporter's clock than window.future_tolerance: "
        "counted at the exporter's time.",
        labels=["model"],
    )
    for name in monitor.models:
        fam_late.add_metric([name], late.get(name, 0))
        fam_future.add_metric([name], future.get(name, 0))
    yield fam_late
    yield fam_future


def _snapshots(monitor: Monitor) -> Iterator[Family]:
    yield _by_key(
        counter(
            "mlmon_snapshot_writes",
            "Snapshots of the state written, by outcome (ok, error).",
            labels=["outcome"],
        ),
        monitor.snapshot_writes,
    )
    yield _by_key(
        counter(
            "mlmon_snapshot_restores",
            "Models whose state was read back "
            "at start, by outcome (restored, none, corrupt, "
            "incompatible).",
            labels=["outcome"],
        ),
        monitor.snapshot_restores,
    )
    yield gauge(
        "mlmon_snapshot_last_success_timestamp_seconds",
        "When the last snapshot was written (0: never).",
        value=monitor.last_snapshot,
    )


def _store(store: SharedStore) -> Iterator[Family]:
    """The shared store (only with one configured)."""
    errors, dropped, records = store.counts()
    yield gauge(
        "mlmon_store_up",
        "1 when the last call to the shared store succeeded, 0 after a failure.",
        value=store.up,
    )
    yield _by_key(
        counter(
            "mlmon_store_errors",
            "Calls to the shared store that failed, by operation (write, take, "
            "thresholds_read, thresholds_write).",
            labels=["op"],
        ),
        errors,
    )
    yield _by_key(
        counter(
            "mlmon_store_dropped_records",
            "Prediction join records never written to the shared store, by reason "
            "(unavailable, queue_full); their labels will be unmatched.",
            labels=["reason"],
        ),
        dropped,
    )
    written_total = counter(
        "mlmon_store_written_records", "Prediction join records written to the shared store."
    )
    written_total.add_metric([], records["written"])
    yield written_total
    uncertain = counter(
        "mlmon_store_uncertain_labels",
        "Labels whose take from the shared store timed out twice: the store may have "
        "marked them taken without this replica counting them (sent again, they count as "
        "duplicates).",
    )
    uncertain.add_metric([], records["uncertain"])
    yield uncertain
    yield gauge(
        "mlmon_store_queued_records",
        "Join records waiting to be written to the shared store.",
        value=store.queued(),
    )


def proxy_families(p: ProxyStats) -> Iterator[Family]:
    snap = p.snapshot()
    yield from _proxied_requests(snap)
    yield _by_key(
        counter(
            "mlmon_proxy_upstream_failures",
            "Requests the upstream model server did not answer, by reason.",
            labels=["reason"],
        ),
        snap["upstream_failures"],
    )
    yield from _capture(snap)


def _proxied_requests(snap: dict[str, Any]) -> Iterator[Family]:
    yield _by_key(
        counter(
            "mlmon_proxy_requests",
            "Requests through the proxy, by payload protocol and the status returned "
            "(the upstream's, or 502/504 when the proxy answered itself).",
            labels=["protocol", "code"],
        ),
        snap["requests"],
    )
    counts, sums = snap["durations"], snap["duration_sums"]
    fam = histogram(
        "mlmon_proxy_request_duration_seconds",
        "Time from a request's arrival at the proxy to the end of its response, by "
        "payload protocol.",
        ["protocol"],
    )
    for proto in PROTOCOLS:
        fam.add(
            [proto],
            DURATION_BUCKETS,
            np.cumsum(counts[proto][:-1]),
            sum(counts[proto]),
            sums[proto],
        )
    yield fam


def _capture(snap: dict[str, Any]) -> Iterator[Family]:
    yield _by_key(
        counter(
            "mlmon_proxy_capture_failures",
            "Proxied inference calls (or parts of them) that gave no events, by reason; the "
            "caller's response is never affected.",
            labels=["reason"],
        ),
        snap["capture_failures"],
    )
    captured = snap["captured"]
    fam = counter(
        "mlmon_proxy_captured_requests",
        "Proxied inference calls turned into events, by payload protocol.",
        labels=["protocol"],
    )
    for proto in PROTOCOLS[:-1]:
        fam.add_metric([proto], captured.get(proto, 0))
    yield fam
    yield gauge(
        "mlmon_proxy_capture_queue_length",
        "Proxied calls waiting for capture (bounded by proxy.queue_size).",
        value=snap["queue_length"],
    )
