"""The reverse proxy: forwards every request to the model server and every response back,
byte for byte, and hands a copy of inference calls to a capture thread.

The proxy never changes what the caller gets: the response's status line, headers and
body are relayed as the upstream wrote them (chunked framing included). Only when the
upstream cannot be reached (502) or does not answer in time (504) does the proxy answer
itself, with a JSON body saying why. Capture happens after the response has been written:
a bounded queue hands a copy of each inference call to the exporter; when the queue is full
the copy is dropped and counted, never waited for.

The proxy runs in a process of its own, so nothing the exporter does — decoding captured
payloads, ingesting, rendering a scrape — ever holds up a proxied call (Python threads
would share one interpreter lock). Its counters live in shared memory that the exporter
reads at scrape time; captured calls travel in batches over a pipe to the exporter's
capture thread. If the exporter goes away the proxy exits; if the proxy dies the exporter
stops (snapshotting first), so the pod restarts whole.

HTTP/1.1 with keep-alive on both sides; the upstream connections are pooled. An
``Expect: 100-continue`` is answered by the proxy (and not forwarded), so a client never
waits for the upstream to invite its body.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
from collections import Counter
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from .capture import CAPTURE_FAILURES, PROTOCOLS, CaptureError, Capturer, Exchange, classify
from .config import ProxySettings, split_address
from .httpio import HEAD_LIMIT, Head, plain, read_request

if TYPE_CHECKING:
    from .monitor import Monitor

log = logging.getLogger("mlmon.proxy")

# Why the proxy answered itself; `reason` of mlmon_proxy_upstream_failures_total.
UPSTREAM_FAILURES = ("unreachable", "connect_timeout", "timeout", "disconnected", "bad_response")
# Upper bounds of the proxy's request-duration histogram, in seconds.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CAPTURE_DELAY_SECONDS = 0.05
SWITCH_INTERVAL_SECONDS = 0.0002
_PIECE = 64 * 1024


_CODES = range(100, 600)


class ProxyStats:
    """The proxy's counters, exported as mlmon_proxy_*. What the proxy process counts
    (requests, durations, upstream failures, dropped captures, queue length) sits in
    shared memory it alone writes; what the exporter's capture thread counts (capture
    failures, captured calls) is ordinary state of the exporter."""

    def __init__(self) -> None:
        n_proto, n_buckets = len(PROTOCOLS), len(DURATION_BUCKETS) + 1
        self._shm = mp.RawArray("d", n_proto * len(_CODES) + n_proto * (n_buckets + 1) + 7)
        flat = np.frombuffer(self._shm, dtype=np.float64)
        i = n_proto * len(_CODES)
        self._requests = flat[:i].reshape(n_proto, len(_CODES))
        j = i + n_proto * n_buckets
        self._durations = flat[i:j].reshape(n_proto, n_buckets)
        self._duration_sums = flat[j : j + n_proto]
        k = j + n_proto
        self._upstream = flat[k : k + len(UPSTREAM_FAILURES)]
        self._queue = flat[k + len(UPSTREAM_FAILURES) : k + len(UPSTREAM_FAILURES) + 2]
        self._proto_index = {p: n for n, p in enumerate(PROTOCOLS)}
        self._upstream_index = {r: n for n, r in enumerate(UPSTREAM_FAILURES)}
        self.lock = threading.Lock()
        self.capture_failures: Counter[str] = Counter(dict.fromkeys(CAPTURE_FAILURES, 0))
        self.captured: Counter[str] = Counter()  # exchanges turned into events, by protocol

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
        }


class _UpstreamError(Exception):
    def __init__(self, reason: str, message: str, sent: bool = False) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message
        self.sent = sent  # part of the response already went to the client


class _ClientBodyError(Exception):
    """The caller's request body is not valid HTTP framing."""


