"""HTTP parsing of the exporter and of the proxy, against real processes over sockets.

1. A differential test: a corpus of malformed and unusual request heads, each judged by two
   reference parsers — h11 (server role, 64 KiB incomplete-event limit) and httptools
   (llhttp, strict, without uvicorn's leniencies). A head either rejects is malformed and the
   server must refuse it (400/431/501/505 of its own, or a closed connection); a head both
   accept must be answered.
2. A regression test for response poisoning through the proxy: a request whose head hides a
   second request in its body is refused and never reaches the upstream, and 20 ordinary
   callers after it each get the response to their own request.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import h11
import httptools
import pytest
import tfserving
from helpers import Exporter, make_env, raw_call, status_of
from mlmon.demo import synthetic

pytestmark = pytest.mark.integration

MODEL = "credit-risk"
FEATURES = ["age", "income", "debt_ratio", "credit_lines", "months_employed", "country", "channel"]
HEAD_LIMIT = 64 * 1024
# What a server answers itself to a request it cannot parse.
REFUSALS = (400, 431, 501, 505)

# -- the reference parsers -----------------------------------------------------------------

UPGRADE = "upgrade"  # httptools hands the connection over: not a parse verdict, not compared


def h11_refusal(raw: bytes) -> str | None:
    """Why h11 (server role) refuses ``raw`` followed by EOF; None when it reads one complete
    request with its body. The bytes are fed in pieces, as a socket delivers them, so that
    the limit on an incomplete event (the head) applies."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_LIMIT)
    pieces = [raw[i : i + 1024] for i in range(0, len(raw), 1024)] + [b""]
    for piece in pieces:
        conn.receive_data(piece)
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as e:
                return f"h11: {e}"
            if isinstance(event, h11.EndOfMessage):
                return None
            if isinstance(event, h11.ConnectionClosed):
                return "h11: closed before a complete request"
            if event is h11.NEED_DATA:
                break
    return "h11: incomplete request"


class _Completion:
    def __init__(self) -> None:
        self.complete = False

    def on_message_complete(self) -> None:
        self.complete = True


def httptools_refusal(raw: bytes) -> str | None:
    """Why httptools (llhttp, strict) refuses ``raw``; None when it completes one request;
    `UPGRADE` for a request that upgrades the connection (CONNECT, `Upgrade:`)."""
    done = _Completion()
    parser = httptools.HttpRequestParser(done)
    try:
        parser.feed_data(raw)
    except httptools.HttpParserUpgrade:
        return UPGRADE
    except httptools.HttpParserError as e:
        if not done.complete:
            return f"httptools: {type(e).__name__}: {e}"
    return None if done.complete else "httptools: incomplete request"


def reference(raw: bytes) -> tuple[bool | None, str]:
    """(refused, why): refused when either parser refuses; None for an upgrade."""
    ht = httptools_refusal(raw)
    if ht == UPGRADE:
        return None, UPGRADE
    h = h11_refusal(raw)
    why = "; ".join(r for r in (h, ht) if r) or "h11 and httptools accept"
    return (h is not None or ht is not None), why


# -- the corpus ----------------------------------------------------------------------------


