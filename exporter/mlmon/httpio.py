"""Small HTTP/1.1 pieces shared by the proxy and the front server: a parsed message head
that keeps its raw bytes, and a complete response."""

from __future__ import annotations

import asyncio
from http import HTTPStatus

HEAD_LIMIT = 64 * 1024  # a request head larger than this gets 431
_KEPT_HEADERS = frozenset({b"content-type", b"content-encoding"})


class Head:
    """A parsed request or response head, kept with its raw bytes for forwarding."""

    __slots__ = ("chunked", "close", "first", "headers", "length", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        lines = raw[:-4].split(b"\r\n")
        self.first = lines[0]
        self.headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise ValueError("malformed header line")
            key = name.strip().lower()
            value = value.strip()
            if key in self.headers:  # repeated headers: comma-joined, as HTTP allows
                self.headers[key] += b", " + value
            else:
                self.headers[key] = value
        te = self.headers.get(b"transfer-encoding", b"").lower()
        self.chunked = te.endswith(b"chunked")
        cl = self.headers.get(b"content-length")
        self.length = int(cl) if cl is not None and not self.chunked else None
        if self.length is not None and self.length < 0:
            raise ValueError("negative content-length")
        self.close = b"close" in self.headers.get(b"connection", b"").lower()

    def text_headers(self) -> dict[str, str]:
        return {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in self.headers.items()
            if k in _KEPT_HEADERS or k.startswith(b"x-")
        }


def phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


def plain(status: int, body: bytes, ctype: bytes = b"text/plain; charset=utf-8") -> bytes:
    """A complete response with a body and its length."""
    return response(status, [(b"Content-Type", ctype)], body)


def response(
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    close: bool = False,
    head_only: bool = False,
) -> bytes:
    lines = [b"HTTP/1.1 %d %s" % (status, phrase(status))]
    lines += [k + b": " + v for k, v in headers]
    lines.append(b"Content-Length: %d" % len(body))
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (b"" if head_only else body)


class Request:
    """A request head, parsed: the raw bytes, the method, target and keep-alive."""

    __slots__ = ("head", "keep_alive", "method", "raw", "target")

    def __init__(self, raw: bytes, head: Head, method: bytes, target: bytes, version: bytes):
        self.raw, self.head, self.method, self.target = raw, head, method, target
        self.keep_alive = version == b"HTTP/1.1" and not head.close


async def read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> Request | None:
    """The next request head on a connection, or None when the connection should end: the
    client closed it, or its head was refused (431 over 64 KiB, 400 malformed, not
    HTTP/1.x, or both Content-Length and chunked — the shape of request smuggling). An
    `Expect: 100-continue` is answered here."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError:
        writer.write(plain(431, b"request head over 64 KiB\n"))
        await writer.drain()
        return None
    try:
        head = Head(raw)
        method, target, version = head.first.split(b" ", 2)
        if head.chunked and b"content-length" in head.headers:
            raise ValueError("both Content-Length and chunked")
        if not version.startswith(b"HTTP/1."):
            raise ValueError("not HTTP/1.x")
    except ValueError:
        writer.write(plain(400, b"malformed request head\n"))
        await writer.drain()
        return None
    if head.headers.get(b"expect", b"").lower() == b"100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    return Request(raw, head, method, target, version)
