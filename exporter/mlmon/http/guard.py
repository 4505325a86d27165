"""What the HTTP servers (the exporter's and the proxy's) add around uvicorn's protocol.

uvicorn with httptools (llhttp, strict mode) parses every request; nothing here reads a
header or a chunk. This subclass of uvicorn's protocol adds what uvicorn lacks:

- deadlines: the whole request head must arrive within ``header_timeout`` (from the first
  byte of a request, or from the connection's opening for its first request); a body may
  fall silent for at most ``body_timeout``; a keep-alive connection may idle for at most
  ``idle_timeout``; a client that stops reading its response (the server's send buffer
  full) has ``body_timeout`` to resume. A connection past its deadline is closed (with a
  408 when a request was under way), so a client that trickles bytes, or never reads,
  cannot hold a connection;
- a cap on open connections: at the cap, a newcomer evicts the oldest connection that has
  not yet sent a complete request head (a slow or idle client), so health checks and
  scrapes still get in during a slow-client flood; with no such connection it is refused;
- a head size limit (431 above ``head_limit`` bytes);
- the RFC 9112 checks that llhttp leaves to the application, decided on what llhttp
  parsed: exactly one Host in HTTP/1.1 (§3.2), no Transfer-Encoding but a single
  ``chunked`` (§6.1: we implement no other coding), no HTTP/0.9. llhttp also tolerates
  extra spaces in the request line; a request line that starts a read is checked against
  the request-line grammar of §3 (one space between its three parts).

Every closing is counted by reason (`CLOSE_REASONS`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import (  # noqa: F401 -- patterns for the proxy
    HEADER_RE,
    HEADER_VALUE_RE,
    HttpToolsProtocol,
)

log = logging.getLogger("mlmon.http")

# RFC 9112 §3: method SP request-target SP HTTP-version, each part without spaces.
_REQUEST_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+ [^\x00-\x20\x7f]+ HTTP/[0-9]\.[0-9]")

# Requests a client may queue ahead of the one being answered (pipelining); more is abuse.
MAX_PIPELINE = 16

# Phases of a connection, for its deadline.
_WAITING, _HEAD, _BODY, _APP = range(4)
_SWEEP_SECONDS = 0.5


@dataclass(frozen=True)
class Limits:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 60.0
    max_connections: int = 1000
    head_limit: int = 64 * 1024


class Guard:
    """The connections of one server, their deadlines and the cap."""

    def __init__(self, limits: Limits, count: Callable[[str], None] | None = None) -> None:
        self.limits = limits
        self.count = count or (lambda reason: None)
        self.open: dict[GuardedProtocol, None] = {}  # in order of arrival
        self._sweeper: asyncio.Task | None = None

    def admit(self, conn: GuardedProtocol) -> bool:
        """Room for ``conn``: evict the oldest connection still waiting for a complete
        head if the server is full. False when every connection is mid-request."""
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        if len(self.open) >= self.limits.max_connections:
            # the oldest waiting for a head or not reading, else the oldest still sending a
            # body (a trickle that resets body_timeout with every byte must not lock anyone out)
            victim = next((c for c in self.open if c.phase <= _HEAD or c.stalled), None)
            victim = victim or next((c for c in self.open if c.phase == _BODY), None)
            if victim is None:
                self.count("refused")
                return False
            self.count("evicted")
            self.forget(victim)
            if victim.stalled:
                victim.transport.abort()
            else:
                victim.transport.close()
        self.open[conn] = None
        return True

    def forget(self, conn: GuardedProtocol) -> None:
        self.open.pop(conn, None)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_SECONDS)
            now = time.monotonic()
            late = [c for c in self.open if c.deadline is not None and c.deadline < now]
            for c in late:
                c.expire()


def guarded_protocol(guard: Guard) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol class bound to ``guard``, for `uvicorn.Config(http=...)`."""
    return type("GuardedProtocol", (GuardedProtocol,), {"guard": guard})


