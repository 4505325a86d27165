"""The HTTP API (v1): ingest, JSON snapshots, /metrics, health and a landing page.

The only module that knows Flask. Every refusal is a JSON ``{"error", "reason", "details"}``
with a 4xx status, counted under a bounded reason; nothing is applied from a refused batch.
"""

from __future__ import annotations

import html
import json
import logging
import math
from collections.abc import Callable
from typing import Any

import orjson
from flask import Flask, Response, request
from prometheus_client import CollectorRegistry
from werkzeug.exceptions import HTTPException

from mlmon import __version__
from mlmon.core.config import THRESHOLDS, ConfigError
from mlmon.core.decoding import BadRequest, decode_json
from mlmon.core.monitor import ModelMonitor, Monitor
from mlmon.http.api import Api, Reply
from mlmon.http.auth import Tokens, fingerprint

log = logging.getLogger("mlmon.web")
audit = logging.getLogger("mlmon.audit")
_TRUE = {"1", "true", "yes"}


def to_response(r: Reply) -> Response:
    resp = Response(r.body, status=r.status, content_type=r.content_type)
    for k, v in r.headers:
        resp.headers[k] = v
    return resp


def _json(body: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status=status,
        mimetype="application/json",
    )


# the views refused outright when no admin token is set
_ADMIN_VIEWS = frozenset(
    {"put_thresholds", "delete_threshold", "reload", "rebaseline", "restore_baseline"}
)


def create_app(
    monitor: Monitor,
    registry: CollectorRegistry,
    tokens: Tokens | None = None,
    api: Api | None = None,
) -> Flask:
    app = Flask("mlmon")
    tokens = tokens or Tokens()
    api = api or Api(monitor, registry, tokens)
    _authenticate(app, api, tokens)
    _baseline_routes(app, monitor, api, tokens)
    _config_routes(app, monitor, api, tokens)
    _threshold_routes(app, monitor, api, tokens)
    _ingest_routes(app, monitor, api)
    _read_routes(app, monitor, api)
    _error_handlers(app, monitor)
    return app


def _guarded(tokens: Tokens) -> dict[str, str | None]:
    """Which token guards which view."""
    return {
        "predictions": tokens.ingest,
        "labels": tokens.ingest,
        "metrics": tokens.metrics,
        # what /metrics shows, in JSON and HTML: behind the same token
        "models": tokens.metrics,
        "model_stats": tokens.metrics,
        "landing": tokens.metrics,
        "get_thresholds": tokens.metrics,
        "put_thresholds": tokens.admin,
        "delete_threshold": tokens.admin,
        "reload": tokens.admin,
        "rebaseline": tokens.admin,
        "restore_baseline": tokens.admin,
    }


def _authenticate(app: Flask, api: Api, tokens: Tokens) -> None:
    """Before every guarded view: its token, or a refusal (admin views are refused when no
    admin token is set)."""
    guarded = _guarded(tokens)

    @app.before_request
    def authenticate() -> Response | None:
        view = request.endpoint
        if view not in guarded:
            return None
        token = guarded[view]
        if token is None:
            if view in _ADMIN_VIEWS:
                return _json(
                    {
                        "error": "the admin API is off: no admin token is configured",
                        "reason": "forbidden",
                        "details": [],
                    },
                    403,
                )
            return None
        refused = api.authorize(view, token, request.headers.get("Authorization"))
        return to_response(refused) if refused is not None else None


def _log_admin(tokens: Tokens, action: str, **fields: Any) -> None:
    """One audit line per admin action: who (address, and the role of the token: every
    admin action takes the admin token), which token (by hash), what changed."""
    audit.info(
        "who=%s role=admin token=%s action=%s %s",
        request.remote_addr,
        fingerprint(tokens.admin or ""),
        action,
        " ".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in fields.items()),
    )


def _unknown_model(api: Api, model: str) -> Response:
    return _json(api.unknown_model(model).body(), 404)


def _body_for_api(monitor: Monitor) -> bytes:
    """The body, unless its declared length is already over the limit (the API refuses it
    by that length without it being read)."""
    limit = monitor.config.limits["max_body_bytes"]
    if request.content_length is not None and request.content_length > limit:
        return b""
    return request.stream.read(limit + 1)


def _baseline_routes(app: Flask, monitor: Monitor, api: Api, tokens: Tokens) -> None:
    """Admin: re-baseline a model from its window, or put the previous baseline back."""

    @app.post("/v1/models/<model>/baseline")
    def rebaseline(model: str) -> Response:
        m = monitor.models.get(model)
        if m is None:
            return _unknown_model(api, model)
        try:
            result = m.rebaseline(request.args.get("version"))
        except ValueError as e:
            return _json({"error": str(e), "reason": "empty_window", "details": []}, 409)
        _log_admin(tokens, "rebaseline", result=result)
        return _json(result)

    @app.post("/v1/models/<model>/baseline/restore")
    def restore_baseline(model: str) -> Response:
        m = monitor.models.get(model)
        if m is None:
            return _unknown_model(api, model)
        try:
            result = m.restore_baseline()
        except FileNotFoundError as e:
            return _json({"error": str(e), "reason": "no_backup", "details": []}, 409)
        _log_admin(tokens, "restore_baseline", result=result)
        return _json(result)


