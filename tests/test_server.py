"""The exporter's own HTTP server, as a real `mlmon serve` process: the hot routes answer
exactly as the Flask app does, HTTP/1.1 framing (keep-alive, chunked, Expect, HEAD) works,
oversized and malformed requests get a clear 4xx, and the server keeps serving."""

from __future__ import annotations

import contextlib
import json
import random
import socket
import time

import pytest
from helpers import Exporter, body_of, make_env, parse_metrics, raw_call, send_raw, status_of
from mlmon.demo import synthetic

pytestmark = pytest.mark.integration

MODEL = "credit-risk"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server")
    env = make_env(
        tmp,
        synthetic.credit_spec(),
        n_train=3_000,
        top={"limits": {"max_body_bytes": 200_000}},
    )
    exporter = Exporter(env.config_path)
    yield env, exporter
    exporter.stop()


def test_hot_routes_answer_exactly_as_the_flask_app(served, tmp_path):
    """The same requests to a fresh Flask app and to the server: same status, same body."""
    env, exporter = served
    _, _, app = env.app()
    client = app.test_client()
    rows = synthetic.without_labels(synthetic.events(synthetic.credit_spec(), 40, seed=3))
    bad = [dict(rows[0], prediction=[1]), dict(rows[1], features={"age": "old"})]
    cases = [
        ("/v1/models/credit-risk/predictions", json.dumps({"events": rows[:10]}), {}),
        ("/v1/models/credit-risk/predictions", json.dumps({"events": bad + rows[:3]}), {}),
        ("/v1/models/credit-risk/predictions?partial=true", json.dumps({"events": bad + rows[3:6]}), {}),  # noqa: E501
        ("/v1/models/credit-risk/predictions", "{not json", {}),
        ("/v1/models/credit-risk/predictions", json.dumps(rows[7]), {}),
        ("/v1/models/credit-risk/predictions", "\n".join(json.dumps(r) for r in rows[8:12]),
         {"Content-Type": "application/x-ndjson"}),
        ("/v1/models/nope/predictions", json.dumps(rows[0]), {}),
        ("/v1/models/credit-risk/labels", json.dumps({"labels": [{"id": rows[0]["id"], "label": 1}]}), {}),  # noqa: E501
        ("/v1/models/credit-risk/labels", json.dumps({"labels": [{"label": 1}]}), {}),
    ]  # fmt: skip
    for path, body, headers in cases:
        h = {"Content-Type": "application/json", **headers}
        flask = client.post(path, data=body, headers=h)
        raw = raw_call(exporter.port, "POST", path, body.encode(), h)
        assert status_of(raw) == flask.status_code, path
        assert json.loads(body_of(raw)) == flask.get_json(), (path, body[:80])


