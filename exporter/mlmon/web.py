"""The HTTP API (v1): ingest, JSON snapshots, /metrics, health and a landing page.

The only module that knows Flask. Every refusal is a JSON ``{"error", "reason", "details"}``
with a 4xx status, counted under a bounded reason; nothing is applied from a refused batch.
"""

from __future__ import annotations

import gzip
import html
import io
import json
import logging
import math
from typing import Any

import orjson
from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from werkzeug.exceptions import HTTPException

from . import __version__
from .auth import Tokens, fingerprint
from .auth import check as auth_check
from .config import THRESHOLDS, ConfigError
from .events import BadRequest, decode_events, decode_json
from .labels import OUTCOMES
from .monitor import ModelMonitor, Monitor

log = logging.getLogger("mlmon.web")
audit = logging.getLogger("mlmon.audit")
_TRUE = {"1", "true", "yes"}


def _json(body: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status=status,
        mimetype="application/json",
    )


def create_app(
    monitor: Monitor, registry: CollectorRegistry, tokens: Tokens | None = None
) -> Flask:
    app = Flask("mlmon")
    counters = monitor.counters
    tokens = tokens or Tokens()
    # which token guards which view; admin views are refused when no admin token is set
    guarded = {
        "predictions": tokens.ingest,
        "labels": tokens.ingest,
        "metrics": tokens.metrics,
        "put_thresholds": tokens.admin,
        "reload": tokens.admin,
        "rebaseline": tokens.admin,
        "restore_baseline": tokens.admin,
    }
    admin_views = {"put_thresholds", "reload", "rebaseline", "restore_baseline"}

    def unknown_model_error(model: str) -> BadRequest:
        return BadRequest(
            404,
            "unknown_model",
            f"unknown model {model!r}",
            [
                {
                    "field": "model",
                    "message": "not in the configuration; known: "
                    f"{', '.join(sorted(monitor.models))}",
                }
            ],
        )

    def log_admin(action: str, **fields: Any) -> None:
        """One audit line per admin action: who, which token (by hash), what changed."""
        audit.info(
            "who=%s token=%s action=%s %s",
            request.remote_addr,
            fingerprint(tokens.admin or ""),
            action,
            " ".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in fields.items()),
        )

    @app.before_request
    def authenticate() -> Response | None:
        view = request.endpoint
        if view not in guarded:
            return None
        token = guarded[view]
        if token is None:
            if view in admin_views:
                return _json(
                    {
                        "error": "the admin API is off: no admin token is configured",
                        "reason": "forbidden",
                        "details": [],
                    },
                    403,
                )
            return None
        status = auth_check(request.headers.get("Authorization"), token)
        if status == 200:
            return None
        counters.count(counters.rejected, (view, "unauthorized" if status == 401 else "forbidden"))
        resp = _json(
            {
                "error": "a bearer token is required" if status == 401 else "wrong token",
                "reason": "unauthorized" if status == 401 else "forbidden",
                "details": [],
            },
            status,
        )
        if status == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="mlmon"'
        return resp

    @app.post("/v1/models/<model>/baseline")
    def rebaseline(model: str) -> Response:
        m = monitor.models.get(model)
        if m is None:
            return _json(unknown_model_error(model).body(), 404)
        try:
            result = m.rebaseline(request.args.get("version"))
        except ValueError as e:
            return _json({"error": str(e), "reason": "empty_window", "details": []}, 409)
        log_admin("rebaseline", result=result)
        return _json(result)

    @app.post("/v1/models/<model>/baseline/restore")
    def restore_baseline(model: str) -> Response:
        m = monitor.models.get(model)
        if m is None:
            return _json(unknown_model_error(model).body(), 404)
        try:
            result = m.restore_baseline()
        except FileNotFoundError as e:
            return _json({"error": str(e), "reason": "no_backup", "details": []}, 409)
        log_admin("restore_baseline", result=result)
        return _json(result)

    @app.post("/-/reload")
    def reload() -> Response:
        try:
            result = monitor.reload()
        except ConfigError as e:
            return _json(
                {
                    "error": "the config was not reloaded",
                    "reason": "invalid_config",
                    "details": [{"message": m} for m in e.errors],
                },
                400,
            )
        log_admin("reload", result=result)
        return _json(result)

    @app.put("/v1/models/<model>/thresholds")
    def put_thresholds(model: str) -> Response:
        m = monitor.models.get(model)
        if m is None:
            return _json(unknown_model_error(model).body(), 404)
        try:
            doc = decode_json(read_body("thresholds"))
        except BadRequest as e:
            return _json(e.body(), e.status)
        details = []
        if type(doc) is not dict or not doc:
            details.append({"field": "", "message": "expected an object of threshold -> number"})
        else:
            for k, v in doc.items():
                if k not in THRESHOLDS:
                    details.append(
                        {
                            "field": k,
                            "message": f"unknown threshold (known: {', '.join(THRESHOLDS)})",
                        }
                    )
                elif type(v) not in (int, float) or not math.isfinite(v) or v < 0:
                    details.append({"field": k, "message": "expected a finite number >= 0"})
        if details:
            return _json(
                {
                    "error": "invalid thresholds; nothing was changed",
                    "reason": "invalid_thresholds",
                    "details": details,
                },
                400,
            )
        before = {k: m.thresholds[k] for k in doc}
        m.thresholds.update({k: float(v) for k, v in doc.items()})
        log_admin(
            "put_thresholds",
            model=model,
            before=before,
            after={k: float(v) for k, v in doc.items()},
        )
        return _json({"model": model, "thresholds": dict(m.thresholds)})

    def refuse(endpoint: str, e: BadRequest, model: str | None = None) -> Response:
        counters.count(counters.rejected, (endpoint, e.reason))
        if model is not None and e.details:
            counters.count(
                counters.rejected_events, model, len({d.get("index") for d in e.details})
            )
        return _json(e.body(), e.status)

    def read_body(endpoint: str) -> bytes:
        limit = monitor.config.limits["max_body_bytes"]
        if request.content_length is not None and request.content_length > limit:
            raise BadRequest(
                413,
                "body_too_large",
                f"body of {request.content_length} bytes exceeds the limit of {limit}",
            )
        body = request.stream.read(limit + 1)
        if len(body) > limit:
            raise BadRequest(413, "body_too_large", f"body exceeds the limit of {limit} bytes")
        if request.headers.get("Content-Encoding", "").lower() == "gzip":
            try:
                with gzip.GzipFile(fileobj=io.BytesIO(body)) as gz:
                    body = gz.read(limit + 1)
            except (OSError, EOFError) as e:
                raise BadRequest(400, "malformed_body", f"invalid gzip body: {e}") from None
            if len(body) > limit:
                raise BadRequest(
                    413, "body_too_large", f"decompressed body exceeds the limit of {limit} bytes"
                )
        return body

    @app.post("/v1/models/<model>/predictions")
    def predictions(model: str) -> Response:
        endpoint = "predictions"
        counters.count(counters.requests, endpoint)
        m = monitor.models.get(model)
        try:
            if m is None:
                raise unknown_model_error(model)
            body = read_body(endpoint)
            events = decode_events(body, request.content_type or "")
            if len(events) == 1 and type(events[0]) is dict and "columns" in events[0]:
                # the columnar form: {"columns": {"features": {name: [...]}, ...}}
                batch, details = m.ingest_columns(events[0]["columns"]), []
            else:
                partial = request.args.get("partial", "").lower() in _TRUE
                batch, details = m.ingest(events, partial=partial)
        except BadRequest as e:
            return refuse(endpoint, e, model if m is not None else None)
        counters.count(counters.events, model, batch.n)
        if details:
            bad = len({d["index"] for d in details})
            counters.count(counters.rejected_events, model, bad)
            return _json({"accepted": batch.n, "rejected": bad, "details": details})
        return _json({"accepted": batch.n, "rejected": 0})

    @app.post("/v1/models/<model>/labels")
    def labels(model: str) -> Response:
        endpoint = "labels"
        counters.count(counters.requests, endpoint)
        m = monitor.models.get(model)
        try:
            if m is None:
                raise unknown_model_error(model)
            body = read_body(endpoint)
            items = decode_events(body, request.content_type or "", list_key="labels")
            limits = monitor.config.limits
            if len(items) > limits["max_batch_events"]:
                raise BadRequest(
                    413,
                    "batch_too_large",
                    f"{len(items)} labels exceed the limit of {limits['max_batch_events']}",
                )
            partial = request.args.get("partial", "").lower() in _TRUE
            outcomes, details = m.ingest_labels(items, partial=partial)
        except BadRequest as e:
            return refuse(endpoint, e, model if m is not None else None)
        out = {k: outcomes.get(k, 0) for k in OUTCOMES}
        out["rejected"] = len(details)
        if details:
            out["details"] = details[:100]
        return _json(out)

    @app.get("/v1/models")
    def models() -> Response:
        return _json({"models": [_summary(m) for m in monitor.models.values()]})

    @app.get("/v1/models/<model>/stats")
    def model_stats(model: str) -> Response:
        m = monitor.models.get(model)
        if m is None:
            return _json(unknown_model_error(model).body(), 404)
        return _json(m.stats())

    @app.get("/metrics")
    def metrics() -> Response:
        body = generate_latest(registry)
        headers = {"Content-Type": CONTENT_TYPE_LATEST}
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            # Level 1: a fraction of the cost of level 9 for a similar size on this text.
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        return Response(body, headers=headers)

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok\n", mimetype="text/plain")

    @app.get("/readyz")
    def readyz() -> Response:
        ready = bool(monitor.models)
        return Response(
            "ready\n" if ready else "not ready\n",
            status=200 if ready else 503,
            mimetype="text/plain",
        )

    @app.get("/")
    def landing() -> Response:
        return Response(_landing(monitor), mimetype="text/html")

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> Response:
        return _json(
            {
                "error": e.description,
                "reason": (e.name or "error").lower().replace(" ", "_"),
                "details": [],
            },
            e.code or 500,
        )

    @app.errorhandler(Exception)
    def internal_error(e: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.path)
        counters.count(counters.rejected, (request.endpoint or "unknown", "internal_error"))
        return _json({"error": "internal error", "reason": "internal_error", "details": []}, 500)

    return app


