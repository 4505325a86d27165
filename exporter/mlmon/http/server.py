"""The exporter's HTTP server: uvicorn (httptools/llhttp) with mlmon's connection guard,
serving one ASGI app.

The hot routes — `POST /v1/models/{model}/predictions`, `.../labels` and `GET /metrics` —
are answered by `api.Api`; every other route (admin API, stats, landing page) by the Flask
app through WSGI. Decoding, validation, ingest, the exposition and Flask run in worker
threads, so one expensive request cannot hold up the others; only an uncompressed JSON body
of at most `INLINE_BYTES` (a single event) is handled on the event loop, where its cost is
bounded by its size, and `/healthz` and `/readyz` are answered there too. Bodies are read
up to the body limit and no further.
"""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote, unquote_to_bytes

import orjson

from mlmon.http.api import Api, Reply, json_reply
from mlmon.http.guard import Guard, Limits, guarded_protocol

log = logging.getLogger("mlmon.server")

_HOP_BY_HOP = frozenset({"connection", "transfer-encoding", "keep-alive", "content-length"})
_INGEST = (b"predictions", b"labels")
# After refusing an oversized body, what is still read (and dropped) so that closing the
# connection does not reset it before the client reads the refusal.
_LINGER_BYTES = 64 * 1024 * 1024
_LINGER_SECONDS = 2.0
# An uncompressed JSON body this small is handled on the event loop: its cost is bounded by
# its size (under a millisecond even for hundreds of tiny invalid events), while a hand-off
# to a worker thread costs 0.2-0.4 ms of CPU, a third of a single event's whole cost.
# Everything larger, compressed or NDJSON goes to the worker threads.
INLINE_BYTES = 2048
# Connections asyncio accepts in one burst (also the listen backlog). Their descriptors are
# open before the guard sees them, and an evicted one is closed a loop iteration later, so
# the connection cap keeps two bursts of room under the open-file limit.
ACCEPT_BURST = 128

Send = Callable[[dict[str, Any]], Any]
Receive = Callable[[], Any]

# At most one warning that sums up refused (4xx) requests per this many seconds; each one is
# logged at debug level.
REFUSAL_SUMMARY_SECONDS = 60.0


