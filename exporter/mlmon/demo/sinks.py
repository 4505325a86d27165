"""Local notification sinks: a webhook receiver and a minimal SMTP server, both on
127.0.0.1. The native demo prints what Alertmanager sends to them; the integration tests
assert on it."""

from __future__ import annotations

import email
import email.policy
import json
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookSink:
    """Collects JSON POST bodies by path (``/pager``, ``/chat``, ...)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, on_post: Any = None) -> None:
        sink = self
        self.received: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.lock = threading.Lock()
        self.on_post = on_post

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"raw": raw.decode("utf-8", "replace")}
                with sink.lock:
                    sink.received.append((self.path, body, dict(self.headers)))
                if sink.on_post is not None:
                    sink.on_post(self.path, body)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "3")
                self.end_headers()
                self.wfile.write(b"ok\n")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def posts(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [b for p, b, _ in self.received if p == path]

    def headers(self, path: str) -> list[dict[str, str]]:
        with self.lock:
            return [h for p, _, h in self.received if p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmtpSink:
    """Just enough SMTP (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) to receive mail."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, on_message: Any = None) -> None:
        sink = self
        self.messages: list[email.message.EmailMessage] = []
        self.lock = threading.Lock()
        self.on_message = on_message

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write((line + "\r\n").encode())

            def handle(self) -> None:
                self.reply("220 mlmon-sink ESMTP")
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return
                    cmd = line.decode("utf-8", "replace").strip().upper()
                    if cmd.startswith(("EHLO", "HELO")):
                        self.reply("250-mlmon-sink")
                        self.reply("250 8BITMIME")
                    elif cmd.startswith("DATA"):
                        self.reply("354 end with <CRLF>.<CRLF>")
                        data = []
                        while True:
                            chunk = self.rfile.readline()
                            if chunk in (b".\r\n", b".\n", b""):
                                break
                            data.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                        msg = email.message_from_bytes(b"".join(data), policy=email.policy.default)
                        with sink.lock:
                            sink.messages.append(msg)
                        if sink.on_message is not None:
                            sink.on_message(msg)
                        self.reply("250 queued")
                    elif cmd.startswith("QUIT"):
                        self.reply("221 bye")
                        return
                    else:  # MAIL, RCPT, RSET, NOOP
                        self.reply("250 ok")

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server((host, port), Handler)
        self.port = self.server.server_address[1]
        self.address = f"{host}:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main(argv: list[str] | None = None) -> int:
    """`python -m mlmon.demo.sinks --port 8080`: print every webhook notification (the compose
    stack's stand-in for a pager gateway and a chat server)."""
    import argparse
    import signal

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    args = ap.parse_args(argv)

    def show(path: str, body: dict[str, Any]) -> None:
        for a in body.get("alerts", []):
            print(f"{path}: {a['status']} {a['labels']}", flush=True)
        for att in body.get("attachments", []):
            print(f"{path}: {att.get('title')}", flush=True)

    sink = WebhookSink(args.host, args.port, on_post=show)
    print(f"webhook sink listening on {sink.url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    sink.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