def _config_routes(app: Flask, monitor: Monitor, api: Api, tokens: Tokens) -> None:
    """Admin: re-read the config file (runtime threshold overrides stay)."""

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
        _log_admin(tokens, "reload", result=result)
        return _json(result)


def _threshold_routes(app: Flask, monitor: Monitor, api: Api, tokens: Tokens) -> None:
    """A model's thresholds: read them with their source, override them at run time
    (admin), drop an override (admin). Overrides are stored before they are answered."""

    @app.get("/v1/models/<model>/thresholds")
    def get_thresholds(model: str) -> Response:
        m = monitor.models.get(model)
        if m is None:
            return _unknown_model(api, model)
        return _json(_thresholds_json(monitor, m))

    @app.put("/v1/models/<model>/thresholds")
    def put_thresholds(model: str) -> Response:
        m = monitor.models.get(model)
        if m is None:
            return _unknown_model(api, model)
        try:
            api.check_length(request.content_length)
            doc = decode_json(
                api.decoded_body(_body_for_api(monitor), request.headers.get("Content-Encoding"))
            )
        except BadRequest as e:
            return _json(e.body(), e.status)
        details = _threshold_errors(doc)
        if details:
            return _invalid_thresholds(details)
        after = {k: float(v) for k, v in doc.items()}
        try:
            before = monitor.put_thresholds(model, after)
        except OSError as e:
            return _not_stored(e)
        _log_admin(tokens, "put_thresholds", model=model, before=before, after=after)
        return _json(_thresholds_json(monitor, m))

    @app.delete("/v1/models/<model>/thresholds/<name>")
    def delete_threshold(model: str, name: str) -> Response:
        m = monitor.models.get(model)
        if m is None:
            return _unknown_model(api, model)
        if name not in THRESHOLDS:
            return _invalid_thresholds([_unknown_threshold(name)])
        try:
            change = monitor.delete_threshold(model, name)
        except OSError as e:
            return _not_stored(e)
        if change is None:
            message = f"threshold {name!r} of model {model!r} has no runtime override"
            detail = {"field": name, "message": "its value comes from the config"}
            return _json({"error": message, "reason": "no_override", "details": [detail]}, 404)
        _log_admin(
            tokens,
            "delete_threshold",
            model=model,
            threshold=name,
            before=change[0],
            after=change[1],
        )
        return _json(_thresholds_json(monitor, m))


def _thresholds_json(monitor: Monitor, m: ModelMonitor) -> dict[str, Any]:
    return {
        "model": m.name,
        "thresholds": dict(m.thresholds),
        "overrides": dict(m.overrides),
        "sources": m.threshold_sources(),
        # where overrides are kept: "file" (beside the snapshots) or "memory"
        "persistence": monitor.overrides_store.kind,
    }


def _invalid_thresholds(details: list[dict[str, str]]) -> Response:
    return _json(
        {
            "error": "invalid thresholds; nothing was changed",
            "reason": "invalid_thresholds",
            "details": details,
        },
        400,
    )


def _not_stored(e: OSError) -> Response:
    log.error("cannot store the runtime thresholds: %s", e)
    return _json(
        {
            "error": "the thresholds could not be stored; nothing was changed",
            "reason": "not_stored",
            "details": [{"message": str(e)}],
        },
        503,
    )


def _unknown_threshold(name: str) -> dict[str, str]:
    return {"field": name, "message": f"unknown threshold (known: {', '.join(THRESHOLDS)})"}


def _threshold_errors(doc: Any) -> list[dict[str, str]]:
    """What is wrong with a body of threshold -> number, field by field."""
    if type(doc) is not dict or not doc:
        return [{"field": "", "message": "expected an object of threshold -> number"}]
    details = []
    for k, v in doc.items():
        if k not in THRESHOLDS:
            details.append(_unknown_threshold(k))
        elif type(v) not in (int, float) or not math.isfinite(v) or v < 0:
            details.append({"field": k, "message": "expected a finite number >= 0"})
    return details


def _ingest_routes(app: Flask, monitor: Monitor, api: Api) -> None:
    """The ingest API: predictions and labels, in one batch or one event."""

    def ingest(handler: Callable[..., Reply], model: str) -> Response:
        return to_response(
            handler(
                model,
                _body_for_api(monitor),
                request.content_length,
                request.content_type,
                request.headers.get("Content-Encoding"),
                request.args.get("partial"),
            )
        )

    @app.post("/v1/models/<model>/predictions")
    def predictions(model: str) -> Response:
        return ingest(api.predictions, model)

    @app.post("/v1/models/<model>/labels")
    def labels(model: str) -> Response:
        return ingest(api.labels, model)


def _read_routes(app: Flask, monitor: Monitor, api: Api) -> None:
    """What can be read: the models' snapshots, /metrics, health and the landing page."""

    @app.get("/v1/models")
    def models() -> Response:
        return _json({"models": [_summary(m) for m in monitor.models.values()]})

    @app.get("/v1/models/<model>/stats")
    def model_stats(model: str) -> Response:
        m = monitor.models.get(model)
        if m is None:
            return _unknown_model(api, model)
        return _json(m.stats())

    @app.get("/metrics")
    def metrics() -> Response:
        return to_response(api.metrics(request.headers.get("Accept-Encoding")))

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


def _error_handlers(app: Flask, monitor: Monitor) -> None:
    """Every error as JSON; an unexpected one is logged and counted."""
    counters = monitor.counters

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