class Proxy:
    """The forwarding engine; runs in the proxy process (see `ProxyProcess`)."""

    def __init__(self, settings: ProxySettings, stats: ProxyStats) -> None:
        self.settings = settings
        self.stats = stats
        self.host, self.port = settings.upstream_host_port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.queue: queue.Queue[Exchange] = queue.Queue(maxsize=settings.queue_size)

    def serve(self, conn: Connection, ports: Any) -> None:
        """Listen, report the bound port (or the error) on ``ports``, forward until the
        exporter goes away; captured calls go to ``conn``."""
        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)  # the sender thread yields quickly
        loop = asyncio.new_event_loop()
        host, port = split_address(self.settings.listen_address)
        try:
            server = loop.run_until_complete(
                asyncio.start_server(self._client, host, port, limit=HEAD_LIMIT, backlog=1024)
            )
        except OSError as e:
            ports.put(("error", e.strerror or str(e)))
            return
        ports.put(("ok", server.sockets[0].getsockname()[1]))
        threading.Thread(
            target=self._send_captures, args=(conn, os.getppid()), name="mlmon-proxy-send",
            daemon=True,
        ).start()  # fmt: skip
        loop.run_forever()

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
            self.stats.set_queue_length(self.queue.qsize())
            try:
                conn.send(batch)
            except (OSError, ValueError):
                os._exit(0)

    # -- one client connection -------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except Exception:  # a bug must not take the proxy down; the connection is dropped
            log.exception("proxy connection failed")
        finally:
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        req = await read_request(reader, writer)
        if req is None:
            return False
        started = time.time()
        t0 = time.perf_counter()
        head, method, raw = req.head, req.method, req.raw
        keep_alive = req.keep_alive
        protocol, model_key, path_version = classify(
            method.decode("latin-1"), req.target.decode("latin-1"), self.settings
        )
        limit = self.settings.max_capture_bytes
        raw_head = raw
        if head.headers.get(b"expect", b"").lower() == b"100-continue":
            raw_head = _without_header(raw, b"expect")  # answered already; not forwarded
        # The request body: read whole when small (so a stale pooled connection can be
        # retried), streamed through otherwise.
        body: bytes | None = b""
        if head.chunked:
            body = None
        elif head.length:
            body = await reader.readexactly(head.length) if head.length <= limit else None
        ex = Exchange(
            protocol, model_key, path_version, started, request_headers=head.text_headers()
        )
        if body is not None:
            ex.request_body = body
        try:
            resp_head = await self._forward(raw_head, head, body, reader, writer, ex, method)
            status = int(resp_head.first.split(b" ", 2)[1])
            if resp_head.close or _until_close(resp_head, method):
                keep_alive = False  # the caller was told (or will see) the connection end
        except _ClientBodyError:
            writer.write(plain(400, b"malformed request body\n"))
            await writer.drain()
            return False
        except _UpstreamError as e:
            self.stats.upstream_failure(e.reason)
            if e.sent:
                self.stats.request(protocol, 502, time.perf_counter() - t0)
                return False  # the response was cut: the caller sees the connection drop
            status = 504 if e.reason == "timeout" else 502
            msg = {
                "error": f"mlmon proxy: {e.message}",
                "reason": e.reason,
                "upstream": self.settings.upstream,
            }
            writer.write(plain(status, orjson.dumps(msg) + b"\n", b"application/json"))
            ex.status, ex.failure = status, e.reason
            ex.latency = time.perf_counter() - t0
            if (head.length and body is None) or head.chunked:
                keep_alive = False  # the unread request body is still on the wire
        await writer.drain()
        self.stats.request(protocol, status, time.perf_counter() - t0)
        if protocol != "none":
            if ex.failure is None:
                ex.status = status
            try:
                self.queue.put_nowait(ex)
            except queue.Full:
                self.stats.dropped()
        return keep_alive

    # -- the upstream ------------------------------------------------------------------

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        while self._idle:
            r, w = self._idle.pop()
            if not r.at_eof() and not w.is_closing():
                return r, w, True
            w.close()
        try:
            r, w = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=HEAD_LIMIT),
                self.settings.connect_timeout_seconds,
            )
        except TimeoutError:
            raise _UpstreamError(
                "connect_timeout",
                f"no connection to the upstream within {self.settings.connect_timeout_seconds}s",
            ) from None
        except OSError as e:
            raise _UpstreamError(
                "unreachable", f"upstream unreachable: {os.strerror(e.errno) if e.errno else e}"
            ) from None
        return r, w, False

    async def _forward(
        self,
        raw_head: bytes,
        head: Head,
        body: bytes | None,
        creader: asyncio.StreamReader,
        cwriter: asyncio.StreamWriter,
        ex: Exchange,
        method: bytes,
    ) -> Head:
        limit = self.settings.max_capture_bytes
        for attempt in (0, 1):
            ur, uw, reused = await self._connect()
            t0 = time.perf_counter()
            replied = False
            try:
                async with asyncio.timeout(self.settings.timeout_seconds):
                    if body is not None:
                        uw.write(raw_head + body)
                    else:
                        uw.write(raw_head)
                        try:
                            ex.request_body, ex.too_large = await _relay_body(
                                head, creader, uw, limit
                            )
                        except (ValueError, asyncio.IncompleteReadError):
                            uw.close()
                            raise _ClientBodyError from None
                    await uw.drain()
                    try:
                        resp = await _read_response_head(ur, cwriter)
                    except (ConnectionError, asyncio.IncompleteReadError):
                        uw.close()
                        if reused and attempt == 0 and body is not None:
                            continue  # a pooled connection the upstream had closed: retry
                        raise
                    cwriter.write(resp.raw)
                    replied = True
                    try:
                        if method == b"HEAD" or _bodiless(resp):
                            data, large = b"", False
                        else:
                            data, large = await _relay_body(resp, ur, cwriter, limit)
                    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
                        uw.close()
                        raise _UpstreamError(
                            "disconnected", "the upstream closed mid-response", sent=True
                        ) from None
            except TimeoutError:
                uw.close()
                raise _UpstreamError(
                    "timeout",
                    f"no complete response from the upstream within "
                    f"{self.settings.timeout_seconds}s",
                    sent=replied,
                ) from None
            except (ConnectionError, asyncio.IncompleteReadError):
                uw.close()
                raise _UpstreamError(
                    "disconnected", "the upstream closed the connection without a response"
                ) from None
            except ValueError:
                uw.close()
                raise _UpstreamError(
                    "bad_response", "the upstream's response is not HTTP"
                ) from None
            ex.latency = time.perf_counter() - t0
            ex.response_body, ex.too_large = data, ex.too_large or large
            ex.response_headers = resp.text_headers()
            if resp.close or (resp.length is None and not resp.chunked) or head.close:
                uw.close()
            else:
                self._idle.append((ur, uw))
            return resp
        raise AssertionError("unreachable")


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


