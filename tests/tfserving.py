"""A small model server speaking TensorFlow Serving's documented REST payloads, for the
proxy tests: `POST /v1/models/{m}[/versions/{v}]:predict` with row `instances` (lists or
named objects) or columnar `inputs` (a list of rows or a mapping of columns).

The model is a fixed logistic scorer over the numeric inputs; `signature_name: "proba"`
returns probabilities per class. A few request headers steer it for fault tests:
``X-Test-Sleep`` (seconds before answering), ``X-Test-Status`` (answer with that status),
``X-Test-Chunked`` (send the body chunked). `GET /v1/models/{m}` is the status call.

Run: ``python tests/tfserving.py PORT`` (0: any port; the chosen one is printed).
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

NUMERIC = ("age", "income", "debt_ratio", "credit_lines", "months_employed")
WEIGHTS = (-0.03, -0.00002, 2.0, 0.05, -0.01)


def score(values: list[float]) -> float:
    z = sum(w * (v or 0.0) for w, v in zip(WEIGHTS, values, strict=False)) + 1.0
    return 1.0 / (1.0 + math.exp(-z))


def rows_of(doc: dict[str, Any]) -> list[list[float]]:
    if "instances" in doc:
        items = doc["instances"]
    else:
        items = doc["inputs"]
        if isinstance(items, dict):
            n = len(next(iter(items.values())))
            items = [{k: v[i] for k, v in items.items()} for i in range(n)]
    return [[it.get(k) for k in NUMERIC] if isinstance(it, dict) else it[:5] for it in items]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = b'{"model_version_status": [{"version": "1", "state": "AVAILABLE"}]}'
        self._send(200, body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(float(self.headers.get("X-Test-Sleep", 0)))
        status = int(self.headers.get("X-Test-Status", 200))
        if status != 200:
            self._send(status, json.dumps({"error": f"forced status {status}"}).encode())
            return
        try:
            doc = json.loads(body)
            rows = rows_of(doc)
        except (ValueError, KeyError, TypeError, StopIteration) as e:
            self._send(400, json.dumps({"error": f"bad request: {e}"}).encode())
            return
        probs = [score(r) for r in rows]
        if doc.get("signature_name") == "proba":
            preds: list[Any] = [[round(1 - p, 6), round(p, 6)] for p in probs]
        else:
            preds = [int(p >= 0.5) for p in probs]
        key = "predictions" if "instances" in doc else "outputs"
        out = json.dumps({key: preds}, indent=1).encode()  # odd spacing: bytes must survive
        self._send(200, out, chunked=bool(self.headers.get("X-Test-Chunked")))

    def _send(self, status: int, body: bytes, chunked: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Served-By", "tfserving-test")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(body), 7):
                part = body[i : i + 7]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a caller that gave up (the proxy's timeout) is expected in the fault tests
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def serve(port: int = 0) -> ThreadingHTTPServer:
    """Start in a background thread; the caller shuts it down."""
    httpd = Server(("127.0.0.1", port), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


if __name__ == "__main__":
    server = ThreadingHTTPServer(
        ("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0), Handler
    )
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()
