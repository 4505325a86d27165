"""A non-blocking Python client for model code: `log()` returns at once, a background thread
batches and sends to the sidecar.

    from mlmon.capture.client import Client
    mlmon = Client("http://127.0.0.1:9797", model="credit-risk")
    mlmon.log({"age": 42, "income": 51000.0}, prediction=1, scores={"1": 0.83}, id="req-42")
    mlmon.label("req-42", 0)            # later, when the ground truth is known

The buffer is bounded (``max_buffer`` events and labels, counting those being sent): while
the sidecar is away the client keeps what it can, drops beyond the bound and counts the
drops; when the sidecar returns, the buffered events arrive. With an ingest token
(``token=``, ``token_file=`` or the environment variable MLMON_INGEST_TOKEN) every request
carries it as a bearer token. Sending retries with exponential backoff. Nothing here
ever raises into the model's code, and `close()` (also run at exit) flushes what it can.
Standard library only.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from typing import Any

log = logging.getLogger("mlmon.client")


class Client:
    def __init__(
        self,
        url: str = "http://127.0.0.1:9797",
        model: str = "model",
        max_buffer: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        timeout: float = 2.0,
        max_backoff: float = 30.0,
        token: str | None = None,
        token_file: str | os.PathLike | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Content-Type": "application/json"}
        secret = _token(token, token_file)
        if secret is not None:
            self._headers["Authorization"] = f"Bearer {secret}"
        self.model = model
        self.max_buffer = max_buffer
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.timeout = timeout
        self.max_backoff = max_backoff
        self._items: deque[tuple[str, dict[str, Any]]] = deque()
        self._in_flight = 0  # taken from the buffer, being sent: still within the bound
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._closed = False
        self.sent = 0  # events and labels the sidecar accepted
        self.dropped = 0  # refused because the buffer was full
        self.rejected = 0  # the sidecar answered 4xx: not retried
        self.failures = 0  # failed attempts (retried)
        self._thread = threading.Thread(target=self._run, name="mlmon-client", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # ----------------------------------------------------------- called by model code
    def log(
        self,
        features: dict[str, Any],
        prediction: Any = None,
        *,
        id: Any = None,
        version: str | None = None,
        scores: Any = None,
        latency_seconds: float | None = None,
        groups: dict[str, Any] | None = None,
        error: str | None = None,
        timestamp: float | None = None,
    ) -> bool:
        """Queue one inference; False when the buffer is full (the event is dropped)."""
        try:
            event: dict[str, Any] = {"features": features}
            for key, value in (
                ("prediction", prediction),
                ("id", id),
                ("version", version),
                ("scores", scores),
                ("latency_seconds", latency_seconds),
                ("groups", groups),
                ("error", error),
                ("timestamp", timestamp),
            ):
                if value is not None:
                    event[key] = value
            return self._put("predictions", event)
        except Exception:
            return False

    def label(self, id: Any, label: Any) -> bool:
        """Queue one ground-truth label; False when the buffer is full."""
        try:
            return self._put("labels", {"id": id, "label": label})
        except Exception:
            return False

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the buffer is empty (or ``timeout``); True if it is."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        while time.monotonic() < deadline:
            with self._lock:
                if not self._items and self._idle.is_set():
                    return True
            self._wake.set()
            time.sleep(0.01)
        return False

    def close(self, timeout: float = 5.0) -> None:
        if self._closed:
            return
        self.flush(timeout)
        self._closed = True
        self._wake.set()

    # ----------------------------------------------------------- the background thread
    def _put(self, kind: str, item: dict[str, Any]) -> bool:
        with self._lock:
            if len(self._items) + self._in_flight >= self.max_buffer:
                self.dropped += 1
                return False
            self._items.append((kind, item))
            full = len(self._items) >= self.batch_size
        if full:
            self._wake.set()
        return True

    def _take(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            n = min(self.batch_size, len(self._items))
            batch = [self._items.popleft() for _ in range(n)]
            self._in_flight = n
            if batch:
                self._idle.clear()
            return batch

    def _done(self, unsent: list[tuple[str, dict[str, Any]]]) -> None:
        """The batch in flight is settled; what could not be sent goes back in front (it
        was counted within the bound all along, so it always fits)."""
        with self._lock:
            self._in_flight = 0
            self._items.extendleft(reversed(unsent))

    def _run(self) -> None:
        backoff = 0.0
        while not self._closed:
            self._wake.wait(self.flush_interval if backoff == 0 else backoff)
            self._wake.clear()
            while True:
                batch = self._take()
                if not batch:
                    self._idle.set()
                    break
                unsent = self._send(batch)
                self._done(unsent)
                if not unsent:
                    backoff = 0.0
                    self._idle.set()
                    continue
                self._idle.set()
                self.failures += 1
                backoff = min(max(backoff * 2, 0.1), self.max_backoff)
                break

    def _send(self, batch: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
        """Send predictions, then labels; returns what must be tried again (nothing when the
        sidecar accepted or refused for good)."""
        for kind in ("predictions", "labels"):
            items = [item for k, item in batch if k == kind]
            if not items:
                continue
            key = "events" if kind == "predictions" else "labels"
            body = json.dumps({key: items}, default=_jsonable).encode()
            req = urllib.request.Request(
                f"{self.url}/v1/models/{self.model}/{kind}",
                data=body,
                method="POST",
                headers=self._headers,
            )
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as r:
                    r.read()
                self.sent += len(items)
            except urllib.error.HTTPError as e:
                if 400 <= e.code < 500 and e.code != 429:
                    self.rejected += len(items)  # a bad batch stays bad: do not retry it
                    log.warning("mlmon refused %d %s: %s", len(items), kind, e.read()[:200])
                else:
                    return [b for b in batch if b[0] == kind or kind == "predictions"]
            except (OSError, ValueError):
                return [b for b in batch if b[0] == kind or kind == "predictions"]
        return []


def _token(token: str | None, token_file: str | os.PathLike | None) -> str | None:
    """The ingest token: given, read from a file, or from MLMON_INGEST_TOKEN; an empty one
    is a mistake worth raising at start (it would be refused on every call)."""
    if token is None and token_file is not None:
        with open(token_file) as f:
            token = f.read()
    if token is None:
        token = os.environ.get("MLMON_INGEST_TOKEN")
    if token is not None and not token.strip():
        raise ValueError("the mlmon ingest token is empty")
    return token.strip() if token is not None else None


def _jsonable(value: Any) -> Any:
    """numpy scalars and the like, as plain JSON; NaN as the token the sidecar counts as
    missing."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)
