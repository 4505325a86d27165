"""The exporter's HTTP server: asyncio, HTTP/1.1 with keep-alive.

The hot routes — `POST /v1/models/{model}/predictions`, `.../labels` and `GET /metrics` —
are answered by `api.Api` straight from the event loop (large bodies and the exposition in
a worker thread), with no framework in between. Every other route (admin API, stats,
health, landing page) goes to the Flask app through a minimal WSGI call in the worker
threads. Both paths share one implementation of each endpoint, so they answer alike.
"""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote, unquote_to_bytes

from .api import Api, Reply, json_reply
from .auth import Tokens
from .httpio import HEAD_LIMIT, Head, plain, read_request, response

log = logging.getLogger("mlmon.server")

_INLINE_BODY = 256 * 1024  # larger ingest bodies are handled in a worker thread
_HOP_BY_HOP = frozenset({"connection", "transfer-encoding", "keep-alive", "content-length"})
_INGEST = ("predictions", "labels")


class Server:
    def __init__(self, api: Api, wsgi_app: Callable, tokens: Tokens, threads: int) -> None:
        self.api = api
        self.app = wsgi_app
        self.tokens = tokens
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mlmon-http")
        self.limit = api.monitor.config.limits["max_body_bytes"]
        self.address = ("", 0)

    def serve_forever(self, sock: socket.socket) -> None:
        """Serve on an already bound socket until the process ends."""
        self.address = sock.getsockname()[:2]
        loop = asyncio.new_event_loop()
        server = loop.run_until_complete(
            asyncio.start_server(self._client, sock=sock, limit=HEAD_LIMIT, backlog=1024)
        )
        try:
            loop.run_forever()
        finally:
            server.close()
            self.pool.shutdown(wait=False)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        remote = peer[0] if isinstance(peer, tuple) else ""
        try:
            while await self._one(reader, writer, remote):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # a bug drops the connection, never the server
            log.exception("connection failed")
        finally:
            writer.close()

    async def _one(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, remote: str
    ) -> bool:
        req = await read_request(reader, writer)
        if req is None:
            return False
        head = req.head
        method = req.method.decode("latin-1")
        target = req.target.decode("latin-1")
        path, _, query = target.partition("?")
        keep_alive = req.keep_alive

        # the body: refused unread when declared too large (the connection then closes)
        too_large = head.length is not None and head.length > self.limit
        body = b""
        if head.chunked:
            try:
                body, too_large = await _read_chunked(reader, self.limit)
            except ValueError:
                writer.write(plain(400, b"malformed chunked body\n"))
                await writer.drain()
                return False
            keep_alive = keep_alive and not too_large
        elif head.length and not too_large:
            body = await reader.readexactly(head.length)
        elif too_large:
            keep_alive = False

        route = _route(method, path)
        if route is not None:
            reply = await self._hot(route, head, body, query, len(body) > _INLINE_BODY, too_large)
            writer.write(_reply_bytes(reply, not keep_alive, method == "HEAD"))
        else:
            if too_large:
                reply = json_reply(
                    {
                        "error": f"body exceeds the limit of {self.limit} bytes",
                        "reason": "body_too_large",
                        "details": [],
                    },
                    413,
                )
                writer.write(_reply_bytes(reply, True, False))
            else:
                loop = asyncio.get_running_loop()
                status, headers, out = await loop.run_in_executor(
                    self.pool, self._wsgi, method, path, query, head, body, remote
                )
                writer.write(response(status, headers, out, not keep_alive, method == "HEAD"))
        await writer.drain()
        if too_large:
            await _linger(reader, writer)
        return keep_alive

    async def _hot(
        self,
        route: tuple[str, str | None],
        head: Head,
        body: bytes,
        query: str,
        offload: bool,
        too_large: bool,
    ) -> Reply:
        endpoint, model = route
        h = head.headers
        auth = h.get(b"authorization")
        authorization = auth.decode("latin-1") if auth is not None else None
        token = self.tokens.metrics if endpoint == "metrics" else self.tokens.ingest
        refused = self.api.authorize(endpoint, token, authorization)
        if refused is not None:
            return refused
        if endpoint == "metrics":
            accept = h.get(b"accept-encoding", b"").decode("latin-1")
            return await asyncio.get_running_loop().run_in_executor(
                self.pool, self.api.metrics, accept
            )
        handler = self.api.predictions if endpoint == "predictions" else self.api.labels
        ctype = h.get(b"content-type")
        cenc = h.get(b"content-encoding")
        args = (
            model,
            body,
            (head.length or self.limit + 1) if too_large else len(body),
            ctype.decode("latin-1") if ctype is not None else None,
            cenc.decode("latin-1") if cenc is not None else None,
            _query_value(query, "partial"),
        )
        try:
            if offload:
                return await asyncio.get_running_loop().run_in_executor(self.pool, handler, *args)
            return handler(*args)
        except Exception:
            log.exception("internal error on %s", endpoint)
            counters = self.api.monitor.counters
            counters.count(counters.rejected, (endpoint, "internal_error"))
            return json_reply(
                {"error": "internal error", "reason": "internal_error", "details": []}, 500
            )

    def _wsgi(
        self, method: str, path: str, query: str, head: Head, body: bytes, remote: str
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Call the WSGI app for one request; (status, headers, body)."""
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": str(self.address[0]),
            "SERVER_PORT": str(self.address[1]),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": remote,
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for k, v in head.headers.items():
            name = k.decode("latin-1").upper().replace("-", "_")
            if name == "CONTENT_TYPE":
                environ["CONTENT_TYPE"] = v.decode("latin-1")
            elif name not in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):
                environ["HTTP_" + name] = v.decode("latin-1")
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info=None):
            started[:] = [status, headers]
            return lambda data: None

        result = self.app(environ, start_response)
        try:
            out = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        status, headers = started
        kept = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in headers
            if k.lower() not in _HOP_BY_HOP
        ]
        return int(status.split(" ", 1)[0]), kept, out


def _route(method: str, path: str) -> tuple[str, str | None] | None:
    """The hot endpoint of a request, with its model: or None for the WSGI app."""
    if method == "GET" and path == "/metrics":
        return "metrics", None
    if method == "POST" and path.startswith("/v1/models/"):
        parts = path.split("/")
        # ['', 'v1', 'models', model, 'predictions' | 'labels']
        if len(parts) == 5 and parts[4] in _INGEST and parts[3]:
            return parts[4], unquote(parts[3])
    return None


def _query_value(query: str, key: str) -> str | None:
    for part in query.split("&"):
        k, _, v = part.partition("=")
        if k == key:
            return unquote(v)
    return None


def _reply_bytes(reply: Reply, close: bool, head_only: bool) -> bytes:
    headers = [(b"Content-Type", reply.content_type.encode("latin-1"))]
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
    return response(reply.status, headers, reply.body, close, head_only)


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """After refusing a body unread: stop sending, then read and drop what the client still
    sends (bounded), so closing does not reset the connection before it reads the reply."""
    if writer.can_write_eof():
        writer.write_eof()
    dropped = 0
    try:
        async with asyncio.timeout(2.0):
            while dropped < 64 * 1024 * 1024 and (data := await reader.read(65536)):
                dropped += len(data)
    except (TimeoutError, ConnectionError):
        pass


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> tuple[bytes, bool]:
    """A chunked body, decoded; (b"", True) once it grows past ``limit`` (not read further)."""
    parts: list[bytes] = []
    size = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        n = int(line.split(b";", 1)[0].strip(), 16)
        if n == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return b"".join(parts), False
        size += n
        if size > limit:
            return b"", True
        parts.append((await reader.readexactly(n + 2))[:-2])
