"""Every input bounded, against real `mlmon serve` processes on 127.0.0.1: slow and idle
clients are closed on time and cannot lock out health checks, scrapes or proxied calls; an
expensive request does not stall the others; compressed bombs and oversized ids and groups
cost bounded memory and change nothing."""

from __future__ import annotations

import contextlib
import gzip
import json
import resource
import socket
import threading
import time

import pytest
import tfserving
from helpers import Exporter, make_env, parse_metrics, raw_call, status_of, wait_until
from mlmon.demo import synthetic

pytestmark = pytest.mark.integration

MODEL = "credit-risk"
FEATURES = ["age", "income", "debt_ratio", "credit_lines", "months_employed", "country", "channel"]
HEADER_TIMEOUT = 4.0
FLOOD = 1_100
NOFILE = 1_024


def _exporter_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """An exporter in proxy mode whose open-file limit is 1,024, with short timeouts."""
    tmp = tmp_path_factory.mktemp("limits")
    env = make_env(tmp, synthetic.credit_spec(), n_train=3_000)
    upstream = tfserving.serve(0)
    up = upstream.server_address[1]
    timeouts = f"  header_timeout: {HEADER_TIMEOUT}s\n  body_timeout: 2s\n  idle_timeout: 2s\n"
    cfg = env.config_path
    cfg.write_text(
        cfg.read_text()
        + "server:\n"
        + timeouts
        + f"proxy:\n  upstream: http://127.0.0.1:{up}\n"
        + timeouts
        + f"  models:\n    {MODEL}:\n      inputs: [{', '.join(FEATURES)}]\n"
    )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 3 * FLOOD + 500)), hard))
    exporter = Exporter(cfg, ["--proxy.listen-address", "127.0.0.1:0"], preexec_fn=_exporter_nofile)
    yield exporter
    exporter.stop()
    upstream.shutdown()


def _proxied_body() -> bytes:
    return json.dumps({"instances": [[30, 1000.0, 0.2, 1, 12, "DE", "web"]]}).encode()


