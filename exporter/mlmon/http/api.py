"""The hot endpoints as plain functions: ingest of predictions and labels, and `/metrics`.

Framework-free, so the Flask app (`web`) and the fast front server (`server`) answer these
routes with the same code: same validation, same refusals and counters, same bodies. A
reply is a status, a body and its content type; the callers speak HTTP.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from mlmon.core.decoding import BadRequest, decode_events, gunzip, is_plain_json
from mlmon.core.groundtruth import OUTCOMES
from mlmon.core.monitor import ModelMonitor, Monitor
from mlmon.http.auth import Tokens
from mlmon.http.auth import check as auth_check

_TRUE = {"1", "true", "yes"}
JSON = "application/json"


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = JSON
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_reply(doc: Any, status: int = 200) -> Reply:
    return Reply(status, orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY))


class Api:
    def __init__(
        self,
        monitor: Monitor,
        registry: CollectorRegistry,
        tokens: Tokens,
        render: Callable[[], bytes] | None = None,
    ) -> None:
        self.monitor = monitor
        self.registry = registry
        self.tokens = tokens
        # the exposition text: the fast renderer when given, else the client library's
        self.render = render or (lambda: generate_latest(registry))

    def unknown_model(self, model: str) -> BadRequest:
        known = ", ".join(sorted(self.monitor.models))
        return BadRequest(
            404,
            "unknown_model",
            f"unknown model {model!r}",
            [{"field": "model", "message": f"not in the configuration; known: {known}"}],
        )

    def authorize(
        self, endpoint: str, token: str | None, authorization: str | None
    ) -> Reply | None:
        """None when the call may go on; else the 401/403, counted under ``endpoint``."""
        if token is None:
            return None
        status = auth_check(authorization, token)
        if status == 200:
            return None
        reason = "unauthorized" if status == 401 else "forbidden"
        counters = self.monitor.counters
        counters.count(counters.rejected, (endpoint, reason))
        reply = json_reply(
            {
                "error": "a bearer token is required" if status == 401 else "wrong token",
                "reason": reason,
                "details": [],
            },
            status,
        )
        if status == 401:
            reply.headers.append(("WWW-Authenticate", 'Bearer realm="mlmon"'))
        return reply

    def check_length(self, content_length: int | None) -> None:
        limit = self.monitor.config.limits["max_body_bytes"]
        if content_length is not None and content_length > limit:
            raise BadRequest(
                413,
                "body_too_large",
                f"body of {content_length} bytes exceeds the limit of {limit}",
            )

    def decoded_body(self, body: bytes, content_encoding: str | None) -> bytes:
        limit = self.monitor.config.limits["max_body_bytes"]
        if len(body) > limit:
            raise BadRequest(413, "body_too_large", f"body exceeds the limit of {limit} bytes")
        if (content_encoding or "").lower() == "gzip":
            body = gunzip(body, limit)
        return body

    def refuse(self, endpoint: str, e: BadRequest, model: str | None = None) -> Reply:
        counters = self.monitor.counters
        counters.count(counters.rejected, (endpoint, e.reason))
        if model is not None and e.details:
            counters.count(
                counters.rejected_events, model, len({d.get("index") for d in e.details})
            )
        reply = json_reply(e.body(), e.status)
        if e.retry_after is not None:
            reply.headers.append(("Retry-After", str(e.retry_after)))
        return reply

    def predictions(
        self,
        model: str,
        body: bytes,
        content_length: int | None,
        content_type: str | None,
        content_encoding: str | None,
        partial: str | None,
    ) -> Reply:
        def apply(m: ModelMonitor, raw: bytes) -> Reply:
            limit = self.monitor.config.limits["max_batch_events"]
            # a valid row or columnar batch decodes typed (rows tried first: a body of the
            # other form fails at its first key); anything else takes the checks that
            # explain it
            typed = None
            if is_plain_json(content_type):
                typed = m.ingest_typed(raw)
                if typed is None:
                    typed = m.ingest_typed_columns(raw)
            if typed is not None:
                batch, details = typed, []
            elif (
                len(events := decode_events(raw, content_type or "", max_items=limit)) == 1
                and type(events[0]) is dict
                and "columns" in events[0]
            ):
                # the columnar form: {"columns": {"features": {name: [...]}, ...}}
                batch, details = m.ingest_columns(events[0]["columns"]), []
            else:
                batch, details = m.ingest(events, partial=(partial or "").lower() in _TRUE)
            counters = self.monitor.counters
            counters.count(counters.events, model, batch.n)
            if not details and not batch.unknown_features:
                return Reply(200, b'{"accepted":%d,"rejected":0}' % batch.n)
            bad = len({d["index"] for d in details})
            counters.count(counters.rejected_events, model, bad)
            out: dict[str, Any] = {"accepted": batch.n, "rejected": bad}
            if details:
                out["details"] = details
            if batch.unknown_features:
                # ignored, as ever; listed so a misspelt name does not pass unnoticed
                max_str = self.monitor.config.limits["max_string_length"]
                out["unknown_features"] = batch.unknown_names(max_str)
            return json_reply(out)

        return self._ingest("predictions", model, body, content_length, content_encoding, apply)

    def labels(
        self,
        model: str,
        body: bytes,
        content_length: int | None,
        content_type: str | None,
        content_encoding: str | None,
        partial: str | None,
    ) -> Reply:
        def apply(m: ModelMonitor, raw: bytes) -> Reply:
            limit = self.monitor.config.limits["max_batch_events"]
            items = decode_events(raw, content_type or "", list_key="labels", max_items=limit)
            if len(items) > limit:
                raise BadRequest(
                    413, "batch_too_large", f"{len(items)} labels exceed the limit of {limit}"
                )
            outcomes, details = m.ingest_labels(items, partial=(partial or "").lower() in _TRUE)
            out: dict[str, Any] = {k: outcomes.get(k, 0) for k in OUTCOMES}
            out["rejected"] = len(details)
            if details:
                out["details"] = details[:100]
            return json_reply(out)

        return self._ingest("labels", model, body, content_length, content_encoding, apply)

    def _ingest(
        self,
        endpoint: str,
        model: str,
        body: bytes,
        content_length: int | None,
        content_encoding: str | None,
        apply: Callable[[ModelMonitor, bytes], Reply],
    ) -> Reply:
        """What both ingest endpoints do around their work: count the request, refuse an
        unknown model or a body over the limit, decode the body, and turn a BadRequest into
        a counted refusal."""
        counters = self.monitor.counters
        counters.count(counters.requests, endpoint)
        m = self.monitor.models.get(model)
        try:
            if m is None:
                raise self.unknown_model(model)
            self.check_length(content_length)
            return apply(m, self.decoded_body(body, content_encoding))
        except BadRequest as e:
            return self.refuse(endpoint, e, model if m is not None else None)

    def metrics(self, accept_encoding: str | None) -> Reply:
        body = self.render()
        reply = Reply(200, body, CONTENT_TYPE_LATEST)
        if "gzip" in (accept_encoding or ""):
            # Level 1: a fraction of the cost of level 9 for a similar size on this text.
            reply.body = gzip.compress(body, compresslevel=1)
            reply.headers.append(("Content-Encoding", "gzip"))
        return reply
