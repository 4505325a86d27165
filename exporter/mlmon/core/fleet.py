"""What the replicas of a model share through Redis (or Valkey): the predictions waiting
for their labels, and the runtime thresholds.

Behind a Kubernetes Service, a label rarely reaches the replica that saw its prediction.
With a store, every replica writes each prediction's join record (version, predicted class
or value, score, group names, time) to Redis with the model's label time-to-live. The
writes are queued and sent in pipelined batches by one background thread, never on the
request path. A label posted to any replica takes its record from Redis with one atomic
script per request: the script marks each record taken, so a second label for the same id
is a duplicate wherever it lands. The replica that received the label counts the outcome,
so each labelled prediction is counted exactly once in the fleet, and sums over replicas
are exact.

Runtime thresholds live in one hash per model; each replica reads them every couple of
seconds (`Monitor.refresh_overrides`).

When Redis is down, ingest answers as before: records that cannot be written are dropped
and counted. Labels are refused with 503 and Retry-After before anything is applied, so a
sender's retry loses nothing. Thresholds stay as last read. After a failure, calls fail
fast for a second (`RETRY_SECONDS`) rather than each waiting out the timeout.

Keys: ``{prefix}:join:{model}:{id}`` (a record, then ``TAKEN`` once labelled, until the
time-to-live ends); ``{prefix}:thresholds:{model}`` (a hash of name to value) and
``{prefix}:thresholds`` (the set of models that have overrides).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from mlmon.core.overrides import checked
from mlmon.core.settings import StoreSettings

log = logging.getLogger("mlmon.store")

OPS = ("write", "take", "thresholds_read", "thresholds_write")  # failed calls, by kind
DROP_REASONS = ("unavailable", "queue_full")
TAKEN = b"\x00"  # a record's value once its label came (kept to recognise duplicates)
BATCH = 1000  # records per pipelined round trip
RETRY_SECONDS = 1.0  # after a failure: calls fail fast, and this is the Retry-After

# Every key: its record, or '' (no such key) or TAKEN (already labelled); a record is
# replaced by TAKEN, keeping its time-to-live. One script, so two replicas taking the same
# id at once cannot both match it.
_TAKE = """
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if not v then
    out[i] = ''
  else
    out[i] = v
    if v ~= ARGV[1] then redis.call('SET', key, ARGV[1], 'KEEPTTL') end
  end
