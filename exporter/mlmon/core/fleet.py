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
import os
import re
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
DROP_REASONS = ("unavailable", "queue_full", "invalid")
TAKEN = b"\x00"  # what `take` answers for a record another label took before
BATCH = 1000  # records per pipelined round trip, and keys per take
RETRY_SECONDS = 1.0  # after a failure: calls fail fast, and this is the Retry-After

# Every key: its record, or '' (no such key) or TAKEN (a label took it before). A taken
# record's value becomes \0 + the taking call's token + the record, keeping its
# time-to-live: a second label is a duplicate wherever it lands, while the same call run
# again (its answer lost to a timeout) gets its records back. One script, so two replicas
# taking the same id at once cannot both match it.
_TAKE = """
local out = {}
local mine = '\0' .. ARGV[1]
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if not v then
    out[i] = ''
  elseif string.byte(v, 1) == 0 then
    if string.sub(v, 1, #mine) == mine then out[i] = string.sub(v, #mine + 1) else out[i] = '\0' end
  else
    redis.call('SET', key, mine .. v, 'KEEPTTL')
    out[i] = v
  end
end
return out
"""


# what `store.url` and MLMON_STORE_URL may be: no query string (redis-py would take a
# password from it, and logs would show it) and no path but the database number
STORE_URL = re.compile(r"^rediss?://[^\s/?#]+(/\d{1,2})?$")


class StoreUnavailable(ConnectionError):
    """The store did not answer, or answered with an error. ``done`` holds what a `take`
    got before the failure: the records of its first keys, taken and to be counted."""

    def __init__(self, message: str, done: list[bytes] | None = None) -> None:
        super().__init__(message)
        self.done = done or []


def store_settings(settings: StoreSettings | None, environ: dict[str, str]) -> StoreSettings | None:
    """The config's store with MLMON_STORE_URL over its url (a store of its own when the
    config has none)."""
    url = environ.get("MLMON_STORE_URL")
    if not url:
        return settings
    if not STORE_URL.match(url):  # never echoed: it may hold a password
        raise ValueError("MLMON_STORE_URL: expected redis://HOST:PORT[/DB] or rediss://…")
    return StoreSettings(url=url) if settings is None else replace(settings, url=url)


def encode(version: str, at: float, predicted: int, value: float, score: float, groups: list):
    """One join record: ``[version, time, class index, value, score, group names]``,
    copied to a bytes object of its own size (orjson's answer keeps a 4 KB buffer, which a
    queue of 100,000 records would multiply into 400 MB)."""
    record = orjson.dumps(
        [
            version,
            at,
            predicted,
            value if math.isfinite(value) else None,
            score if math.isfinite(score) else None,
            groups,
        ]
    )
    return bytes(memoryview(record))


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
        # join records written; labels whose take timed out twice, so that Redis may
        # have taken them uncounted (sent again, they would be duplicates)
        self.records: Counter[str] = Counter(written=0, uncertain=0)
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
        # braces cannot occur in a model name: "a:b" with id "c" and "a" with id "b:c"
        # are different keys (and one model's keys share a Redis Cluster hash slot)
        return f"{self.prefix}:join:{{{model}}}:{key}".encode("utf-8", "surrogatepass")

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

    def drop(self, reason: str, n: int) -> None:
        """Count records never queued (``invalid``: they could not be encoded)."""
        self._count(self.dropped, reason, n)

    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    def take(self, keys: list[bytes]) -> list[bytes]:
        """Each key's record (now marked taken), ``b""`` for none, ``TAKEN`` for one taken
        before, in calls of at most BATCH keys. A call that times out is made once more
        with the same token, which gets back what the first one may have taken. Raises
        StoreUnavailable with the records of the calls that succeeded in ``done``."""
        token = os.urandom(16)
        out: list[bytes] = []
        for i in range(0, len(keys), BATCH):
            try:
                out.extend(self._take_chunk(keys[i : i + BATCH], token))
            except StoreUnavailable as e:
                raise StoreUnavailable(str(e), out) from e
        return out

    def _take_chunk(self, keys: list[bytes], token: bytes) -> list[bytes]:
        self._check_open("take")
        for again in (False, True):
            try:
                out = self._take(keys=keys, args=[token])
            except (redis.TimeoutError, redis.ConnectionError) as e:
                if again:
                    if isinstance(e, redis.TimeoutError):  # the script may have run
                        self._count(self.records, "uncertain", len(keys))
                    raise self._failed("take", e) from e
                continue  # the script may have run: the same token takes the same keys
            except redis.RedisError as e:
                raise self._failed("take", e) from e
            self._succeeded()
            return out
        raise AssertionError("unreachable")

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
                    self._requeue(batch[i:])
                    time.sleep(RETRY_SECONDS)  # records meanwhile queue up to the bound
                    break

    def _requeue(self, unsent: list[tuple[bytes, bytes, int]]) -> None:
        """Unsent records go back to the head of the queue; beyond its size the oldest are
        dropped (the store has been unavailable for as long as the queue lasts)."""
        with self._cond:
            queue = unsent + self._queue
            over = len(queue) - self.settings.queue_size
            if over > 0:
                self._count(self.dropped, "unavailable", over)
                queue = queue[over:]
            self._queue = queue

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
            models = sorted(self.client.smembers(index))
            pipe = self.client.pipeline(transaction=False)
            for model in models:
                pipe.hgetall(f"{index}:".encode() + model)
            values = pipe.execute()
        except redis.RedisError as e:
            raise self._failed("thresholds_read", e) from e
        self._succeeded()
        try:
            return checked(
                {
                    m.decode(): {k.decode(): float(v) for k, v in h.items()}
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

    def counts(self) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        """Failed calls by op, dropped records by reason, records written and uncertain."""
        with self._lock:
            return dict(self.errors), dict(self.dropped), dict(self.records)

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
    """The url without any credentials in it (user, password, query), for logs."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2].split('?')[0].split('#')[0]}"
