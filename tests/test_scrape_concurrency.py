"""A scrape does not hold up ingest, on a real `mlmon serve` over real sockets.

The exporter holds many versions, and a steady ingest load touches every one of them, so
that every scrape writes every version's text again and computes its drift: scrapes are
long. While scrapes run back to back, ingest requests must keep completing *inside* them:
a request that starts after a scrape began and is answered before that scrape's answer
came could not have waited for the scrape. A scrape that held the lock ingest needs for
its whole duration lets at most the one waiting request through, once it lets go.
Nothing here compares times with a bound; only the order of events counts.
"""

from __future__ import annotations

import http.client
import json
import threading
import time

import pytest
from helpers import Exporter, make_env, parse_metrics
from mlmon.demo import synthetic

pytestmark = pytest.mark.integration

MODEL = "credit-risk"
VERSIONS = 8
SCRAPES = 16


@pytest.fixture(scope="module")
def exporter(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scrape-concurrency")
    spec = synthetic.wide_spec(n_numeric=120, n_categorical=5)
    env = make_env(tmp, spec, n_train=4_000, top={"limits": {"max_versions": 100}})
    exp = Exporter(env.config_path)
    rows = synthetic.without_labels(synthetic.events(spec, 400 * VERSIONS, seed=4))
    for i, r in enumerate(rows):
        r["version"] = f"v{i % VERSIONS}"
    for start in range(0, len(rows), 1_000):
        assert exp.post(MODEL, rows[start : start + 1_000]).status_code == 200
    yield exp, rows
    exp.stop()


def _post(conn: http.client.HTTPConnection, body: bytes) -> int:
    conn.request(
        "POST", f"/v1/models/{MODEL}/predictions", body, {"Content-Type": "application/json"}
    )
    r = conn.getresponse()
    r.read()
    return r.status


def _ingest_load(port: int, rows: list[dict], stop: threading.Event, out: list) -> None:
    """Single events, each to the next version in turn, one request after the other: a
    few requests change every version. Appends (started, answered, status) per request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    bodies = [json.dumps(r).encode() for r in rows]
    i = 0
    while not stop.is_set():
        t0 = time.perf_counter()
        status = _post(conn, bodies[i % len(bodies)])
        out.append((t0, time.perf_counter(), status))
        i += 1
    conn.close()


def _scrape(conn: http.client.HTTPConnection) -> tuple[float, float, bytes]:
    t0 = time.perf_counter()
    conn.request("GET", "/metrics")
    r = conn.getresponse()
    body = r.read()
    assert r.status == 200
    return t0, time.perf_counter(), body


def test_ingest_keeps_completing_while_scrapes_run_back_to_back(exporter):
    exp, rows = exporter
    requests: list[tuple[float, float, int]] = []
    stop = threading.Event()
    load = threading.Thread(target=_ingest_load, args=(exp.port, rows, stop, requests))
    conn = http.client.HTTPConnection("127.0.0.1", exp.port, timeout=60)
    _scrape(conn)  # the first scrape writes every label set; the load starts after it
    load.start()
    try:
        while len(requests) < 3:  # the load is running
            time.sleep(0.01)
        scrapes = [_scrape(conn) for _ in range(SCRAPES)]
    finally:
        stop.set()
        load.join(60)
    conn.close()
    assert all(status == 200 for *_, status in requests), requests
    series = parse_metrics(scrapes[-1][2].decode())
    assert len(series) > 10_000  # long scrapes: every version rewritten each time

    # the scrapes saw the load's events: they wrote changed versions, not cached text
    assert _requests_served(scrapes[-1][2]) > _requests_served(scrapes[0][2])
    inside = [sum(1 for a, b, _ in requests if s0 < a and b < s1) for s0, s1, _ in scrapes]
    # ingest went on inside the scrapes: more requests started and were answered within
    # them than the one per scrape a lock held for the whole scrape would let through,
    # and in most scrapes at least two, one after the other
    assert sum(inside) >= 2 * SCRAPES, inside
    assert sum(1 for n in inside if n >= 2) >= SCRAPES // 2, inside


def _requests_served(text: bytes) -> float:
    samples = parse_metrics(text.decode())
    return sum(v for (name, _), v in samples.items() if name == "mlmon_inference_requests_total")
