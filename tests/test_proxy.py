"""The proxy in front of a model server speaking TensorFlow Serving's REST payloads, with a
real `mlmon serve --upstream` process: responses are the upstream's (status, end-to-end
headers and body, re-framed by the proxy's own HTTP server); every
row sent becomes one event; failures of the upstream are passed through or answered with
502/504 and counted."""

from __future__ import annotations

import json
import random
import socket
import time
from pathlib import Path

import pytest
import tfserving
from helpers import (
    Exporter,
    free_port,
    make_env,
    message_of,
    parse_metrics,
    raw_call,
    send_raw,
    status_of,
    wait_until,
)
from mlmon.demo import synthetic

pytestmark = pytest.mark.integration

FEATURES = ["age", "income", "debt_ratio", "credit_lines", "months_employed", "country", "channel"]
MODEL = "credit-risk"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("proxy")
    env = make_env(
        tmp,
        synthetic.credit_spec(),
        n_train=5_000,
        model_extra={"sensitive_attributes": ["gender"]},
    )
    upstream = tfserving.serve(0)
    up_port = upstream.server_address[1]
    cfg = env.config_path
    cfg.write_text(
        cfg.read_text()
        + f"proxy:\n  upstream: http://127.0.0.1:{up_port}\n  timeout: 1s\n"
        + "  connect_timeout: 1s\n"
        + f"  models:\n    {MODEL}:\n      inputs: [{', '.join(FEATURES)}]\n"
    )
    exporter = Exporter(cfg, ["--proxy.listen-address", "127.0.0.1:0"])
    assert exporter.proxy_port is not None, exporter.log.read_text()
    yield exporter, up_port
    exporter.stop()
    upstream.shutdown()


def metrics(exporter) -> dict:
    return parse_metrics(exporter.get("/metrics").text)


def value(m: dict, name: str, **labels) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def failures_counted(exporter, reason: str, n: int) -> dict:
    """The metrics, once ``n`` failed inferences with ``reason`` are counted."""

    def check():
        m = metrics(exporter)
        key = dict(model=MODEL, version="unversioned", reason=reason)
        return m if value(m, "mlmon_inference_failures_total", **key) == n else None

    return wait_until(check, 10, f"{n} {reason} failures to be counted")


def payloads(rng: random.Random, rows: list[dict]):
    """The documented TF Serving request shapes for the same rows."""
    named = [{k: r[k] for k in FEATURES} for r in rows]
    kind = rng.choice(["rows", "objects", "columns", "proba"])
    if kind == "rows":
        return {"instances": [[r[k] for k in FEATURES] for r in rows]}
    if kind == "objects":
        return {"instances": named}
    if kind == "columns":
        return {"inputs": {k: [r[k] for r in rows] for k in FEATURES}}
    return {"signature_name": "proba", "instances": named}