def corpus(get: bytes, post: bytes, body: bytes) -> list[tuple[str, bytes]]:
    """(name, raw request) pairs: `get` is a path answered to a GET, `post` one answered to
    a POST of ``body``. No request is followed by bytes beyond its own message."""
    half = len(body) // 2
    chunks = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (
        half,
        body[:half],
        len(body) - half,
        body[half:],
    )
    x = b"%x" % len(body)
    n = b"%d" % len(body)
    big = b"X-Big: " + b"a" * 20_000 + b"\r\n"
    huge = b"X-Huge: " + b"a" * 70_000 + b"\r\n"
    many = b"".join(b"X-H-%d: v\r\n" % i for i in range(90))  # tfserving takes 100
    g = b"GET {G} HTTP/1.1\r\nHost: x\r\n"  # a GET's head, less its end
    p = b"POST {P} HTTP/1.1\r\nHost: x\r\n{T}"  # a POST's head, less its framing and end
    cl = b"Content-Length: {N}\r\n"
    te = b"Transfer-Encoding: chunked\r\n"
    one = b"{X}\r\n{B}\r\n"  # the body as one chunk
    templates: list[tuple[str, bytes]] = [
        # valid, some of them unusual
        ("get", g + b"\r\n"),
        ("get http/1.0 without host", b"GET {G} HTTP/1.0\r\n\r\n"),
        ("get http/1.0 keep-alive", b"GET {G} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
        ("get connection close", g + b"Connection: close\r\n\r\n"),
        ("get query string", b"GET {G}?a=1&b=%20c HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("get absolute-form", b"GET http://x{G} HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("options asterisk", b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("get http/2.0 version", b"GET {G} HTTP/2.0\r\nHost: x\r\n\r\n"),
        ("header without space after colon", b"GET {G} HTTP/1.1\r\nHost:x\r\n\r\n"),
        ("empty host", b"GET {G} HTTP/1.1\r\nHost:\r\n\r\n"),
        ("tab in header value", g + b"X-A: a\tb\r\n\r\n"),
        ("obs-text in header value", g + b"X-A: caf\xe9\r\n\r\n"),
        ("empty header value", g + b"X-A:\r\n\r\n"),
        ("trailing whitespace in value", g + b"X-A: a \t \r\n\r\n"),
        ("header of 20 KB", g + big + b"\r\n"),
        ("90 headers", g + many + b"\r\n"),
        ("post", p + cl + b"\r\n{B}"),
        ("post http/1.0 without host", b"POST {P} HTTP/1.0\r\n{T}" + cl + b"\r\n{B}"),
        (
            "post mixed-case names",
            b"POST {P} HTTP/1.1\r\nhOsT: x\r\ncOnTeNt-LeNgTh: {N}\r\n\r\n{B}",
        ),
        ("content-length leading zeros", p + b"Content-Length: 000{N}\r\n\r\n{B}"),
        ("post chunked", p + te + b"\r\n{C}"),
        ("chunked http/1.0", b"POST {P} HTTP/1.0\r\n{T}" + te + b"\r\n{C}"),
        ("Transfer-Encoding: Chunked", p + b"Transfer-Encoding: Chunked\r\n\r\n{C}"),
        ("Transfer-Encoding with spaces", p + b"Transfer-Encoding:   chunked  \r\n\r\n{C}"),
        ("chunk extension", p + te + b"\r\n{X};name=value\r\n{B}\r\n0\r\n\r\n"),
        ("quoted chunk extension", p + te + b'\r\n{X};a="b c"\r\n{B}\r\n0;z=1\r\n\r\n'),
        ("chunk size leading zeros", p + te + b"\r\n000" + one + b"0\r\n\r\n"),
        ("trailers", p + te + b"\r\n" + one + b"0\r\nX-Trailer: 1\r\nX-Other: 2\r\n\r\n"),
        ("expect 100-continue", p + b"Expect: 100-continue\r\n" + cl + b"\r\n{B}"),
        ("post connection close", p + b"Connection: close\r\n" + cl + b"\r\n{B}"),
        # line folding, whitespace and bare CR/LF
        ("obs-fold hiding content-length", p + b"X-Pad: a\r\n " + cl + b"\r\n{B}"),
        ("obs-fold with tab", g + b"X-Pad: a\r\n\tb\r\n\r\n"),
        ("obs-fold of host", g + b" y\r\n\r\n"),
        ("obs-fold of transfer-encoding", p + b"Transfer-Encoding: gzip,\r\n chunked\r\n\r\n{C}"),
        ("space before colon", p + b"Content-Length : {N}\r\n\r\n{B}"),
        ("tab before colon", g + b"X-Pad\t: a\r\n\r\n"),
        (
            "space before colon of transfer-encoding",
            p + cl + b"Transfer-Encoding : chunked\r\n\r\n{B}",
        ),
        ("bare CR inside a header line", p + b"X-Pad: a\r" + cl + b"\r\n{B}"),
        ("bare CR before CRLF", p + b"X-Pad: a\r\r\n" + cl + b"\r\n{B}"),
        ("bare CR ending the request line", b"GET {G} HTTP/1.1\rHost: x\r\n\r\n"),
        ("bare LF line endings", b"GET {G} HTTP/1.1\nHost: x\n\n"),
        ("bare LF after one header", g + b"X-A: b\nX-B: c\r\n\r\n"),
        ("bare LF ending the head", g + b"\n"),
        ("leading CRLF", b"\r\n" + g + b"\r\n"),
        ("leading space", b" " + g + b"\r\n"),
        # framing
        ("content-length and chunked", p + cl + te + b"\r\n{C}"),
        ("chunked and content-length", p + te + b"Content-Length: 5\r\n\r\n{C}"),
        ("differing content-lengths", p + cl + b"Content-Length: 1\r\n\r\n{B}"),
        ("equal content-lengths", p + cl + cl + b"\r\n{B}"),
        ("content-length list", p + b"Content-Length: {N}, {N}\r\n\r\n{B}"),
        ("negative content-length", p + b"Content-Length: -1\r\n\r\n{B}"),
        ("hex content-length", p + b"Content-Length: 0x{X}\r\n\r\n{B}"),
        ("plus content-length", p + b"Content-Length: +{N}\r\n\r\n{B}"),
        ("content-length with inner space", p + b"Content-Length: 1 {N}\r\n\r\n{B}"),
        ("empty content-length", p + b"Content-Length: \r\n\r\n{B}"),
        ("content-length overflow", p + b"Content-Length: 99999999999999999999999\r\n\r\n{B}"),
        ("body shorter than content-length", p + b"Content-Length: 1{N}\r\n\r\n{B}"),
        ("Transfer-Encoding: gzip", p + b"Transfer-Encoding: gzip\r\n\r\n{B}"),
        ("Transfer-Encoding: gzip, chunked", p + b"Transfer-Encoding: gzip, chunked\r\n\r\n{C}"),
        ("Transfer-Encoding: chunked, gzip", p + b"Transfer-Encoding: chunked, gzip\r\n\r\n{C}"),
        ("two transfer-encoding headers", p + te + te + b"\r\n{C}"),
        ("Transfer-Encoding: identity", p + b"Transfer-Encoding: identity\r\n" + cl + b"\r\n{B}"),
        ("empty transfer-encoding", p + b"Transfer-Encoding:\r\n\r\n{B}"),
        ("Transfer-Encoding: chunked,", p + b"Transfer-Encoding: chunked,\r\n\r\n{C}"),
        ("bad chunk size", p + te + b"\r\nzz\r\n{B}\r\n0\r\n\r\n"),
        ("chunk size overflow", p + te + b"\r\nfffffffffffffffffffff" + one + b"0\r\n\r\n"),
        ("negative chunk size", p + te + b"\r\n-" + one + b"0\r\n\r\n"),
        ("0x chunk size", p + te + b"\r\n0x" + one + b"0\r\n\r\n"),
        ("chunk size then space", p + te + b"\r\n{X} \r\n{B}\r\n0\r\n\r\n"),
        ("no CRLF after chunk data", p + te + b"\r\n{X}\r\n{B}0\r\n\r\n"),
        ("chunk data longer than its size", p + te + b"\r\n2\r\n{B}\r\n0\r\n\r\n"),
        ("bare LF in chunked framing", p + te + b"\r\n{X}\n{B}\n0\n\n"),
        ("no last chunk", p + te + b"\r\n" + one),
        # the request line, Host and versions
        ("missing host in http/1.1", b"GET {G} HTTP/1.1\r\n\r\n"),
        ("post without host in http/1.1", b"POST {P} HTTP/1.1\r\n{T}" + cl + b"\r\n{B}"),
        ("two host headers", g + b"Host: y\r\n\r\n"),
        ("two equal host headers", g + b"Host: x\r\n\r\n"),
        ("http/0.9 request line", b"GET {G}\r\n"),
        ("http/0.9 request line then a head", b"GET {G}\r\nHost: x\r\n\r\n"),
        ("HTTP/1.2", b"GET {G} HTTP/1.2\r\nHost: x\r\n\r\n"),
        ("HTTP/3.0", b"GET {G} HTTP/3.0\r\nHost: x\r\n\r\n"),
        ("HTTP/1.10", b"GET {G} HTTP/1.10\r\nHost: x\r\n\r\n"),
        ("HTTP/1", b"GET {G} HTTP/1\r\nHost: x\r\n\r\n"),
        ("lower-case http/1.1", b"GET {G} http/1.1\r\nHost: x\r\n\r\n"),
        ("not http", b"GET {G} SPDY/3\r\nHost: x\r\n\r\n"),
        ("double space after the method", b"GET  {G} HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("double space before the version", b"GET {G}  HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("space after the version", b"GET {G} HTTP/1.1 \r\nHost: x\r\n\r\n"),
        ("tab separators", b"GET\t{G}\tHTTP/1.1\r\nHost: x\r\n\r\n"),
        ("lower-case method", b"get {G} HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("unknown method", b"FROB {G} HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("NUL in the method", b"G\x00ET {G} HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("NUL in the target", b"GET {G}\x00 HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("DEL in the target", b"GET {G}\x7f HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("control character in the target", b"GET {G}\x01 HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("space in the target", b"GET {G} x HTTP/1.1\r\nHost: x\r\n\r\n"),
        # header names and values
        ("NUL in a header value", g + b"X-A: a\x00b\r\n\r\n"),
        ("DEL in a header value", g + b"X-A: a\x7fb\r\n\r\n"),
        ("control character in a header value", g + b"X-A: a\x01b\r\n\r\n"),
        ("ESC in a header value", g + b"X-A: a\x1b[0m\r\n\r\n"),
        ("NUL in host", b"GET {G} HTTP/1.1\r\nHost: x\x00y\r\n\r\n"),
        ("header name with a space", g + b"X Pad: a\r\n\r\n"),
        ("empty header name", g + b": a\r\n\r\n"),
        ("UTF-8 header name", g + "X-Größe: a\r\n\r\n".encode()),
        ("separator in a header name", g + b"X(A): a\r\n\r\n"),
        ("header line without a colon", g + b"X-Pad\r\n\r\n"),
        ("header of 70 KB", g + huge + b"\r\n"),
        ("target of 70 KB", b"GET {G}?q=" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
        # not HTTP at all
        ("only blank lines", b"\r\n\r\n"),
        ("TLS client hello", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40),
    ]
    ctype = b"Content-Type: application/json\r\n"
    out = []
    for name, t in templates:
        for key, value in (
            (b"{G}", get),
            (b"{P}", post),
            (b"{T}", ctype),
            (b"{N}", n),
            (b"{X}", x),
            (b"{C}", chunks),
            (b"{B}", body),
        ):
            t = t.replace(key, value)
        out.append((name, t))
    return out


# -- talking to a server -------------------------------------------------------------------


def exchange(port: int, raw: bytes, wait: float = 3.0) -> bytes:
    """Send ``raw`` on a fresh connection and return what comes back: up to one complete
    final response, or all until the server closes. A server that has not answered within
    ``wait`` seconds gets the end of the client's side (the way an incomplete request ends),
    then is read until it closes. (The write side is not shut down at once: uvicorn drops
    the response to a complete request from a client that half-closes.)"""
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with contextlib.suppress(OSError):  # refused mid-send (a 431): read what came back
            s.sendall(raw)
        deadline = time.monotonic() + wait
        shut = False
        while True:
            if not shut and time.monotonic() >= deadline:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_WR)
                shut = True
            s.settimeout(max(0.05, deadline - time.monotonic()) if not shut else 5)
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                if shut:
                    return data
                continue
            except OSError:
                return data
            if not chunk:
                return data
            data += chunk
            if _complete_response(data):
                return data


def _final_head(raw: bytes) -> tuple[bytes, bytes] | None:
    """The head of the first non-1xx response in ``raw`` and what follows it."""
    while True:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        if not sep:
            return None
        parts = head.split(b" ", 2)
        if len(parts) >= 2 and parts[1].isdigit() and parts[1].startswith(b"1"):
            raw = rest
            continue
        return head, rest


def _complete_response(raw: bytes) -> bool:
    final = _final_head(raw)
    if final is None:
        return False
    head, rest = final
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="POST", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(head + b"\r\n\r\n" + rest)
    try:
        while (event := conn.next_event()) is not h11.NEED_DATA:
            if isinstance(event, h11.EndOfMessage):
                return True
    except h11.RemoteProtocolError:
        return False
    return False


def server_refused(raw: bytes) -> tuple[bool, str]:
    """(refused, what came back): refused is a refusal the server's HTTP layer makes itself
    (a 400/431/501/505 in plain text, as uvicorn and the guard write them) or a connection
    closed without a response."""
    if not raw:
        return True, "closed without a response"
    final = _final_head(raw)
    if final is None:
        return False, f"an incomplete response: {raw[:80]!r}"
    head = final[0]
    line, _, fields = head.partition(b"\r\n")
    try:
        status = int(line.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return False, f"not a response: {raw[:80]!r}"
    ctype = b""
    for field in fields.split(b"\r\n"):
        name, _, value = field.partition(b":")
        if name.strip().lower() == b"content-type":
            ctype = value.strip().lower()
    own = ctype.startswith(b"text/plain")
    body = final[1][:60]
    return status in REFUSALS and own, f"{line.decode('latin-1')} ({ctype.decode()}) {body!r}"


# -- the differential test -----------------------------------------------------------------


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """One `mlmon serve` with its proxy in front of tests/tfserving.py."""
    tmp = tmp_path_factory.mktemp("strict")
    env = make_env(tmp, synthetic.credit_spec(), n_train=2_000)
    upstream = tfserving.serve(0)
    cfg = env.config_path
    cfg.write_text(
        cfg.read_text()
        + f"proxy:\n  upstream: http://127.0.0.1:{upstream.server_address[1]}\n"
        + "  timeout: 5s\n  connect_timeout: 1s\n"
        + f"  models:\n    {MODEL}:\n      inputs: [{', '.join(FEATURES)}]\n"
    )
    exporter = Exporter(cfg, ["--proxy.listen-address", "127.0.0.1:0"])
    assert exporter.proxy_port is not None, exporter.log.read_text()
    yield exporter
    exporter.stop()
    upstream.shutdown()


PROXY_BODY = json.dumps({"instances": [[30, 1, 0.2, 1, 1, "DE", "web"]]}).encode()
TARGETS = {
    # (GET path, POST path, POST body): each answered with a 200 when well-formed
    "exporter": (b"/healthz", b"/v1/models/%s/labels" % MODEL.encode(), b'{"id":"x","label":1}'),
    "proxy": (
        b"/v1/models/%s" % MODEL.encode(),
        b"/v1/models/%s:predict" % MODEL.encode(),
        PROXY_BODY,
    ),
}


def still_serving(exporter: Exporter, which: str) -> None:
    if which == "exporter":
        assert exporter.get("/healthz").status_code == 200
    else:
        path = f"/v1/models/{MODEL}:predict"
        reply = raw_call(exporter.proxy_port, "POST", path, PROXY_BODY)
        assert status_of(reply) == 200, reply[:300]


@pytest.mark.parametrize("which", ["exporter", "proxy"])
def test_the_server_refuses_exactly_what_the_reference_parsers_refuse(servers, which):
    exporter = servers
    port = exporter.port if which == "exporter" else exporter.proxy_port
    get, post, body = TARGETS[which]
    cases = []
    for name, raw in corpus(get, post, body):
        refused, why = reference(raw)
        if refused is not None:  # an upgrade is not a parse verdict: left out
            cases.append((name, raw, refused, why))
    assert len(cases) >= 60
    assert {r for *_, r, _ in cases} == {True, False}
    still_serving(exporter, which)
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda c: exchange(port, c[1]), cases))
    mismatches = []
    for (name, raw, ref_refused, why), answer in zip(cases, answers, strict=True):
        refused, got = server_refused(answer)
        if refused != ref_refused:
            verdict = "refuses" if ref_refused else "accepts"
            mismatches.append(
                f"- {name}: reference {verdict} ({why}); {which} answered {got}\n"
                f"    head: {raw[:200]!r}"
            )
    assert not mismatches, f"{len(mismatches)} of {len(cases)} heads disagree:\n" + "\n".join(
        mismatches
    )
    still_serving(exporter, which)
    log = exporter.log.read_text()
    assert "Traceback" not in log, log[log.find("Traceback") - 300 :][:3000]


def test_the_reference_verdicts_on_a_few_known_heads():
    """The reference itself: what RFC 9112 says of a few heads."""
    ok = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert reference(ok) == (False, "h11 and httptools accept")
    for bad in (
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"POST / HTTP/1.1\r\nHost: x\r\nX: a\r\n Content-Length: 1\r\n\r\nx",  # obs-fold
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: " + b"a" * 70_000 + b"\r\n\r\n",
    ):
        assert reference(bad)[0] is True, bad[:80]
    assert (
        reference(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n")[0]
        is None
    )


# -- response poisoning through the proxy --------------------------------------------------


class _Echo(BaseHTTPRequestHandler):
    """An upstream that answers each POST with the marker in its body, and keeps a list of
    the markers it received. It reads a body by Content-Length, or chunked when
    Transfer-Encoding is exactly `chunked`; keep-alive, like most model servers."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            marker = b"".join(parts)
        else:
            marker = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        text = marker.decode("latin-1")
        with self.server.lock:
            self.server.markers.append(text)
            self.server.heads.append([(k.lower(), v) for k, v in self.headers.items()])
        out = json.dumps({"marker": text}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


class _EchoServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.lock = threading.Lock()
        self.markers: list[str] = []
        self.heads: list[list[tuple[str, str]]] = []

    def handle_error(self, request, client_address) -> None:
        pass  # a hostile request may leave the upstream a broken connection


@pytest.fixture(scope="module")
def echo_upstream(tmp_path_factory):
    """A config with one model, and the echo upstream."""
    env = make_env(tmp_path_factory.mktemp("poison"), synthetic.credit_spec(), n_train=2_000)
    upstream = _EchoServer()
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    yield env, upstream
    upstream.shutdown()


@pytest.fixture()
def echo_proxy(echo_upstream):
    """A fresh `mlmon serve` proxying to the echo upstream (a fresh upstream connection
    pool): what one hostile request leaves behind is not confused with another's."""
    env, upstream = echo_upstream
    url = f"http://127.0.0.1:{upstream.server_address[1]}"
    exporter = Exporter(
        env.config_path, ["--upstream", url, "--proxy.listen-address", "127.0.0.1:0"]
    )
    assert exporter.proxy_port is not None, exporter.log.read_text()
    with upstream.lock:
        upstream.markers.clear()
        upstream.heads.clear()
    yield exporter, upstream
    exporter.stop()


def _smuggled(marker: bytes) -> bytes:
    return b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (
        len(marker),
        marker,
    )


def _hostile(variant: str, inner: bytes) -> bytes:
    """A request whose head, read one way, gives it ``inner`` as its body and, read another
    way, ends before it — leaving ``inner`` as the next request on the connection."""
    n = len(inner)
    start = b"POST /echo HTTP/1.1\r\nHost: x\r\n"
    heads = {
        "folded": b"X-Pad: a\r\n Content-Length: %d\r\n\r\n" % n,
        "folded-tab": b"X-Pad: a\r\n\tContent-Length: %d\r\n\r\n" % n,
        "space-before-colon": b"Content-Length : %d\r\n\r\n" % n,
        "bare-cr": b"X-Pad: a\r\r\nContent-Length: %d\r\n\r\n" % n,
        "cl-te": b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % (n + 5),
    }
    return start + heads[variant] + inner


def _call(port: int, marker: bytes) -> tuple[int, bytes]:
    """An ordinary keep-alive POST of ``marker`` on a new connection: (status, body)."""
    conn = h11.Connection(h11.CLIENT)
    req = h11.Request(
        method="POST",
        target="/echo",
        headers=[("Host", "x"), ("Content-Length", str(len(marker)))],
    )
    status, body = 0, b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(conn.send(req) + conn.send(h11.Data(data=marker)) + conn.send(h11.EndOfMessage()))
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as e:  # no (complete) response
                return 0, f"{e}".encode()
            if event is h11.NEED_DATA:
                conn.receive_data(s.recv(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return status, body


@pytest.mark.parametrize(
    "variant", ["folded", "folded-tab", "space-before-colon", "bare-cr", "cl-te"]
)
def test_a_hidden_request_never_poisons_another_callers_response(echo_proxy, variant):
    exporter, upstream = echo_proxy
    port = exporter.proxy_port
    smuggled = f"SMUGGLED-{variant}"
    answer = exchange(port, _hostile(variant, _smuggled(smuggled.encode())))
    problems = []
    refused, got = server_refused(answer)
    if not refused or (answer and not answer.startswith(b"HTTP/1.1 400 ")):
        problems.append(f"the hostile request was answered {got}, not refused with a 400")
    for i in range(20):
        marker = f"victim-{variant}-{i}"
        status, body = _call(port, marker.encode())
        want = json.dumps({"marker": marker}).encode()
        if (status, body) != (200, want):
            problems.append(f"caller {i} sent {marker!r} and got {status} {body[:120]!r}")
    expected = [f"victim-{variant}-{i}" for i in range(20)]
    with upstream.lock:
        seen = list(upstream.markers)
    if any(smuggled in m for m in seen):
        problems.append(f"the upstream received the smuggled request: {seen}")
    if sorted(seen) != sorted(expected):
        extra = [m for m in seen if m not in expected]
        problems.append(f"the upstream received requests besides the callers': {extra}")
    assert not problems, f"variant {variant}:\n" + "\n".join(problems)
    log = exporter.log.read_text()
    assert "Traceback" not in log, log[log.find("Traceback") - 300 :][:3000]


def _callers_get_their_own(port: int, upstream, tag: str, n: int = 5) -> list[str]:
    problems = []
    for i in range(n):
        marker = f"{tag}-{i}"
        status, body = _call(port, marker.encode())
        if (status, body) != (200, json.dumps({"marker": marker}).encode()):
            problems.append(f"caller {i} sent {marker!r} and got {status} {body[:120]!r}")
    with upstream.lock:
        seen = list(upstream.markers)
    if sorted(seen) != sorted(f"{tag}-{i}" for i in range(n)):
        problems.append(f"the upstream received {seen}")
    return problems


@pytest.mark.parametrize("how", ["disconnect", "part-sent", "bad-chunk", "bad-chunk-crlf"])
def test_an_unfinished_or_refused_body_is_never_forwarded(echo_proxy, how):
    """A body that does not arrive whole -- the caller goes away, or its chunked framing is
    refused part-way -- is not forwarded (it would leave the pooled upstream connection
    waiting for bytes that the next caller's request would then supply)."""
    exporter, upstream = echo_proxy
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\n"
    raw = {
        "disconnect": head + b"Content-Length: 75\r\n\r\n",
        "part-sent": head + b"Content-Length: 75\r\n\r\nPART-1",
        "bad-chunk": head + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n",
        "bad-chunk-crlf": head + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    }[how]
    with socket.create_connection(("127.0.0.1", exporter.proxy_port), timeout=5) as s:
        s.sendall(raw)
        time.sleep(0.3)
    problems = _callers_get_their_own(exporter.proxy_port, upstream, f"after-{how}")
    assert not problems, "\n".join(problems)
    assert "Traceback" not in exporter.log.read_text()


def test_trailers_never_become_headers(echo_proxy):
    """Trailer fields of a chunked request are not headers: they never reach the upstream
    as headers, nor replace the Host the checks saw."""
    exporter, upstream = echo_proxy
    raw = (
        b"POST /echo HTTP/1.1\r\nHost: good\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n7\r\ntrailer\r\n0\r\nHost: evil\r\n"
        b"Authorization: Bearer forged\r\nX-Model-Version: evil\r\n\r\n"
    )
    answer = exchange(exporter.proxy_port, raw)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    with upstream.lock:
        (head,) = upstream.heads
    names = dict(head)
    assert names["host"] == "good" and "authorization" not in names, head
    assert "x-model-version" not in names, head


def _hostile_upstream(answer: bytes):
    """An upstream that reads one request head (and a Content-Length body) per connection
    and answers ``answer``."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                data = b""
                with contextlib.suppress(OSError):
                    while b"\r\n\r\n" not in data:
                        data += conn.recv(65536)
                    conn.sendall(answer)
                    time.sleep(0.2)

    threading.Thread(target=serve, daemon=True).start()
    return server, stop


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
        b"HTTP/1.1 999 Odd\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 2\r\n\r\nok",
    ],
)
def test_an_odd_upstream_response_gets_a_clean_answer(echo_upstream, answer):
    """Whatever the upstream answers, the caller gets a complete response: the upstream's
    when the proxy can relay it (204/304 without a body), else a 502 `bad_response`."""
    env, _ = echo_upstream
    server, stop = _hostile_upstream(answer)
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    exporter = Exporter(env.config_path, ["--upstream", url, "--proxy.listen-address",
                                          "127.0.0.1:0"])  # fmt: skip
    try:
        got = raw_call(exporter.proxy_port, "POST", "/echo", b"x")
        status = status_of(got)
        if answer.split(b" ")[1] in (b"204", b"304"):
            assert status == int(answer.split(b" ")[1]) and got.endswith(b"\r\n\r\n"), got
        else:
            assert status == 502 and b"bad_response" in got, got
        assert "Traceback" not in exporter.log.read_text()
    finally:
        stop.set()
        exporter.stop()
        server.close()
