"""Request bodies to Python values: gzip (bounded), JSON, the events envelope. Every
refusal is a BadRequest carrying its status and the bounded reason it is counted under."""

from __future__ import annotations

import json
import zlib
from typing import Any

import orjson

MAX_DETAILS = 100
# The bounded vocabulary of `reason` labels on mlmon_ingest_rejected_requests_total.
REJECT_REASONS = (
    "malformed_json",
    "malformed_body",
    "unsupported_media_type",
    "invalid_event",
    "unknown_model",
    "body_too_large",
    "batch_too_large",
    "internal_error",
    "unauthorized",
    "forbidden",
    "store_unavailable",
)


class BadRequest(Exception):
    """A request the exporter refuses; ``reason`` is the bounded label it is counted under."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        retry_after: int | None = None,  # seconds, for a 503 the sender should retry
    ) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message
        self.details = details or []
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "reason": self.reason, "details": self.details}


def gunzip(body: bytes, limit: int) -> bytes:
    """A gzip body decompressed (every member, as `gzip.decompress` reads them), refused
    (413) as soon as it grows past ``limit`` bytes: a small bomb costs at most ``limit``
    bytes of memory and the CPU to produce them. Trailing bytes that are no gzip member are
    an error, not silently dropped."""
    out = bytearray()
    data = body
    try:
        while True:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out += d.decompress(data, limit + 1 - len(out))
            if len(out) > limit:
                break
            if not d.eof:
                raise zlib.error("the gzip stream is truncated")
            data = d.unused_data
            if not data:
                break
    except zlib.error as e:
        raise BadRequest(400, "malformed_body", f"invalid gzip body: {e}") from None
    if len(out) > limit:
        raise BadRequest(
            413, "body_too_large", f"decompressed body exceeds the limit of {limit} bytes"
        )
    return bytes(out)


def decode_json(body: bytes) -> Any:
    """orjson first; the standard parser as fallback, because it accepts the NaN and
    Infinity tokens that Python's and JavaScript's encoders write (counted as missing)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        msg = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
        where = (
            f" at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
        )
        raise BadRequest(400, "malformed_json", f"malformed JSON{where}: {msg}") from None
    except ValueError as e:  # well-formed, but not decodable: an integer of 4,300+ digits
        raise BadRequest(400, "malformed_body", f"undecodable JSON: {e}") from None


def is_plain_json(content_type: str | None) -> bool:
    """A body of plain JSON (no content type means JSON), not NDJSON or a +json type."""
    if not content_type:
        return True
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


def decode_events(
    body: bytes, content_type: str, list_key: str = "events", max_items: int | None = None
) -> list[Any]:
    """The request body as a list of events: one object, ``{"events": [...]}``, or NDJSON.
    An NDJSON body of more than ``max_items`` lines is refused before any line is decoded,
    so its cost stays that of counting them."""
    ctype = (content_type or "application/json").split(";")[0].strip().lower()
    if ctype in ("application/x-ndjson", "application/jsonl", "application/json-lines"):
        lines = body.split(b"\n")
        if max_items is not None and len(lines) > max_items:
            n = sum(1 for line in lines if line.strip())
            if n > max_items:
                raise BadRequest(
                    413, "batch_too_large", f"{n} lines exceed the limit of {max_items} events"
                )
        out = []
        for lineno, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    out.append(decode_json(line))
                except BadRequest as e:
                    raise BadRequest(400, "malformed_json", f"line {lineno}: {e.message}") from None
        return out
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise BadRequest(
            415,
            "unsupported_media_type",
            f"unsupported Content-Type {ctype!r}: send application/json or application/x-ndjson",
        )
    doc = decode_json(body)
    if isinstance(doc, dict) and list_key in doc:
        items = doc[list_key]
        if not isinstance(items, list):
            raise BadRequest(
                400,
                "invalid_event",
                f"'{list_key}' must be a list",
                [{"field": list_key, "message": "expected a list"}],
            )
        return items
    return [doc]