def test_responses_are_the_upstreams_and_every_row_is_an_event(stack):
    exporter, up_port = stack
    rng = random.Random(7)
    rows = synthetic.events(synthetic.credit_spec(), 600, seed=11)
    sent = 0
    predicted = {"0": 0, "1": 0}
    sums = dict.fromkeys(FEATURES[:5], 0.0)
    countries: dict[str, int] = {}
    i = 0
    n_requests = 0
    while i < len(rows):
        batch = [r["features"] for r in rows[i : i + rng.randint(1, 30)]]
        i += len(batch)
        doc = payloads(rng, batch)
        body = json.dumps(doc).encode()
        headers = {"Content-Type": "application/json"}
        if rng.random() < 0.3:
            headers["X-Test-Chunked"] = "1"
        path = f"/v1/models/{MODEL}:predict"
        if rng.random() < 0.3:
            path = f"/v1/models/{MODEL}/versions/7:predict"
        direct = raw_call(up_port, "POST", path, body, headers)
        proxied = raw_call(exporter.proxy_port, "POST", path, body, headers)
        assert message_of(proxied) == message_of(direct)
        n_requests += 1
        out = (
            json.loads(direct.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b""))
            if ("X-Test-Chunked" not in headers)
            else None
        )
        if out is not None:
            preds = out.get("predictions", out.get("outputs"))
            for p in preds:
                cls = str(int(p[1] >= 0.5)) if isinstance(p, list) else str(p)
                predicted[cls] += 1
        sent += len(batch)
        for r in batch:
            for k in sums:
                sums[k] += r[k]
            countries[r["country"]] = countries.get(r["country"], 0) + 1
    assert n_requests > 20
    wait_until(
        lambda: value(metrics(exporter), "mlmon_ingest_events_total", model=MODEL) == sent,
        20,
        "every proxied row to be an event",
    )
    m = metrics(exporter)
    for k, total in sums.items():
        got = sum(
            value(m, "mlmon_feature_value_sum", model=MODEL, version=v, feature=k)
            for v in ("unversioned", "7")
        )
        assert got == pytest.approx(total, rel=1e-9), k
    for c, n in countries.items():
        got = sum(
            value(m, "mlmon_feature_category_total", model=MODEL, version=v, feature="country",
                  category=c)
            for v in ("unversioned", "7")
        )  # fmt: skip
        assert got == n, c
    classes = {
        c: sum(
            value(m, "mlmon_prediction_class_total", model=MODEL, version=v, **{"class": c})
            for v in ("unversioned", "7")
        )
        for c in ("0", "1")
    }
    assert sum(classes.values()) == sent
    assert classes["1"] >= predicted["1"] and classes["0"] >= predicted["0"]
    assert value(m, "mlmon_inference_requests_total", model=MODEL, version="7") > 0
    assert value(m, "mlmon_proxy_requests_total", protocol="kserve_v1", code="200") == n_requests
    assert value(m, "mlmon_proxy_captured_requests_total", protocol="kserve_v1") == n_requests
    failures = {k: v for (n, k), v in m.items() if n == "mlmon_proxy_capture_failures_total"}
    assert sum(failures.values()) == 0, failures


def test_other_traffic_is_forwarded_not_captured(stack):
    exporter, up_port = stack
    before = metrics(exporter)
    for method, path in (("GET", f"/v1/models/{MODEL}"), ("GET", "/nowhere")):
        assert message_of(raw_call(exporter.proxy_port, method, path), method) == message_of(
            raw_call(up_port, method, path), method
        )
    after = metrics(exporter)
    assert value(after, "mlmon_proxy_requests_total", protocol="none", code="200") == (
        value(before, "mlmon_proxy_requests_total", protocol="none", code="200") + 2
    )
    assert value(after, "mlmon_ingest_events_total", model=MODEL) == value(
        before, "mlmon_ingest_events_total", model=MODEL
    )


def test_upstream_errors_pass_through_and_count_as_failed_inferences(stack):
    exporter, up_port = stack
    body = json.dumps({"instances": [[30, 1, 0.2, 1, 1, "DE", "web"]] * 3}).encode()
    before = metrics(exporter)
    for status, reason in ((500, "model_error"), (503, "overloaded"), (400, "invalid_input")):
        h = {"X-Test-Status": str(status)}
        path = f"/v1/models/{MODEL}:predict"
        direct = raw_call(up_port, "POST", path, body, h)
        assert direct.startswith(f"HTTP/1.1 {status}".encode())
        assert message_of(raw_call(exporter.proxy_port, "POST", path, body, h)) == message_of(
            direct
        )

        def counted(reason=reason):
            m = metrics(exporter)
            key = dict(model=MODEL, version="unversioned", reason=reason)
            return (
                value(m, "mlmon_inference_failures_total", **key)
                == value(before, "mlmon_inference_failures_total", **key) + 3
            )

        wait_until(counted, 10, f"three {reason} failures")
    m = metrics(exporter)
    assert value(m, "mlmon_proxy_requests_total", protocol="kserve_v1", code="500") == 1