class RefusalLog:
    """The exporter's 4xx answers in its log: each at debug level (method, path, status,
    reason and the first error detail), and a warning that sums them up by reason at most
    once per ``interval`` seconds, so a sender that keeps getting it wrong is seen at the
    default level without one line per request. Called on the event loop only."""

    def __init__(
        self, interval: float = REFUSAL_SUMMARY_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self.clock = clock
        self.counts: Counter[str] = Counter()  # refusals by reason since the last warning
        self.last_warning: float | None = None

    def record(self, method: str, raw_path: bytes, reply: Reply) -> None:
        reason, detail = _refusal_of(reply)
        path = raw_path.decode("latin-1")[:200]
        log.debug("refused %s %s: %d %s: %s", method, path, reply.status, reason, detail)
        self.counts[reason] += 1
        now = self.clock()
        if self.last_warning is None:
            self._warn(now, "")
        elif now - self.last_warning >= self.interval:
            self._warn(now, f" in the last {now - self.last_warning:.0f} s")

    def _warn(self, now: float, period: str) -> None:
        total = sum(self.counts.values())
        by_reason = ", ".join(f"{r}={n}" for r, n in sorted(self.counts.items()))
        log.warning(
            "%d request(s) refused%s: %s (each is logged at debug level; this summary comes "
            "at most once per %.0f s)",
            total,
            period,
            by_reason,
            self.interval,
        )
        self.counts.clear()
        self.last_warning = now


def _refusal_of(reply: Reply) -> tuple[str, str]:
    """A refusal's reason and its first error detail (or its error), from its JSON body."""
    try:
        doc = orjson.loads(reply.body) if reply.content_type.startswith("application/json") else {}
    except orjson.JSONDecodeError:
        doc = {}
    if type(doc) is not dict:
        doc = {}
    reason = str(doc.get("reason") or f"http_{reply.status}")
    details = doc.get("details")
    first = details[0] if type(details) is list and details else None
    if type(first) is dict:
        where = str(first.get("field") or "")
        if first.get("index") is not None:
            event = f"event {first['index']}"
            where = f"{where} of {event}" if where else event
        return reason, f"{where}: {first.get('message', '')}"
    return reason, str(doc.get("error", ""))


class ExporterApp:
    """The ASGI application of `mlmon serve`."""

    def __init__(self, api: Api, wsgi_app: Callable, threads: int) -> None:
        self.api = api
        self.wsgi = wsgi_app
        # Ingest runs on one thread: concurrent batches would only contend for the
        # interpreter lock (numpy hands it back and forth between them at every small step,
        # which cost half the throughput of two concurrent senders). Scrapes and the Flask
        # routes have threads of their own, so a scrape never waits for a batch.
        self.ingest = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlmon-ingest")
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mlmon-http")
        self.limit = api.monitor.config.limits["max_body_bytes"]
        self.refusals = RefusalLog()

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method: str = scope["method"]
        raw_path: bytes = scope["raw_path"]
        if method in ("GET", "HEAD") and raw_path in (b"/healthz", b"/readyz"):
            await _respond(send, self._health(raw_path))
            return
        headers = _headers(scope)
        declared = int(headers.get(b"content-length", b"0") or 0)
        # refused before the client sends it: nothing to drain afterwards
        unsent = declared > self.limit and headers.get(b"expect", b"").lower() == b"100-continue"
        body, too_large = await _read_body(receive, self.limit, declared)
        if body is None:
            return  # the body did not arrive whole (a disconnect, or refused framing)
        route = _route(method, raw_path)
        if route is not None:
            reply = await self._hot(route, headers, body, scope, declared, too_large)
        elif too_large:
            reply = json_reply(
                {
                    "error": f"body exceeds the limit of {self.limit} bytes",
                    "reason": "body_too_large",
                    "details": [],
                },
                413,
            )
        else:
            loop = asyncio.get_running_loop()
            reply = await loop.run_in_executor(self.pool, self._call_wsgi, scope, headers, body)
        if too_large:
            if not unsent:
                await _drain(receive)
            reply.headers.append(("Connection", "close"))
        if 400 <= reply.status < 500:
            self.refusals.record(method, raw_path, reply)
        await _respond(send, reply)

    def _health(self, path: bytes) -> Reply:
        if path == b"/healthz":
            return Reply(200, b"ok\n", "text/plain; charset=utf-8")
        ready = bool(self.api.monitor.models)
        return Reply(
            200 if ready else 503,
            b"ready\n" if ready else b"not ready\n",
            "text/plain; charset=utf-8",
        )

    async def _hot(
        self,
        route: tuple[str, str | None],
        headers: dict[bytes, bytes],
        body: bytes,
        scope: dict[str, Any],
        declared: int,
        too_large: bool,
    ) -> Reply:
        endpoint, model = route
        auth = headers.get(b"authorization")
        tokens = self.api.tokens
        token = tokens.metrics if endpoint == "metrics" else tokens.ingest
        refused = self.api.authorize(endpoint, token, _text(auth))
        if refused is not None:
            return refused
        loop = asyncio.get_running_loop()
        if endpoint == "metrics":
            accept = _text(headers.get(b"accept-encoding"))
            return await loop.run_in_executor(self.pool, self.api.metrics, accept)
        handler = self.api.predictions if endpoint == "predictions" else self.api.labels
        ctype = _text(headers.get(b"content-type"))
        encoding = _text(headers.get(b"content-encoding"))
        args = (
            model,
            body,
            max(declared, self.limit + 1) if too_large else len(body),
            ctype,
            encoding,
            _query_value(scope["query_string"], "partial"),
        )
        inline = len(body) <= INLINE_BYTES and encoding is None and _plain_json(ctype)
        # labels through a shared store wait on the network: never on the event loop
        if inline and (endpoint == "predictions" or self.api.monitor.shared is None):
            return self._guarded(endpoint, handler, args)
        return await loop.run_in_executor(self.ingest, self._guarded, endpoint, handler, args)

    def _guarded(self, endpoint: str, handler: Callable[..., Reply], args: tuple) -> Reply:
        try:
            return handler(*args)
        except Exception:
            log.exception("internal error on %s", endpoint)
            counters = self.api.monitor.counters
            counters.count(counters.rejected, (endpoint, "internal_error"))
            return json_reply(
                {"error": "internal error", "reason": "internal_error", "details": []}, 500
            )

    def _call_wsgi(self, scope: dict[str, Any], headers: dict[bytes, bytes], body: bytes) -> Reply:
        """Call the Flask app for one request (in a worker thread)."""
        server = scope.get("server") or ("127.0.0.1", 0)
        client = scope.get("client") or ("", 0)
        environ: dict[str, Any] = {
            "REQUEST_METHOD": scope["method"],
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(scope["raw_path"]).decode("latin-1"),
            "QUERY_STRING": scope["query_string"].decode("latin-1"),
            "SERVER_NAME": str(server[0]),
            "SERVER_PORT": str(server[1]),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": client[0],
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for k, v in headers.items():
            name = k.decode("latin-1").upper().replace("-", "_")
            if name == "CONTENT_TYPE":
                environ["CONTENT_TYPE"] = v.decode("latin-1")
            elif name not in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):
                environ["HTTP_" + name] = v.decode("latin-1")
        started: list[Any] = []

        def start_response(status: str, response_headers: list, exc_info=None):
            started[:] = [status, response_headers]
            return lambda data: None

        result = self.wsgi(environ, start_response)
        try:
            out = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        status, response_headers = started
        ctype = "application/octet-stream"
        kept = []
        for k, v in response_headers:
            if k.lower() == "content-type":
                ctype = v
            elif k.lower() not in _HOP_BY_HOP:
                kept.append((k, v))
        return Reply(int(status.split(" ", 1)[0]), out, ctype, kept)


def make_server(app: Any, limits: Limits, guard: Guard, **overrides: Any) -> Any:
    """The uvicorn server for the ASGI ``app`` (the exporter's or the proxy's), behind
    ``guard``; `run(sockets=[sock])` serves until SIGTERM or SIGINT (in the main thread) or
    until ``should_exit`` is set. ``overrides`` are further `uvicorn.Config` settings."""
    import uvicorn

    settings: dict[str, Any] = dict(
        app=app,
        http=guarded_protocol(guard),
        loop="asyncio",
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,  # X-Forwarded-For is the caller's to write, not to be trusted
        timeout_keep_alive=int(limits.idle_timeout) + 1,  # the guard closes idle ones first
        timeout_graceful_shutdown=5,
        backlog=ACCEPT_BURST,
    )
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    return uvicorn.Server(uvicorn.Config(**(settings | overrides)))


def listen(host: str, port: int, backlog: int = ACCEPT_BURST) -> socket.socket:
    """A listening TCP socket with Nagle's algorithm off for every accepted connection.

    uvicorn writes a response's head and body separately; asyncio turns Nagle off only on
    sockets whose protocol number says TCP, which `socket.create_server` leaves at 0, so
    without this every keep-alive response would wait out the client's delayed ACK (40 ms).
    Accepted sockets inherit TCP_NODELAY from the listening one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=backlog)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def limits_of(settings: Any) -> Limits:
    """The guard's limits from a `ServerSettings` or `ProxySettings`."""
    return Limits(
        header_timeout=settings.header_timeout_seconds,
        body_timeout=settings.body_timeout_seconds,
        idle_timeout=settings.idle_timeout_seconds,
        max_connections=settings.max_connections,
    )


def effective_limits(limits: Limits, reserve: int = 100) -> Limits:
    """The limits with the connection cap kept under the open-file limit less ``reserve``
    (the process's own files, and the proxy's upstream pool) and two accept bursts, so the
    server never runs out of descriptors before the cap evicts anyone."""
    import resource
    from dataclasses import replace

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return limits
    cap = max(16, soft - reserve - 2 * ACCEPT_BURST)
    return replace(limits, max_connections=min(limits.max_connections, cap))


async def _read_body(receive: Receive, limit: int, declared: int) -> tuple[bytes | None, bool]:
    """The request body, or (b"", True) once it is known to exceed ``limit`` (by its
    Content-Length, or as it grows; then it is not read further), or (None, False) when it
    did not arrive whole: nothing of it may be applied."""
    if declared > limit:
        return b"", True
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None, False  # the client went away, or the parser refused the framing
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", True
        if chunk:
            parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts), False