def test_keep_alive_chunked_expect_and_head(served):
    _, exporter = served
    rows = synthetic.without_labels(synthetic.events(synthetic.credit_spec(), 300, seed=4))
    before = parse_metrics(exporter.get("/metrics").text)
    with socket.create_connection(("127.0.0.1", exporter.port), timeout=10) as s:
        f = s.makefile("rb")
        for i in range(100):  # keep-alive: 100 requests on one connection
            body = json.dumps({"events": rows[i : i + 1]}).encode()
            s.sendall(
                b"POST /v1/models/credit-risk/predictions HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
            status = f.readline()
            assert status.startswith(b"HTTP/1.1 200"), status
            length = 0
            while (line := f.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            assert json.loads(f.read(length)) == {"accepted": 1, "rejected": 0}
    # chunked request body, with Expect: 100-continue
    body = json.dumps({"events": rows[100:150]}).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + 100]), body[i : i + 100])
                      for i in range(0, len(body), 100)) + b"0\r\n\r\n"  # fmt: skip
    with socket.create_connection(("127.0.0.1", exporter.port), timeout=10) as s:
        s.sendall(
            b"POST /v1/models/credit-risk/predictions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(chunks)
        data = b""
        while d := s.recv(65536):
            data += d
    assert status_of(data) == 200 and json.loads(body_of(data))["accepted"] == 50
    after = parse_metrics(exporter.get("/metrics").text)
    key = ("mlmon_ingest_events_total", (("model", MODEL),))
    assert after[key] - before.get(key, 0) == 150
    head = raw_call(exporter.port, "HEAD", "/healthz")
    assert head.startswith(b"HTTP/1.1 200") and body_of(head) == b""


def test_oversized_bodies_are_refused_unread_and_counted(served):
    _, exporter = served
    before = parse_metrics(exporter.get("/metrics").text)
    big = b'{"events": [' + b" " * 250_000 + b"]}"
    raw = raw_call(exporter.port, "POST", "/v1/models/credit-risk/predictions", big)
    assert status_of(raw) == 413
    doc = json.loads(body_of(raw))
    assert doc["reason"] == "body_too_large" and "200000" in doc["error"]
    # chunked, growing past the limit
    with socket.create_connection(("127.0.0.1", exporter.port), timeout=10) as s:
        s.sendall(
            b"POST /v1/models/credit-risk/labels HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"%x\r\n%s\r\n" % (50_000, b" " * 50_000) for _ in range(5))
        )
        data = b""
        while d := s.recv(65536):
            data += d
    assert status_of(data) == 413
    after = parse_metrics(exporter.get("/metrics").text)
    for endpoint in ("predictions", "labels"):
        key = (
            "mlmon_ingest_rejected_requests_total",
            (("endpoint", endpoint), ("reason", "body_too_large")),
        )
        assert after[key] == before[key] + 1


def test_other_routes_go_through_the_app(served):
    _, exporter = served
    models = json.loads(body_of(raw_call(exporter.port, "GET", "/v1/models")))
    assert [m["name"] for m in models["models"]] == [MODEL]
    raw = raw_call(exporter.port, "GET", "/nowhere")
    assert status_of(raw) == 404 and json.loads(body_of(raw))["reason"] == "not_found"
    raw = raw_call(exporter.port, "PUT", "/v1/models/credit-risk/thresholds", b"{}")
    assert status_of(raw) == 403  # no admin token configured: the admin API is off
    raw = raw_call(exporter.port, "GET", "/v1/models/credit%2Drisk/stats")
    assert status_of(raw) == 200 and json.loads(body_of(raw))["model"] == MODEL
    raw = raw_call(exporter.port, "POST", "/v1/models/no%20such/predictions", b"{}")
    assert status_of(raw) == 404 and "'no such'" in json.loads(body_of(raw))["error"]
    raw = raw_call(exporter.port, "GET", "/v1/models/credit-risk/predictions")
    assert status_of(raw) == 405


def test_hostile_bytes_get_4xx_and_the_server_keeps_serving(served):
    _, exporter = served
    rng = random.Random(5)
    cases = [
        b"\r\n\r\n",
        b"POST /metrics SPDY/3\r\n\r\n",
        b"POST /v1/models/credit-risk/predictions HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        b"POST /v1/models/credit-risk/predictions HTTP/1.1\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /v1/models/credit-risk/predictions HTTP/1.1\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nq\r\n",
        b"GET / HTTP/1.1\r\nX: " + b"y" * 70_000 + b"\r\n\r\n",
    ] + [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200))) for _ in range(100)]
    seen = set()
    for raw in cases:
        data = send_raw(exporter.port, raw)
        if data:
            seen.add(status_of(data))
    assert seen and all(400 <= c < 500 for c in seen), seen
    assert {400, 431} <= seen
    assert exporter.get("/readyz").status_code == 200
    assert "Traceback" not in exporter.log.read_text()


def test_a_body_that_does_not_arrive_whole_is_not_applied(served):
    """An upload cut off by its sender, or whose chunked framing is refused part-way,
    applies nothing: its events were never all there."""
    _, exporter = served
    rows = synthetic.without_labels(synthetic.events(synthetic.credit_spec(), 5, seed=6))
    lines = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    before = parse_metrics(exporter.get("/metrics").text)
    path = b"/v1/models/credit-risk/predictions"
    head = b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
    cut = head + b"Content-Length: 100000\r\n\r\n" + lines[: len(lines) // 2]
    chunked = head + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\nZZ\r\n" % (len(lines), lines)
    for raw in (cut, chunked):
        with socket.create_connection(("127.0.0.1", exporter.port), timeout=5) as s:
            s.sendall(raw)
            time.sleep(0.3)
    after = parse_metrics(exporter.get("/metrics").text)
    key = ("mlmon_ingest_events_total", (("model", MODEL),))
    assert after.get(key, 0) == before.get(key, 0)


def test_pipelining_is_bounded(served):
    """A client that pipelines thousands of requests without reading is refused past 16
    queued requests (400, the connection closes) instead of having thousands of requests
    queued for it; the server keeps serving."""
    _, exporter = served
    with socket.create_connection(("127.0.0.1", exporter.port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 5_000)
        data = b""
        with contextlib.suppress(OSError):
            while chunk := s.recv(65536):
                data += chunk
    assert data.count(b"HTTP/1.1 200") <= 16 and b"HTTP/1.1 400" in data, data[:300]
    assert exporter.get("/healthz").status_code == 200