async def _read_response_head(reader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> Head:
    """The final response head; interim 1xx responses are relayed as they come."""
    while True:
        raw = await reader.readuntil(b"\r\n\r\n")
        if not raw.startswith(b"HTTP/1."):
            raise ValueError("not an HTTP response")
        head = Head(raw)
        code = head.first.split(b" ", 2)[1]
        if not code.isdigit():
            raise ValueError("bad status")
        if code.startswith(b"1") and code != b"101":
            cwriter.write(raw)
            continue
        return head


def _bodiless(head: Head) -> bool:
    code = head.first.split(b" ", 2)[1]
    return code.startswith(b"1") or code in (b"204", b"304")


def _until_close(head: Head, method: bytes) -> bool:
    """Whether the response body runs until the connection closes."""
    return head.length is None and not head.chunked and not _bodiless(head) and method != b"HEAD"


async def _relay_body(
    head: Head, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit: int
) -> tuple[bytes, bool]:
    """Copy a message body from reader to writer unchanged; returns the decoded body (for
    capture) and whether it was over ``limit`` (then it is not kept)."""
    kept: list[bytes] = []
    size = 0
    if head.chunked:
        while True:
            line = await reader.readuntil(b"\r\n")
            writer.write(line)
            n = int(line.split(b";", 1)[0].strip(), 16)
            if n == 0:
                while True:  # trailers, up to the empty line
                    t = await reader.readuntil(b"\r\n")
                    writer.write(t)
                    if t == b"\r\n":
                        break
                break
            data = await reader.readexactly(n + 2)
            writer.write(data)
            size += n
            if size <= limit:
                kept.append(data[:-2])
            await writer.drain()
    elif head.length is not None:
        remaining = head.length
        while remaining:
            data = await reader.read(min(remaining, _PIECE))
            if not data:
                raise asyncio.IncompleteReadError(b"", remaining)
            writer.write(data)
            remaining -= len(data)
            size += len(data)
            if size <= limit:
                kept.append(data)
            if remaining:
                await writer.drain()
    else:  # until the connection closes
        while data := await reader.read(_PIECE):
            writer.write(data)
            size += len(data)
            if size <= limit:
                kept.append(data)
            await writer.drain()
    too_large = size > limit
    return (b"" if too_large else b"".join(kept)), too_large


def _without_header(raw: bytes, name: bytes) -> bytes:
    lines = raw[:-4].split(b"\r\n")
    kept = [lines[0]] + [
        line for line in lines[1:] if line.partition(b":")[0].strip().lower() != name
    ]
    return b"\r\n".join(kept) + b"\r\n\r\n"