def test_a_slow_upstream_gets_a_504_and_is_counted(stack):
    exporter, _ = stack
    body = json.dumps({"instances": [[30, 1, 0.2, 1, 1, "DE", "web"]]}).encode()
    t0 = time.monotonic()
    resp = raw_call(
        exporter.proxy_port, "POST", f"/v1/models/{MODEL}:predict", body, {"X-Test-Sleep": "3"}
    )
    assert time.monotonic() - t0 < 2.5  # proxy.timeout is 1s
    head, payload = resp.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 504 Gateway Timeout")
    doc = json.loads(payload)
    assert doc["reason"] == "timeout" and "within 1.0s" in doc["error"]
    m = failures_counted(exporter, "timeout", 1)
    assert value(m, "mlmon_proxy_upstream_failures_total", reason="timeout") == 1
    assert value(m, "mlmon_proxy_requests_total", protocol="kserve_v1", code="504") == 1
    # the next call goes through on a fresh connection
    ok = raw_call(exporter.proxy_port, "POST", f"/v1/models/{MODEL}:predict", body)
    assert ok.startswith(b"HTTP/1.1 200")


def test_an_unreachable_upstream_gets_a_502_with_a_clear_body(tmp_path):
    env = make_env(tmp_path, synthetic.credit_spec(), n_train=2_000)
    dead = free_port()  # nothing listens there
    exporter = Exporter(
        env.config_path, ["--upstream", f"http://127.0.0.1:{dead}", "--proxy.listen-address",
                          "127.0.0.1:0"]
    )  # fmt: skip
    try:
        body = json.dumps({"instances": [[30, 1, 0.2, 1, 1, "DE", "web"]] * 2}).encode()
        for _ in range(3):
            resp = raw_call(exporter.proxy_port, "POST", f"/v1/models/{MODEL}:predict", body)
            head, payload = resp.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 502 Bad Gateway")
            doc = json.loads(payload)
            assert doc["reason"] == "unreachable"
            assert "refused" in doc["error"].lower()
            assert doc["upstream"] == f"http://127.0.0.1:{dead}"
        m = failures_counted(exporter, "upstream_unavailable", 6)
        assert value(m, "mlmon_proxy_upstream_failures_total", reason="unreachable") == 3
        assert value(m, "mlmon_proxy_requests_total", protocol="kserve_v1", code="502") == 3
        assert exporter.get("/healthz").status_code == 200  # the exporter itself is fine
    finally:
        exporter.stop()


def test_unreadable_payloads_are_forwarded_unchanged_and_counted(stack):
    exporter, up_port = stack
    before = metrics(exporter)
    path = f"/v1/models/{MODEL}:predict"
    for body in (b"{not json", b'{"instances": [[1, 2]]}', b'{"rows": []}'):
        assert message_of(raw_call(exporter.proxy_port, "POST", path, body)) == message_of(
            raw_call(up_port, "POST", path, body)
        )
    # an unknown model in the path: forwarded, not captured
    other = "/v1/models/other:predict"
    body = json.dumps({"instances": [[30, 1, 0.2, 1, 1, "DE", "web"]]}).encode()
    assert message_of(raw_call(exporter.proxy_port, "POST", other, body)) == message_of(
        raw_call(up_port, "POST", other, body)
    )

    def grew(reason: str, n: int) -> bool:
        m = metrics(exporter)
        return (
            value(m, "mlmon_proxy_capture_failures_total", reason=reason)
            == value(before, "mlmon_proxy_capture_failures_total", reason=reason) + n
        )

    # the upstream answers 400 to the first two: those are failed inferences, not capture
    # failures; a 400 whose request cannot be read counts one failed inference
    wait_until(lambda: grew("unknown_model", 1), 10, "the unknown model to be counted")
    m = metrics(exporter)
    assert value(m, "mlmon_inference_failures_total", model=MODEL, version="unversioned",
                 reason="invalid_input") >= 3  # fmt: skip