async def _drain(receive: Receive) -> None:
    """Read and drop what the client still sends of a refused body, bounded in bytes and
    time, so that closing does not reset the connection before it reads the refusal."""
    dropped = 0
    deadline = time.monotonic() + _LINGER_SECONDS
    try:
        async with asyncio.timeout(_LINGER_SECONDS):
            while dropped < _LINGER_BYTES and time.monotonic() < deadline:
                message = await receive()
                if message["type"] != "http.request":
                    return
                dropped += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return
    except TimeoutError:
        pass


async def _respond(send: Send, reply: Reply) -> None:
    headers = [
        (b"content-type", reply.content_type.encode("latin-1")),
        (b"content-length", b"%d" % len(reply.body)),
    ]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


def _headers(scope: dict[str, Any]) -> dict[bytes, bytes]:
    """Request headers by lower-case name; repeated ones comma-joined, as HTTP allows."""
    out: dict[bytes, bytes] = {}
    for k, v in scope["headers"]:
        if k in out:
            out[k] += b", " + v
        else:
            out[k] = v
    return out


def _plain_json(ctype: str | None) -> bool:
    return ctype is None or ctype.split(";", 1)[0].strip().lower() == "application/json"


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


def _route(method: str, raw_path: bytes) -> tuple[str, str | None] | None:
    """The hot endpoint of a request, with its model: or None for the WSGI app."""
    if method == "GET" and raw_path == b"/metrics":
        return "metrics", None
    if method == "POST" and raw_path.startswith(b"/v1/models/"):
        parts = raw_path.split(b"/")
        # ['', 'v1', 'models', model, 'predictions' | 'labels']
        if len(parts) == 5 and parts[4] in _INGEST and parts[3]:
            return parts[4].decode(), unquote(parts[3].decode("latin-1"))
    return None


def _query_value(query: bytes, key: str) -> str | None:
    for part in query.decode("latin-1").split("&"):
        k, _, v = part.partition("=")
        if k == key:
            return unquote(v)
    return None
