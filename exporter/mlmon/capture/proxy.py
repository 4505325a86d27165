"""The reverse proxy: forwards every request to the model server and every response back,
and hands a copy of inference calls to the exporter for capture.

Both sides speak HTTP through maintained libraries: uvicorn (httptools/llhttp, behind
mlmon's connection guard) parses what callers send, aiohttp sends each request upstream
from what was parsed — a head rebuilt from the parsed method, target and headers, less the
hop-by-hop ones (RFC 9110 §7.6.1) — over a capped pool of keep-alive connections, and
parses the upstream's response. aiohttp returns a connection to the pool only after a
complete, well-framed response. No raw byte of a caller is ever forwarded.

The caller gets the upstream's status, headers (less hop-by-hop ones) and body. Only when
the upstream cannot be reached (502) or does not answer in time (504) does the proxy
answer itself, with a JSON body saying why. Capture happens after the response has been
written: a queue bounded in calls and in bytes hands a copy of each inference call to the
exporter; when it is full the copy is dropped and counted, never waited for.

The proxy runs in a process of its own, so nothing the exporter does — decoding captured
payloads, ingesting, rendering a scrape — ever holds up a proxied call (Python threads
would share one interpreter lock). Its counters live in shared memory that the exporter
reads at scrape time; captured calls travel in batches over a pipe to the exporter's
capture thread. If the exporter goes away the proxy exits; if the proxy dies the exporter
stops (snapshotting first), so the pod restarts whole.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import orjson

from mlmon.capture.counters import ProxyStats
from mlmon.capture.protocols import CaptureError, Capturer, Exchange, classify
from mlmon.core.config import ProxySettings, split_address
from mlmon.http.guard import HEADER_RE, HEADER_VALUE_RE

if TYPE_CHECKING:
    from mlmon.core.monitor import Monitor

log = logging.getLogger("mlmon.proxy")

CAPTURE_DELAY_SECONDS = 0.05
SWITCH_INTERVAL_SECONDS = 0.0002
_PIECE = 64 * 1024
# Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded in either direction; `expect` is
# answered by the proxy's own server. `Host` is forwarded as the caller sent it.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"expect",
    }
)


# What uvicorn refuses to write in a response header (its own patterns): checked before a
# response starts, so an upstream's bad header becomes a 502, not a cut connection.
_BAD_NAME = HEADER_RE.search
_BAD_VALUE = HEADER_VALUE_RE.search


class _Aborted(Exception):
    """The caller's request body did not arrive whole (a disconnect, or framing that the
    parser refused part-way): the request must not be forwarded."""


class _UpstreamError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


class Proxy:
    """The forwarding engine, an ASGI app; runs in the proxy process (see `ProxyProcess`)."""

    def __init__(self, settings: ProxySettings, stats: ProxyStats) -> None:
        self.settings = settings
        self.stats = stats
        host, port = settings.upstream_host_port
        self.base = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
        self.queue: queue.Queue[Exchange] = queue.Queue(maxsize=settings.queue_size)
        self.queued_bytes = 0  # bodies waiting in the queue
        self._bytes_lock = threading.Lock()
        self.session: Any = None  # aiohttp.ClientSession, made on the proxy's event loop

    def serve(self, conn: Connection, ports: Any) -> None:
        """Listen, report the bound port (or the error) on ``ports``, forward until the
        exporter goes away; captured calls go to ``conn``."""
        import aiohttp  # noqa: F401  -- now, not at the first call: importing takes a second

        from mlmon.http.guard import Guard
        from mlmon.http.server import effective_limits, limits_of, listen, make_server

        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)  # the sender thread yields quickly
        host, port = split_address(self.settings.listen_address)
        try:
            sock = listen(host, port)
        except OSError as e:
            ports.put(("error", e.strerror or str(e)))
            return
        ports.put(("ok", sock.getsockname()[1]))
        threading.Thread(
            target=self._send_captures, args=(conn, os.getppid()), name="mlmon-proxy-send",
            daemon=True,
        ).start()  # fmt: skip
        limits = effective_limits(
            limits_of(self.settings), reserve=100 + self.settings.max_upstream_connections
        )
        guard = Guard(limits, self.stats.connection_closed)

        server = make_server(self, limits, guard, date_header=False, timeout_graceful_shutdown=2)
        # a response cut by the upstream is logged in __call__, once
        logging.getLogger("uvicorn.error").addFilter(
            lambda r: "without completing response" not in r.getMessage()
        )
        server.run(sockets=[sock])

    def _session(self) -> Any:
        import aiohttp

        if self.session is None:
            s = self.settings
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=s.max_upstream_connections,
                    limit_per_host=s.max_upstream_connections,
                    keepalive_timeout=30,
                ),
                timeout=aiohttp.ClientTimeout(
                    total=s.timeout_seconds, sock_connect=s.connect_timeout_seconds
                ),
                auto_decompress=False,  # bodies are relayed as the upstream encoded them
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self.session

    def _send_captures(self, conn: Connection, parent: int) -> None:
        """Batches of captured calls to the exporter; exits the process when it is gone."""
        while True:
            try:
                batch = [self.queue.get(timeout=1.0)]
            except queue.Empty:
                batch = []
            if os.getppid() != parent:
                os._exit(0)  # the exporter is gone: so is its proxy
            if not batch:
                continue
            # Let a few more arrive: one ingest of many calls costs far less CPU than one
            # each, and the CPU saved is the model's (the sidecar shares its pod).
            time.sleep(CAPTURE_DELAY_SECONDS)
            with contextlib.suppress(queue.Empty):
                while len(batch) < 1024:
                    batch.append(self.queue.get_nowait())
            with self._bytes_lock:
                self.queued_bytes -= sum(_size(ex) for ex in batch)
            self.stats.set_queue_length(self.queue.qsize())
            try:
                conn.send(batch)
            except (OSError, ValueError):
                os._exit(0)

    def _enqueue(self, ex: Exchange) -> None:
        size = _size(ex)
        with self._bytes_lock:
            if self.queued_bytes + size > self.settings.queue_bytes:
                self.stats.dropped()
                return
            try:
                self.queue.put_nowait(ex)
            except queue.Full:
                self.stats.dropped()
                return
            self.queued_bytes += size

    # -- one request -------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["raw_path"] == b"*":
            # OPTIONS * asks about the server itself (RFC 9110 §9.3.7); the proxy answers it,
            # as it has no target to forward to. The asterisk form is OPTIONS' alone.
            if scope["method"] == "OPTIONS":
                await _reply(send, 200, b"", False, None)
            else:
                await _reply(send, 400, b'{"error": "mlmon proxy: * is for OPTIONS"}\n', True)
            return
        try:
            await self._proxy(scope, receive, send)
        except Exception:  # a bug answers this call with a 502, never takes the proxy down
            log.exception("proxying %s %s failed", scope["method"], scope["raw_path"][:200])
            with contextlib.suppress(Exception):
                await _reply(send, 502, b'{"error": "mlmon proxy: internal error"}\n', True)

    async def _proxy(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = time.time()
        t0 = time.perf_counter()
        method = scope["method"]
        target = scope["raw_path"] + (
            b"?" + scope["query_string"] if scope["query_string"] else b""
        )
        protocol, model_key, path_version = classify(
            method, scope["raw_path"].decode("latin-1"), self.settings
        )
        headers = _forwarded(scope["headers"])
        ex = Exchange(
            protocol, model_key, path_version, started, request_headers=_kept(scope["headers"])
        )
        limit = self.settings.max_capture_bytes
        try:
            body, rest = await _read_up_to(receive, limit)
        except _Aborted:
            return  # the caller went away, or its body was refused: nothing is forwarded
        if rest is None:  # buffered: aiohttp states the length of what is actually sent
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        ex.request_body, ex.too_large = (body, False) if rest is None else (b"", True)
        try:
            status = await self._forward(method, target, headers, body, rest, send, ex)
        except _UpstreamError as e:
            self.stats.upstream_failure(e.reason)
            status = 504 if e.reason == "timeout" else 502
            if ex.status == -1:  # the response had begun: the caller sees the connection drop
                self.stats.request(protocol, 502, time.perf_counter() - t0)
                log.warning("response cut: %s", e.message)
                return  # uvicorn closes a connection whose response is incomplete
            msg = {
                "error": f"mlmon proxy: {e.message}",
                "reason": e.reason,
                "upstream": self.settings.upstream,
            }
            await _reply(send, status, orjson.dumps(msg) + b"\n", rest is not None)
            ex.status, ex.failure = status, e.reason
            ex.latency = time.perf_counter() - t0
        self.stats.request(protocol, status, time.perf_counter() - t0)
        if protocol != "none":
            if ex.failure is None:
                ex.status = status
            self._enqueue(ex)

    async def _forward(
        self,
        method: str,
        target: bytes,
        headers: list[tuple[str, str]],
        body: bytes,
        rest: Any,
        send: Any,
        ex: Exchange,
    ) -> int:
        """Send the request upstream and relay its response; the status relayed. Every
        failure becomes an `_UpstreamError` that says why."""
        import aiohttp
        from yarl import URL

        url = URL(self.base + target.decode("latin-1"), encoded=True)
        data: Any = body if rest is None else _stream(body, rest)
        for attempt in (0, 1):
            try:
                return await self._exchange(method, url, headers, data, send, ex)
            except aiohttp.ClientConnectorError as e:
                errno = e.os_error.errno
                why = os.strerror(errno) if errno else str(e)
                raise _UpstreamError("unreachable", f"upstream unreachable: {why}") from None
            except aiohttp.ConnectionTimeoutError:
                within = self.settings.connect_timeout_seconds
                raise _UpstreamError(
                    "connect_timeout", f"no connection to the upstream within {within}s"
                ) from None
            except (TimeoutError, aiohttp.ServerTimeoutError):
                within = self.settings.timeout_seconds
                raise _UpstreamError(
                    "timeout", f"no complete response from the upstream within {within}s"
                ) from None
            except aiohttp.ServerDisconnectedError:
                if attempt == 0 and rest is None and ex.status != -1:
                    continue  # a pooled connection the upstream had closed: retry once
                raise _UpstreamError(
                    "disconnected", "the upstream closed the connection without a response"
                ) from None
            except (aiohttp.ClientResponseError, aiohttp.ClientPayloadError) as e:
                raise _UpstreamError(
                    "bad_response", f"the upstream's response is not valid HTTP: {e}"
                ) from None
            except (aiohttp.ClientOSError, ConnectionError):
                raise _UpstreamError(
                    "disconnected", "the upstream closed the connection mid-response"
                ) from None
        raise AssertionError("unreachable")

    async def _exchange(
        self,
        method: str,
        url: Any,
        headers: list[tuple[str, str]],
        data: Any,
        send: Any,
        ex: Exchange,
    ) -> int:
        """One request upstream and its response relayed to the caller; what capture needs
        of the response goes into ``ex``."""
        t0 = time.perf_counter()
        async with self._session().request(
            method, url, headers=headers, data=data, allow_redirects=False,
            compress=None, chunked=None,
        ) as resp:  # fmt: skip
            bodiless = resp.status in (204, 304) or method == "HEAD"
            out = _relayed_headers(resp, bodiless)
            await send({"type": "http.response.start", "status": resp.status, "headers": out})
            ex.status = -1  # from here on, a failure cuts the response
            limit = self.settings.max_capture_bytes
            kept, size = await _relay_body(resp, bodiless, send, limit)
            ex.latency = time.perf_counter() - t0
            ex.too_large = ex.too_large or size > limit
            ex.response_body = b"" if size > limit else b"".join(kept)
            ex.response_headers = _kept(out)
            return resp.status


def _relayed_headers(resp: Any, bodiless: bool) -> list[tuple[bytes, bytes]]:
    """The upstream's response headers for the caller, less hop-by-hop ones (and a bodiless
    response's Content-Length); `_UpstreamError` for a status or a header the caller's side
    cannot be sent."""
    out = [
        (k.lower(), v)
        for k, v in resp.raw_headers
        if k.lower() not in _HOP_BY_HOP and not (bodiless and k.lower() == b"content-length")
    ]
    if not 200 <= resp.status <= 599:  # 1xx are consumed by aiohttp; no 101
        raise _UpstreamError("bad_response", f"status {resp.status} from upstream")
    if any(_BAD_NAME(k) or _BAD_VALUE(v) for k, v in out):
        # a header the caller's side would refuse to write
        raise _UpstreamError("bad_response", "an invalid header from upstream")
    return out


async def _relay_body(resp: Any, bodiless: bool, send: Any, limit: int) -> tuple[list[bytes], int]:
    """Send the upstream's body to the caller; (the pieces kept, up to ``limit`` bytes, and
    the body's whole size)."""
    kept: list[bytes] = []
    size = 0
    if bodiless:
        await send({"type": "http.response.body", "body": b""})
    elif resp.content_length is not None and resp.content_length <= limit:
        data = await resp.read()  # the common case: one piece
        size = len(data)
        kept.append(data)
        await send({"type": "http.response.body", "body": data})
    else:
        async for chunk in resp.content.iter_chunked(_PIECE):
            size += len(chunk)
            if size <= limit:
                kept.append(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    return kept, size


def _size(ex: Exchange) -> int:
    return len(ex.request_body) + len(ex.response_body) + 512


def _forwarded(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """The request headers to send upstream: all but the hop-by-hop ones, and those the
    caller's Connection header names."""
    named: set[bytes] = set()
    for k, v in headers:
        if k == b"connection":
            named.update(t.strip().lower() for t in v.split(b","))
    return [
        (k.decode("latin-1"), v.decode("latin-1"))
        for k, v in headers
        if k not in _HOP_BY_HOP and k not in named
    ]


def _kept(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The request headers capture looks at: content type and encoding, and X- headers."""
    return {
        k.decode("latin-1"): v.decode("latin-1")
        for k, v in headers
        if k in (b"content-type", b"content-encoding") or k.startswith(b"x-")
    }


async def _read_up_to(receive: Any, limit: int) -> tuple[bytes, Any]:
    """The request body when it is at most ``limit`` bytes: (body, None). Otherwise (the
    part read, receive): the rest is streamed upstream unkept."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _Aborted
        chunk = message.get("body", b"")
        parts.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(parts), None
        if size > limit:
            return b"".join(parts), receive


async def _stream(first: bytes, receive: Any) -> Any:
    yield first
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ConnectionError("the caller went away mid-body")
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


async def _reply(
    send: Any, status: int, body: bytes, close: bool, ctype: bytes | None = b"application/json"
) -> None:
    headers = [(b"content-length", b"%d" % len(body))]
    if ctype is not None:
        headers.append((b"content-type", ctype))
    if close:
        headers.append((b"connection", b"close"))  # the unread request body is on the wire
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ProxyProcess:
    """The exporter's side of the proxy: starts the proxy process, turns the calls it
    captures into events, and stops the exporter if the proxy dies."""

    def __init__(self, settings: ProxySettings, monitor: Monitor, stats: ProxyStats) -> None:
        self.settings = settings
        self.monitor = monitor
        self.stats = stats
        self.process: Any = None

    def start(self) -> int:
        """Start the proxy process; returns its bound port (raises OSError if it cannot
        listen)."""
        ctx = mp.get_context("fork")  # the proxy shares the config and the shared counters
        recv, send = ctx.Pipe(duplex=False)
        ports = ctx.Queue()
        self.process = ctx.Process(
            target=_proxy_main, args=(self.settings, self.stats, send, ports),
            name="mlmon-proxy", daemon=True,
        )  # fmt: skip
        self.process.start()
        self.stats.pid = self.process.pid
        send.close()
        try:
            status, value = ports.get(timeout=15)
        except queue.Empty:
            status, value = "error", "timed out"
        if status != "ok":
            self.process.kill()
            raise OSError(f"the proxy cannot listen on {self.settings.listen_address}: {value}")
        threading.Thread(
            target=self._receive, args=(recv,), name="mlmon-capture", daemon=True
        ).start()
        threading.Thread(target=self._watch, name="mlmon-proxy-watch", daemon=True).start()
        return int(value)

    def _watch(self) -> None:
        self.process.join()
        log.error("the proxy process exited (code %s); stopping", self.process.exitcode)
        os.kill(os.getpid(), signal.SIGTERM)

    def _receive(self, conn: Connection) -> None:
        while True:
            try:
                batch = conn.recv()
            except (EOFError, OSError):
                return
            # the models of the moment: a reload may have replaced them
            schemas = {n: m.schema for n, m in self.monitor.models.items()}
            self.capture(Capturer(self.settings, schemas), batch)

    def capture(self, capturer: Capturer, exchanges: list[Exchange]) -> None:
        """Decode exchanges and ingest their events, grouped by model."""
        by_model: dict[str, list[dict[str, Any]]] = {}
        for ex in exchanges:
            try:
                name, events = capturer.events(ex)
            except CaptureError as e:
                self.stats.count(self.stats.capture_failures, e.reason)
                log.debug("capture failed (%s): %s", e.reason, e)
                continue
            except Exception:
                self.stats.count(self.stats.capture_failures, "internal_error")
                log.exception("capture failed")
                continue
            by_model.setdefault(name, []).extend(events)
            self.stats.count(self.stats.captured, ex.protocol)
        counters = self.monitor.counters
        for name, events in by_model.items():
            m = self.monitor.models.get(name)
            if m is None:
                self.stats.count(self.stats.capture_failures, "unknown_model")
                continue
            limit = self.monitor.config.limits["max_batch_events"]
            for i in range(0, len(events), limit):
                part = events[i : i + limit]
                try:
                    batch, details = m.ingest(part, partial=True)
                except Exception:
                    self.stats.count(self.stats.capture_failures, "internal_error")
                    log.exception("ingest of captured events failed")
                    continue
                counters.count(counters.events, name, batch.n)
                if details:
                    bad = len({d["index"] for d in details})
                    counters.count(counters.rejected_events, name, bad)
                    self.stats.count(self.stats.capture_failures, "invalid_event")
                    log.debug("captured events invalid: %s", details[:3])


def _proxy_main(settings: ProxySettings, stats: ProxyStats, conn: Connection, ports: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the exporter, which stops us
    Proxy(settings, stats).serve(conn, ports)