class GuardedProtocol(HttpToolsProtocol):
    guard: Guard

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.phase = _WAITING
        self.deadline: float | None = None
        self._head_bytes = 0
        self._fresh = True  # the connection's first request has not begun
        self._line: bytearray | None = None  # a request line being collected for its check
        self._at_start = True  # the next byte received starts a request
        self._ended = False  # a request ended during the current read
        self._head_size = 0  # of the current request's head, from what llhttp parsed
        self._too_large = False
        self._half_closed = False  # the client sent its request and shut down its side
        self.stalled = False  # the client does not read: the send buffer is full

    # -- connection ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.guard.admit(self):
            transport.close()
            return
        self.deadline = time.monotonic() + self.guard.limits.header_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.forget(self)
        super().connection_lost(exc)

    def eof_received(self) -> bool | None:
        """A client that shuts down its sending side after a complete request still gets its
        answer (then the connection closes); otherwise the connection closes now."""
        if self.phase == _APP and self.cycle is not None and not self.cycle.response_complete:
            self._half_closed = True
            return True
        return None

    def expire(self) -> None:
        """Called by the guard when this connection's deadline has passed."""
        self.deadline = None
        self.guard.forget(self)
        if self.stalled:  # what is buffered will never be read: drop it with the connection
            self.guard.count("send_timeout")
            self.transport.abort()
            return
        reason = ("idle_timeout", "header_timeout", "body_timeout", "idle_timeout")[self.phase]
        if self.phase == _WAITING and self._fresh:
            reason = "header_timeout"  # opened, and not one byte of a request within the limit
        self.guard.count(reason)
        if self.phase in (_HEAD, _BODY) and not (self.cycle and self.cycle.response_started):
            self.transport.write(_plain(408, b"request not received in time\n"))
        self.transport.close()

    # -- bytes ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        limits = self.guard.limits
        if self.phase == _WAITING:
            self.phase = _HEAD
            if not self._fresh:
                self.deadline = time.monotonic() + limits.header_timeout
        elif self.phase == _BODY:
            self.deadline = time.monotonic() + limits.body_timeout
        if self.phase == _HEAD:
            self._head_bytes += len(data)
        if self._at_start:
            self._at_start = False
            self._line = bytearray()
        if self._line is not None and not self._check_request_line(data):
            return
        self._ended = False
        super().data_received(data)
        if self._ended:  # the read ended with a complete request: the next starts a read
            self._at_start = True
        if (
            self.phase == _HEAD
            and self._head_bytes > limits.head_limit
            and not self.transport.is_closing()
        ):
            self.guard.count("head_too_large")
            self.transport.write(_plain(431, b"request head too large\n"))
            self.transport.close()

    def _check_request_line(self, data: bytes) -> bool:
        """Collect the request line that starts a read and check its shape; False (and a
        400) when it is malformed."""
        line = self._line
        assert line is not None
        line += data[: self.guard.limits.head_limit + 2]
        end = line.find(b"\r\n")
        if end < 0 and len(line) <= self.guard.limits.head_limit:
            return True
        self._line = None
        if _REQUEST_LINE.fullmatch(line, 0, max(end, 0)) is None:
            self.send_400_response("Invalid HTTP request line.")
            return False
        return True

    def send_400_response(self, msg: str) -> None:
        self.phase = _APP
        self.deadline = None
        if self._too_large:
            self.guard.count("head_too_large")
            self.transport.write(_plain(431, b"request head too large\n"))
            self.transport.close()
            return
        self.guard.count("bad_request")
        log.debug("refused a malformed request from %s: %s", self.client, msg)
        super().send_400_response(msg)

    # -- parser callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._fresh = False
        if self.phase == _WAITING:  # pipelined: began within the previous request's read
            self.phase = _HEAD
            self.deadline = time.monotonic() + self.guard.limits.header_timeout
        self._ended = False
        self._head_size = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._grow(len(url) + 16)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._grow(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _grow(self, n: int) -> None:
        self._head_size += n
        if self._head_size > self.guard.limits.head_limit:
            self._too_large = True
            raise ValueError("request head too large")  # stops the parser: 431

    def on_headers_complete(self) -> None:
        problem = self._invalid_head()
        if problem is None and len(self.pipeline) >= MAX_PIPELINE:
            problem = "too many pipelined requests"
        if problem is not None:
            # raised inside the parser's callback: httptools stops and uvicorn answers 400
            raise ValueError(problem)
        self.phase = _BODY
        self._head_bytes = 0
        self.deadline = time.monotonic() + self.guard.limits.body_timeout
        super().on_headers_complete()
        # uvicorn appends trailer fields to the same list: the request keeps its own copy,
        # so a trailer can never add or replace a header after the checks above
        self.scope["headers"] = list(self.headers)

    def _invalid_head(self) -> str | None:
        version = self.parser.get_http_version()
        if version == "0.9":
            return "HTTP/0.9 is not supported"
        hosts = 0
        codings = 0
        for name, value in self.headers:
            if name == b"host":
                hosts += 1
            elif name == b"transfer-encoding":
                codings += 1
                if value.strip().lower() != b"chunked":
                    return "only Transfer-Encoding: chunked is supported"
        if hosts > 1 or (hosts == 0 and version == "1.1"):
            return "an HTTP/1.1 request needs exactly one Host header"
        if codings > 1:
            return "repeated Transfer-Encoding"
        return None

    def on_message_complete(self) -> None:
        self.phase = _APP
        self.deadline = None
        self._ended = True
        super().on_message_complete()

    def pause_writing(self) -> None:
        """The client is not reading what we send: it has ``body_timeout`` to resume."""
        self.stalled = True
        self.deadline = time.monotonic() + self.guard.limits.body_timeout
        super().pause_writing()

    def resume_writing(self) -> None:
        self.stalled = False
        if self.phase == _APP:
            self.deadline = None
        elif self.phase == _WAITING:
            self.deadline = time.monotonic() + self.guard.limits.idle_timeout
        super().resume_writing()

    def on_response_complete(self) -> None:
        if self._half_closed:
            self.transport.close()
            return
        super().on_response_complete()
        if self.phase == _APP and not self.pipeline and not self.transport.is_closing():
            self.phase = _WAITING
            if not self.stalled:  # else the send deadline stands
                self.deadline = time.monotonic() + self.guard.limits.idle_timeout


def _plain(status: int, body: bytes) -> bytes:
    phrase = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (status, phrase, len(body), body)
    )