def test_keep_alive_and_expect_continue(stack):
    """Many requests on one client connection (pooled upstream connections), and a client
    that waits for 100 Continue before its body."""
    import http.client

    exporter, _ = stack
    body = json.dumps({"instances": [[30, 1, 0.2, 1, 1, "DE", "web"]] * 2}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", exporter.proxy_port, timeout=10)
    for _ in range(50):
        conn.request("POST", f"/v1/models/{MODEL}:predict", body)
        r = conn.getresponse()
        assert r.status == 200 and len(json.loads(r.read())["predictions"]) == 2
    conn.close()
    with socket.create_connection(("127.0.0.1", exporter.proxy_port), timeout=10) as s:
        s.sendall(
            (
                f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\n"
                f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
            ).encode()
        )
        assert s.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(body)
        data = b""
        while b'"predictions"' not in data or not data.rstrip().endswith(b"}"):
            data += s.recv(65536)
        assert data.startswith(b"HTTP/1.1 200 OK")


def test_hostile_bytes_never_take_the_proxy_down(stack):
    """Garbage, truncated heads, smuggling attempts, oversized heads and broken chunked
    bodies: each gets a 4xx or a closed connection, and the proxy keeps serving."""
    exporter, _ = stack
    rng = random.Random(99)
    path = f"/v1/models/{MODEL}:predict"
    cases = [
        b"\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"GET / SPDY/3\r\n\r\n",
        b"POST " + path.encode() + b" HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"POST " + path.encode() + b" HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"POST " + path.encode() + b" HTTP/1.1\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST " + path.encode() + b" HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST " + path.encode() + b" HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
        b"POST " + path.encode() + b' HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"inst',
        b"POST " + path.encode() + b" HTTP/1.1\r\nbad header line\r\n\r\n",
    ]
    cases += [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))) for _ in range(150)]
    cases += [
        b"POST " + path.encode() + b" HTTP/1.1\r\n" + bytes(rng.getrandbits(8) for _ in range(60))
        + b"\r\n\r\n"
        for _ in range(50)
    ]  # fmt: skip
    statuses = set()
    for raw in cases:
        data = send_raw(exporter.proxy_port, raw)
        if data:
            statuses.add(data.split(b" ", 2)[1])
    assert statuses <= {b"400", b"431", b"502", b"504", b"200", b"501"}, statuses
    assert {b"400", b"431"} <= statuses
    body = json.dumps({"instances": [[30, 1, 0.2, 1, 1, "DE", "web"]]}).encode()
    assert raw_call(exporter.proxy_port, "POST", path, body).startswith(b"HTTP/1.1 200")
    log = exporter.log.read_text()
    assert "Traceback" not in log, log[-3000:]


