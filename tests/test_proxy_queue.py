"""The proxy's capture queue is bounded in calls and in bytes: what does not fit is dropped
and counted (`queue_full`), never waited for, and what the sender hands on frees its room."""

from __future__ import annotations

import os
import threading

from mlmon.capture.counters import ProxyStats
from mlmon.capture.protocols import Exchange
from mlmon.capture.proxy import Proxy
from mlmon.core.config import ProxySettings

MB = 1024 * 1024


def _exchange(size: int) -> Exchange:
    return Exchange("kserve_v1", "m", None, 0.0, request_body=b"x" * size)


def test_the_capture_queue_is_bounded_in_bytes_and_calls():
    stats = ProxyStats()
    proxy = Proxy(
        ProxySettings(upstream="http://127.0.0.1:1", queue_size=5, queue_bytes=3 * MB), stats
    )
    for _ in range(4):
        proxy._enqueue(_exchange(MB))  # the third and fourth do not fit in 3 MiB
    assert proxy.queue.qsize() == 2 and proxy.queued_bytes <= 3 * MB
    for _ in range(6):
        proxy._enqueue(_exchange(10))  # three more fit the call count (5), three do not
    assert proxy.queue.qsize() == 5
    assert stats.snapshot()["capture_failures"]["queue_full"] == 2 + 3

    # the sender hands the queue on and frees its bytes
    received = []

    class Conn:
        def send(self, batch):
            received.extend(batch)

    t = threading.Thread(target=proxy._send_captures, args=(Conn(), os.getppid()), daemon=True)
    t.start()
    deadline = threading.Event()
    for _ in range(100):
        if len(received) == 5:
            break
        deadline.wait(0.05)
    assert len(received) == 5 and proxy.queued_bytes == 0
    proxy._enqueue(_exchange(MB))
    assert proxy.queue.qsize() == 1 and stats.snapshot()["capture_failures"]["queue_full"] == 5