end
return out
"""


class StoreUnavailable(ConnectionError):
    """The store did not answer, or answered with an error; nothing was applied."""


def store_settings(settings: StoreSettings | None, environ: dict[str, str]) -> StoreSettings | None:
    """The config's store with MLMON_STORE_URL over its url (a store of its own when the
    config has none)."""
    url = environ.get("MLMON_STORE_URL")
    if not url:
        return settings
    return StoreSettings(url=url) if settings is None else replace(settings, url=url)


def encode(version: str, at: float, predicted: int, value: float, score: float, groups: list):
    """One join record: ``[version, time, class index, value, score, group names]``."""
    return orjson.dumps(
        [
            version,
            at,
            predicted,
            value if math.isfinite(value) else None,
            score if math.isfinite(score) else None,
            groups,
        ]
    )


def decode(record: bytes) -> tuple[str, float, int, float, float, list]:
    """A join record back; ValueError for anything `encode` did not write (the store is
    shared, so its bytes are checked like any input)."""
    doc = orjson.loads(record)  # orjson.JSONDecodeError is a ValueError
    if type(doc) is not list or len(doc) != 6:
        raise ValueError("not a join record")
    version, at, predicted, value, score, groups = doc
    if (
        type(version) is not str
        or type(at) not in (int, float)
        or type(predicted) is not int
        or not all(v is None or type(v) in (int, float) for v in (value, score))
        or type(groups) is not list
        or not all(g is None or type(g) is str for g in groups)
    ):
        raise ValueError("not a join record")
    nan = float("nan")
    return (
        version,
        float(at),
        predicted,
        nan if value is None else float(value),
        nan if score is None else float(score),
        groups,
    )


class SharedStore:
    """One connection pool to the store for the whole exporter, its write queue and the
    thread that empties it, and its counters."""

    kind = "redis"

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self.prefix = settings.prefix
        self.client = _client(settings)
        self._take = self.client.register_script(_TAKE)
        self._lock = threading.Lock()  # the counters are changed by several threads
        self.errors: Counter[str] = Counter(dict.fromkeys(OPS, 0))
        self.dropped: Counter[str] = Counter(dict.fromkeys(DROP_REASONS, 0))
        self.records: Counter[str] = Counter(written=0)
        self.up = 0  # 1 once a call succeeded, 0 after a failure
        self._fail_until = 0.0
        self._queue: list[tuple[bytes, bytes, int]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._writer = threading.Thread(target=self._write_loop, name="mlmon-store", daemon=True)
        self._writer.start()

    @property
    def where(self) -> str:
        """The store's url without credentials (for logs)."""
        return _safe(self.settings.url)

    # -- join records ----------------------------------------------------------------------

    def join_key(self, model: str, key: str) -> bytes:
        return f"{self.prefix}:join:{model}:{key}".encode()

    def enqueue(self, items: list[tuple[bytes, bytes]], ttl_seconds: float) -> None:
        """Queue records for writing (never blocks); beyond the queue's size they are
        dropped and counted."""
        ttl_ms = max(1, int(ttl_seconds * 1000))
        with self._cond:
            room = self.settings.queue_size - len(self._queue)
            if room < len(items):
                self._count(self.dropped, "queue_full", len(items) - max(room, 0))
                items = items[: max(room, 0)]
            self._queue.extend((k, v, ttl_ms) for k, v in items)
            self._cond.notify()

    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    def take(self, keys: list[bytes]) -> list[bytes]:
        """Each key's record (now marked taken), ``b""`` for none, ``TAKEN`` for one taken
        before. Raises StoreUnavailable, having changed nothing that was answered."""
        if not keys:
            return []
        self._check_open("take")
        try:
            out = self._take(keys=keys, args=[TAKEN])
        except redis.RedisError as e:
            raise self._failed("take", e) from e
        self._succeeded()
        return out

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                batch, self._queue = self._queue, []
            for i in range(0, len(batch), BATCH):
                if not self._write(batch[i : i + BATCH]):
                    self._count(self.dropped, "unavailable", len(batch) - i)
                    time.sleep(RETRY_SECONDS)  # records meanwhile queue up to the bound
                    break

    def _write(self, chunk: list[tuple[bytes, bytes, int]]) -> bool:
        if time.monotonic() < self._fail_until:
            return False
        pipe = self.client.pipeline(transaction=False)
        for key, value, ttl_ms in chunk:
            pipe.set(key, value, px=ttl_ms)
        try:
            pipe.execute()
        except redis.RedisError as e:
            self._failed("write", e)
            return False
        self._count(self.records, "written", len(chunk))
        self._succeeded()
        return True

    def flush(self, timeout: float) -> bool:
        """Wait until the queue is empty (at most ``timeout`` seconds); True if it is."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.queued():
                return True
            time.sleep(0.01)
        return not self.queued()

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued (within ``timeout``), then stop the writer."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._writer.join(timeout)

    # -- runtime thresholds (the `overrides.Store` protocol) -----------------------------

    def load(self) -> dict[str, dict[str, float]]:
        """Every model's overrides. Raises StoreUnavailable."""
        self._check_open("thresholds_read")
        index = f"{self.prefix}:thresholds"
        try:
            models = sorted(m.decode() for m in self.client.smembers(index))
            pipe = self.client.pipeline(transaction=False)
            for model in models:
                pipe.hgetall(f"{index}:{model}")
            values = pipe.execute()
        except redis.RedisError as e:
            raise self._failed("thresholds_read", e) from e
        self._succeeded()
        try:
            return checked(
                {
                    m: {k.decode(): float(v) for k, v in h.items()}
                    for m, h in zip(models, values, strict=True)
                    if h
                }
            )
        except (ValueError, UnicodeDecodeError) as e:  # written by something else
            self._count(self.errors, "thresholds_read")
            raise StoreUnavailable(f"the stored thresholds are unreadable: {e}") from e

    def put(self, model: str, values: dict[str, float], after: Any = None) -> None:
        self._thresholds_call(model, lambda pipe, key: pipe.hset(key, mapping=values))

    def delete(self, model: str, name: str, after: Any = None) -> None:
        self._thresholds_call(model, lambda pipe, key: pipe.hdel(key, name))

    def _thresholds_call(self, model: str, change: Any) -> None:
        self._check_open("thresholds_write")
        index = f"{self.prefix}:thresholds"
        try:
            pipe = self.client.pipeline(transaction=True)
            change(pipe, f"{index}:{model}")
            pipe.sadd(index, model)
            pipe.execute()
        except redis.RedisError as e:
            raise self._failed("thresholds_write", e) from e
        self._succeeded()

    # -- health -------------------------------------------------------------------------

    def _check_open(self, op: str) -> None:
        if time.monotonic() < self._fail_until:
            self._count(self.errors, op)
            raise StoreUnavailable(f"the store failed less than {RETRY_SECONDS:g}s ago")

    def _count(self, counter: Counter[str], key: str, n: int = 1) -> None:
        with self._lock:
            counter[key] += n

    def counts(self) -> tuple[dict[str, int], dict[str, int], int]:
        """Failed calls by op, dropped records by reason, records written."""
        with self._lock:
            return dict(self.errors), dict(self.dropped), self.records["written"]

    def _failed(self, op: str, e: Exception) -> StoreUnavailable:
        self._count(self.errors, op)
        if self.up:
            log.error("the store at %s failed (%s): %s", _safe(self.settings.url), op, e)
        self.up = 0
        self._fail_until = time.monotonic() + RETRY_SECONDS
        return StoreUnavailable(f"the store did not answer: {e}")

    def _succeeded(self) -> None:
        if not self.up:
            log.info("the store at %s answers", _safe(self.settings.url))
        self.up = 1


def _client(settings: StoreSettings) -> redis.Redis:
    password = None
    if settings.password_file is not None:
        password = Path(settings.password_file).read_text().strip()
    extra: dict[str, Any] = {}
    if settings.url.startswith("rediss://") and settings.ca_file is not None:
        extra["ssl_ca_certs"] = str(settings.ca_file)
    return redis.Redis.from_url(
        settings.url,
        password=password,
        socket_timeout=settings.timeout_seconds,
        socket_connect_timeout=settings.timeout_seconds,
        retry=Retry(NoBackoff(), 0),  # no hidden retries: a failure is answered at once
        **extra,
    )


def _safe(url: str) -> str:
    """The url without any credentials in it, for logs."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"