def _children(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    with open(path) as f:
        return [int(x) for x in f.read().split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_proxy_lives_and_dies_with_the_exporter(tmp_path):
    """The proxy runs in its own process: killing the exporter with SIGKILL takes the proxy
    down within seconds; killing the proxy stops the exporter (which snapshots first), so
    the pod restarts whole instead of running half."""
    import os
    import signal
    import time

    env = make_env(tmp_path, synthetic.credit_spec(), n_train=2_000)
    upstream = tfserving.serve(0)
    args = ["--upstream", f"http://127.0.0.1:{upstream.server_address[1]}",
            "--proxy.listen-address", "127.0.0.1:0"]  # fmt: skip
    try:
        exporter = Exporter(env.config_path, args)
        (child,) = _children(exporter.proc.pid)
        os.kill(exporter.proc.pid, signal.SIGKILL)
        exporter.proc.wait(10)
        wait_until(lambda: not _alive(child), 10, "the proxy process to exit")
        port = exporter.proxy_port

        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
            except OSError:
                return True
            return False

        wait_until(refused, 10, "the dead proxy's port to refuse connections")

        snapshots = tmp_path / "snapshots"
        cfg = env.config_path
        cfg.write_text(cfg.read_text() + f"server:\n  snapshot_dir: {snapshots}\n")
        exporter = Exporter(cfg, args)
        body = json.dumps({"instances": [[30, 1, 0.2, 1, 1, "DE", "web"]]}).encode()
        raw_call(exporter.proxy_port, "POST", f"/v1/models/{MODEL}:predict", body)
        (child,) = _children(exporter.proc.pid)
        os.kill(child, signal.SIGKILL)
        t0 = time.monotonic()
        assert exporter.proc.wait(15) is not None
        assert time.monotonic() - t0 < 15
        assert "the proxy process exited" in exporter.log.read_text()
        assert list(snapshots.glob("*.npz")), "the exporter snapshots before it stops"
    finally:
        upstream.shutdown()


def test_bodies_over_the_capture_limit_are_forwarded_not_captured(tmp_path):
    """proxy.max_capture_bytes limits capture only: a larger request goes through
    unchanged, its answer comes back unchanged, and the skipped capture is counted."""
    env = make_env(tmp_path, synthetic.credit_spec(), n_train=2_000)
    upstream = tfserving.serve(0)
    up_port = upstream.server_address[1]
    cfg = env.config_path
    cfg.write_text(
        cfg.read_text()
        + f"proxy:\n  upstream: http://127.0.0.1:{up_port}\n  max_capture_bytes: 2000\n"
        + f"  models:\n    {MODEL}:\n      inputs: [{', '.join(FEATURES)}]\n"
    )
    exporter = Exporter(cfg, ["--proxy.listen-address", "127.0.0.1:0"])
    try:
        rows = [r["features"] for r in synthetic.events(synthetic.credit_spec(), 400, seed=8)]
        big = json.dumps({"instances": [[r[k] for k in FEATURES] for r in rows]}).encode()
        small = json.dumps({"instances": [[r[k] for k in FEATURES] for r in rows[:3]]}).encode()
        assert len(big) > 20_000 and len(small) < 2000
        path = f"/v1/models/{MODEL}:predict"
        for body, chunked in ((big, ""), (big, "1"), (small, "")):
            h = {"X-Test-Chunked": chunked} if chunked else {}
            direct = raw_call(up_port, "POST", path, body, h)
            assert status_of(direct) == 200
            assert message_of(raw_call(exporter.proxy_port, "POST", path, body, h)) == message_of(
                direct
            )

        def counted() -> dict | None:
            m = metrics(exporter)
            ok = value(m, "mlmon_proxy_capture_failures_total", reason="too_large") == 2
            return m if ok and value(m, "mlmon_ingest_events_total", model=MODEL) == 3 else None

        m = wait_until(counted, 10, "two skipped captures and the small call's 3 rows")
        assert value(m, "mlmon_proxy_captured_requests_total", protocol="kserve_v1") == 1
    finally:
        exporter.stop()
        upstream.shutdown()


def test_the_proxy_process_reports_its_own_cpu_and_memory(stack):
    """mlmon_proxy_process_* describe the proxy's process, not the exporter's: its resident
    memory matches the kernel's VmRSS of that child process, and its CPU time grows with
    proxied traffic."""
    exporter, _ = stack
    (child,) = _children(exporter.proc.pid)
    status = Path(f"/proc/{child}/status").read_text()
    vm_rss = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
    m = metrics(exporter)
    rss = value(m, "mlmon_proxy_process_resident_memory_bytes")
    assert rss == pytest.approx(vm_rss * 1024, rel=0.2)
    assert rss != value(m, "process_resident_memory_bytes")
    before = value(m, "mlmon_proxy_process_cpu_seconds_total")
    body = json.dumps({"instances": [[30, 1, 0.2, 1, 1, "DE", "web"]] * 50}).encode()
    for _ in range(300):
        raw_call(exporter.proxy_port, "POST", f"/v1/models/{MODEL}:predict", body)
    after = value(metrics(exporter), "mlmon_proxy_process_cpu_seconds_total")
    assert after > before > 0
