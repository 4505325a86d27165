"""Small HTTP/1.1 pieces shared by the proxy and the front server: a parsed message head
that keeps its raw bytes, and a complete response."""

from __future__ import annotations

from http import HTTPStatus

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