def _summary(m: ModelMonitor) -> dict[str, Any]:
    stats = m.stats()
    return {
        "name": m.name,
        "task": m.schema.task,
        "features": len(m.schema.feature_kinds),
        "baseline_hash": m.schema.baseline_hash,
        "versions": {
            v: {
                "window_events": s["window_events"],
                "drifted_features": s["drifted_features"],
                "features_tested": s["features_tested"],
            }
            for v, s in stats["versions"].items()
        },
        "links": {"stats": f"/v1/models/{m.name}/stats"},
    }


def _landing(monitor: Monitor) -> str:
    rows = []
    for m in monitor.models.values():
        s = _summary(m)
        versions = s["versions"] or {
            "-": {"window_events": 0, "drifted_features": 0, "features_tested": 0}
        }
        for v, vs in versions.items():
            state = (
                "drifting"
                if vs["drifted_features"]
                else "ok"
                if vs["features_tested"]
                else "warming up"
            )
            rows.append(
                f"<tr><td>{html.escape(m.name)}</td><td>{html.escape(m.schema.task)}</td>"
                f"<td>{html.escape(v)}</td><td>{vs['window_events']}</td>"
                f"<td>{vs['drifted_features']} / {s['features']}</td>"
                f"<td class='{state.replace(' ', '-')}'>{state}</td>"
                f"<td><a href='/v1/models/{html.escape(m.name)}/stats'>stats</a></td></tr>"
            )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>mlmon</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.3em 1em;text-align:left}}
.drifting{{color:#c00;font-weight:bold}}.ok{{color:#080}}.warming-up{{color:#888}}</style>
</head><body><h1>mlmon {html.escape(__version__)}</h1>
<table><tr><th>model</th><th>task</th><th>version</th><th>events in window</th>
<th>drifted features</th><th>state</th><th></th></tr>
{"".join(rows)}</table>
<p><a href="/metrics">/metrics</a> · <a href="/v1/models">/v1/models</a> ·
<a href="/healthz">/healthz</a> · <a href="/readyz">/readyz</a></p>
</body></html>
"""