def _answers_in_time(exporter: Exporter, within: float = 2.0) -> dict[str, float]:
    """Seconds each of /healthz, /metrics and a proxied call took; each must answer 200
    within ``within`` seconds on a fresh connection."""
    took = {}
    for name, port, method, path, body in (
        ("healthz", exporter.port, "GET", "/healthz", b""),
        ("metrics", exporter.port, "GET", "/metrics", b""),
        ("proxied", exporter.proxy_port, "POST", f"/v1/models/{MODEL}:predict", _proxied_body()),
    ):
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=within) as s:
            head = (
                f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            s.sendall(head.encode() + body)
            data = b""
            with contextlib.suppress(TimeoutError):
                while chunk := s.recv(65536):
                    data += chunk
        took[name] = time.monotonic() - t0
        assert data.startswith(b"HTTP/1.1 200"), (name, data[:200])
        assert took[name] < within, (name, took[name])
    return took


def _closed(sock: socket.socket) -> bool:
    """Whether the server has closed this connection (EOF, reset, or a 408 then EOF)."""
    try:
        while data := sock.recv(65536):
            if not data.startswith(b"HTTP/1.1 408"):
                return False
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_a_slow_client_flood_is_closed_in_time_and_locks_no_one_out(guarded):
    """1,100 connections to each server send half a request head and stop; a few others
    trickle a byte at a time. With the open-file limit at 1,024, the oldest waiting
    connections are evicted to make room, every flood connection is closed within
    header_timeout + 5 s of its opening, and /healthz, /metrics and a proxied call answer
    within 2 s during the flood and after it."""
    exporter = guarded
    before = parse_metrics(exporter.get("/metrics").text)
    flood: list[tuple[float, socket.socket]] = []
    stop = threading.Event()
    trickled: list[float] = []  # how long each trickling client was kept

    def trickle(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            opened = time.monotonic()
            try:
                for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 100:
                    s.sendall(bytes([byte]))
                    if stop.wait(0.3):
                        return
            except OSError:  # closed by the server
                trickled.append(time.monotonic() - opened)

    tricklers = [
        threading.Thread(target=trickle, args=(port,), daemon=True)
        for port in (exporter.port, exporter.proxy_port)
        for _ in range(3)
    ]
    for t in tricklers:
        t.start()
    try:
        for i in range(FLOOD):
            for port in (exporter.port, exporter.proxy_port):
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(b"POST /v1/models/credit-risk/predictions HTTP/1.1\r\nHost: x\r\nConte")
                s.setblocking(False)
                flood.append((time.monotonic(), s))
            if i % 275 == 0:
                _answers_in_time(exporter)  # during the flood
        _answers_in_time(exporter)
        deadline = flood[-1][0] + HEADER_TIMEOUT + 5
        open_ = list(flood)
        while open_ and time.monotonic() < deadline:
            time.sleep(0.2)
            now = time.monotonic()
            still = []
            for opened, s in open_:
                if _closed(s):
                    assert now - opened < HEADER_TIMEOUT + 5 + 0.5
                else:
                    still.append((opened, s))
            open_ = still
        assert not open_, f"{len(open_)} of {2 * FLOOD} flood connections still open"
        _answers_in_time(exporter)  # after the flood
        for t in tricklers:
            t.join(HEADER_TIMEOUT + 6)
        assert len(trickled) == len(tricklers) and max(trickled) < HEADER_TIMEOUT + 5, trickled
    finally:
        stop.set()
        for _, s in flood:
            s.close()
    after = parse_metrics(exporter.get("/metrics").text)

    def grew(server: str, reason: str) -> float:
        key = ("mlmon_http_connections_closed_total", (("reason", reason), ("server", server)))
        return after.get(key, 0) - before.get(key, 0)

    for server in ("exporter", "proxy"):
        assert grew(server, "evicted") > 0, server  # the cap (under 1,024 files) was reached
        assert grew(server, "header_timeout") > 0, server
        assert grew(server, "evicted") + grew(server, "header_timeout") >= FLOOD
    assert "Traceback" not in exporter.log.read_text()


def test_a_silent_body_and_an_idle_connection_are_closed(guarded):
    exporter = guarded
    for port in (exporter.port, exporter.proxy_port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(
                b"POST /v1/models/credit-risk/labels HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: 100\r\n\r\n{"
            )
            t0 = time.monotonic()
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            assert 1.5 < time.monotonic() - t0 < 2 + 2, "body_timeout is 2 s"
            assert data.startswith(b"HTTP/1.1 408")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            first = s.recv(65536)
            t0 = time.monotonic()
            while s.recv(65536):
                pass
            assert first.startswith(b"HTTP/1.1 ")
            assert 1.5 < time.monotonic() - t0 < 2 + 2, "idle_timeout is 2 s"


def test_a_client_that_stops_reading_is_dropped(tmp_path):
    """Pipelined scrapes (15 of ~400 KB each) whose answers are never read fill the
    server's send buffer; the connection is dropped body_timeout (2 s) later and counted
    as send_timeout."""
    spec = synthetic.wide_spec(n_numeric=150)
    env = make_env(tmp_path, spec, n_train=2_000)
    cfg = env.config_path
    cfg.write_text(cfg.read_text() + "server:\n  body_timeout: 2s\n")
    exporter = Exporter(cfg)
    try:
        exporter.post(MODEL, synthetic.without_labels(synthetic.events(spec, 20, seed=2)))
        before = parse_metrics(exporter.get("/metrics").text)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", exporter.port))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 15)

        def dropped() -> bool:
            m = parse_metrics(exporter.get("/metrics").text)
            key = ("mlmon_http_connections_closed_total", (("reason", "send_timeout"),
                                                           ("server", "exporter")))  # fmt: skip
            return m.get(key, 0) - before.get(key, 0) == 1

        wait_until(dropped, 15, "the stalled connection to be dropped")
        s.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            while s.recv(1 << 20):  # what was in flight, then the end of the connection
                pass
        s.close()
    finally:
        exporter.stop()


def _healthz_delays(port: int, stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        t0 = time.monotonic()
        raw_call(port, "GET", "/healthz")
        out.append(time.monotonic() - t0)
        time.sleep(0.02)


def test_an_expensive_request_does_not_stall_the_others(small_env):
    """Bodies of 10 KB that expand to nearly 10 MB of NaN lines (NDJSON and JSON), sent
    four at a time, are refused (the batch limit), counted, and delay a concurrent /healthz
    by less than a second; an integer of 5,000 digits is a counted 400, not a 500."""
    exporter = Exporter(small_env.config_path)
    try:
        nan_lines = gzip.compress(b"NaN\n" * 2_500_000, 9)
        nan_array = gzip.compress(b'{"events": [' + b"NaN," * 2_400_000 + b"NaN]}", 9)
        assert len(nan_lines) < 20_000 and len(nan_array) < 20_000
        delays: list[float] = []
        stop = threading.Event()
        poller = threading.Thread(target=_healthz_delays, args=(exporter.port, stop, delays))
        poller.start()
        statuses = []

        def bomb(body: bytes, ctype: str) -> None:
            raw = raw_call(
                exporter.port, "POST", f"/v1/models/{MODEL}/predictions", body,
                {"Content-Type": ctype, "Content-Encoding": "gzip"},
            )  # fmt: skip
            statuses.append(status_of(raw))

        senders = [
            threading.Thread(target=bomb, args=(body, ctype))
            for body, ctype in [
                (nan_lines, "application/x-ndjson"),
                (nan_array, "application/json"),
            ]
            * 4
        ]
        for t in senders:
            t.start()
        for t in senders:
            t.join(60)
        time.sleep(0.2)
        stop.set()
        poller.join(10)
        assert statuses == [413] * 8
        assert len(delays) > 5 and max(delays) < 1.0, max(delays)
        digits = b'{"features": {"age": ' + b"7" * 5_000 + b'}, "prediction": 1}'
        raw = raw_call(
            exporter.port, "POST", f"/v1/models/{MODEL}/predictions", digits,
            {"Content-Type": "application/json"},
        )  # fmt: skip
        assert status_of(raw) == 400
        assert json.loads(raw.split(b"\r\n\r\n", 1)[1])["reason"] == "malformed_body"
        m = parse_metrics(exporter.get("/metrics").text)
        key = "mlmon_ingest_rejected_requests_total"
        labels = (("endpoint", "predictions"), ("reason", "batch_too_large"))
        assert m[(key, labels)] == 8
        labels = (("endpoint", "predictions"), ("reason", "malformed_body"))
        assert m[(key, labels)] == 1
        assert "Traceback" not in exporter.log.read_text()
    finally:
        exporter.stop()


def _peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_gzip_bomb_through_the_proxy_costs_bounded_memory(guarded):
    """2 MiB of gzip that would expand to about 2 GB, sent through the proxy three times:
    forwarded, its decompression for capture stopped at proxy.max_capture_bytes (the
    upstream refuses the call, so each counts as one failed inference whose rows cannot be
    read), and neither the exporter nor the proxy ever holds more than 512 MiB."""
    exporter = guarded
    body = _gzip_bomb(2 * 1024 * 1024)
    before = parse_metrics(exporter.get("/metrics").text)
    for _ in range(3):
        raw_call(
            exporter.proxy_port, "POST", f"/v1/models/{MODEL}:predict", body,
            {"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )  # fmt: skip

    def handled() -> bool:
        m = parse_metrics(exporter.get("/metrics").text)
        keys = [
            ("mlmon_proxy_capture_failures_total", (("reason", "too_large"),)),
            ("mlmon_proxy_captured_requests_total", (("protocol", "kserve_v1"),)),
        ]
        return sum(m.get(k, 0) - before.get(k, 0) for k in keys) == 3

    wait_until(handled, 20, "the three calls to be captured or refused")
    pids = [exporter.proc.pid, *_children(exporter.proc.pid)]
    for pid in pids:
        assert _peak_rss_mib(pid) < 512, (pid, _peak_rss_mib(pid))


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


def _gzip_bomb(size: int) -> bytes:
    """About ``size`` bytes of gzip that expand a thousandfold (zeros), made in pieces."""
    import zlib

    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    out = []
    n = 0
    while n < size:
        piece = c.compress(zeros)
        out.append(piece)
        n += len(piece)
    out.append(c.flush())
    return b"".join(out)


def test_the_upstream_pool_is_capped(tmp_path):
    """Ten slow calls at once through a proxy whose pool holds two connections: the model
    server never sees more than two connections, and every call is answered."""
    import socketserver
    from concurrent.futures import ThreadPoolExecutor

    state = {"open": 0, "most": 0}
    lock = threading.Lock()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            with lock:
                state["open"] += 1
                state["most"] = max(state["most"], state["open"])
            try:
                while line := self.rfile.readline():
                    length = 0
                    while line not in (b"\r\n", b""):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":")[1])
                        line = self.rfile.readline()
                    self.rfile.read(length)
                    time.sleep(0.3)
                    body = b'{"predictions": [1]}'
                    self.wfile.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
            finally:
                with lock:
                    state["open"] -= 1

    class Upstream(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    upstream = Upstream(("127.0.0.1", 0), Handler)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    env = make_env(tmp_path, synthetic.credit_spec(), n_train=2_000)
    cfg = env.config_path
    cfg.write_text(
        cfg.read_text()
        + f"proxy:\n  upstream: http://127.0.0.1:{upstream.server_address[1]}\n"
        + "  max_upstream_connections: 2\n"
    )
    exporter = Exporter(cfg, ["--proxy.listen-address", "127.0.0.1:0"])
    try:

        def call(_: int) -> int:
            return status_of(
                raw_call(exporter.proxy_port, "POST", f"/v1/models/{MODEL}:predict",
                         _proxied_body())
            )  # fmt: skip

        with ThreadPoolExecutor(10) as pool:
            statuses = list(pool.map(call, range(10)))
        assert statuses == [200] * 10
        assert state["most"] == 2, state
    finally:
        exporter.stop()
        upstream.shutdown()


def test_a_trickled_body_cannot_lock_anyone_out(tmp_path):
    """Connections that trickle a body a byte at a time (each byte restarting
    body_timeout) fill the cap; a health check still gets in by evicting the oldest."""
    env = make_env(tmp_path, synthetic.credit_spec(), n_train=2_000)
    cfg = env.config_path
    cfg.write_text(cfg.read_text() + "server:\n  max_connections: 16\n  body_timeout: 4s\n")
    exporter = Exporter(cfg)
    socks = []
    try:
        for _ in range(16):
            s = socket.create_connection(("127.0.0.1", exporter.port), timeout=5)
            s.sendall(
                b"POST /v1/models/credit-risk/predictions HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n["
            )
            socks.append(s)
        for _ in range(3):
            time.sleep(1)
            for s in socks:
                with contextlib.suppress(OSError):
                    s.sendall(b" ")
            _answers_healthz(exporter)
    finally:
        for s in socks:
            s.close()
        exporter.stop()


def _answers_healthz(exporter: Exporter) -> None:
    with socket.create_connection(("127.0.0.1", exporter.port), timeout=2) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:100]
