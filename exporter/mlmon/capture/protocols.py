"""Prediction events from proxied inference calls.

Knows the payloads of KServe v1 / TensorFlow Serving REST, the Open Inference Protocol v2,
MLflow's ``/invocations`` and a generic JSON API described by paths in the config; turns
one request and its response into one event per row. Knows nothing of sockets: the proxy
hands it an `Exchange` after the response has gone back to the caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlmon.core.config import NAME_RE, ProxySettings, RouteSettings
from mlmon.core.decoding import BadRequest, decode_json, gunzip
from mlmon.core.schema import ModelSchema

# The bounded vocabulary of `protocol` labels; "none" is traffic that is only forwarded.
PROTOCOLS = ("kserve_v1", "oip_v2", "mlflow", "generic", "none")
# Why an exchange produced no (or fewer) events; `reason` of mlmon_proxy_capture_failures_total.
CAPTURE_FAILURES = (
    "too_large",
    "malformed_json",
    "unrecognised_payload",
    "unknown_model",
    "row_mismatch",
    "invalid_event",
    "queue_full",
    "internal_error",
)

_V1_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/([^/:]+))?:predict$")
_V2_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")


class CaptureError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Exchange:
    """One proxied call: what came in, what went back, and how long the upstream took."""

    protocol: str
    model_key: str | None  # the model's name in the URL (v1, v2)
    path_version: str | None
    started: float  # wall-clock seconds when the request arrived
    request_body: bytes = b""
    request_headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    status: int = 0  # the upstream's status; 502/504 when the proxy answered itself
    response_body: bytes = b""
    response_headers: dict[str, str] = field(default_factory=dict)
    latency: float = 0.0  # seconds from forwarding the request to the end of the response
    failure: str | None = None  # why the upstream gave no answer (unreachable, timeout, ...)
    too_large: bool = False  # a body was over proxy.max_capture_bytes: forwarded, not kept


def classify(method: str, path: str, settings: ProxySettings) -> tuple[str, str | None, str | None]:
    """(protocol, model name in the path, version in the path) of a request."""
    if method != "POST":
        return "none", None, None
    path = path.split("?", 1)[0]
    m = _V1_PATH.match(path)
    if m:
        return "kserve_v1", m.group(1), m.group(2)
    m = _V2_PATH.match(path)
    if m:
        return "oip_v2", m.group(1), m.group(2)
    if path == "/invocations":
        return "mlflow", None, None
    if settings.generic is not None and path == settings.generic.path:
        return "generic", None, None
    return "none", None, None


@dataclass
class Decoded:
    rows: list[dict[str, Any]]  # named feature values per row
    outputs: list[Any]  # the raw prediction per row
    scores: list[Any] | None = None  # class probabilities per row, when a separate output
    ids: list[Any] | None = None
    version: str | None = None


class Capturer:
    """Turns exchanges into events for the models of a Monitor's config."""

    def __init__(self, settings: ProxySettings, schemas: dict[str, ModelSchema]) -> None:
        self.settings = settings
        self.schemas = schemas

    def route(self, ex: Exchange) -> tuple[str, RouteSettings]:
        key = ex.model_key
        if key is None:  # mlflow, generic: one model behind the proxy
            name = self.settings.model
            if name is None:
                raise CaptureError("unknown_model", "proxy.model is not set")
            return name, self.settings.routes.get(name) or RouteSettings(model=name)
        route = self.settings.routes.get(key)
        if route is None:
            if key not in self.schemas:
                raise CaptureError("unknown_model", f"no configured model for {key!r}")
            route = RouteSettings(model=key)
        return route.model, route

    def events(self, ex: Exchange) -> tuple[str, list[dict[str, Any]]]:
        """The model and the events of an exchange; raises CaptureError."""
        name, route = self.route(ex)
        schema = self.schemas.get(name)
        if schema is None:
            raise CaptureError("unknown_model", f"{name!r} is not loaded")
        if ex.too_large:
            raise CaptureError("too_large", "body over proxy.max_capture_bytes")
        version = ex.path_version
        header_version = ex.response_headers.get(
            self.settings.version_header.lower()
        ) or ex.request_headers.get(self.settings.version_header.lower())
        base: dict[str, Any] = {"timestamp": ex.started, "latency_seconds": ex.latency}
        if ex.status < 200 or ex.status >= 300 or ex.failure is not None:
            # A failed inference counts in the service metrics only: one event per row sent
            # (one when the request cannot be read).
            try:
                rows = len(self._decode_request(ex, schema, route, ex.protocol))
            except CaptureError:
                rows = 1
            version = version or header_version
            ev = dict(base, error=_failure_text(ex))
            if version is not None and NAME_RE.match(version):
                ev["version"] = version
            return name, [dict(ev) for _ in range(max(rows, 1))]

        decoded = self._decode(ex, schema, route)
        version = version or decoded.version or header_version
        n = len(decoded.rows)
        if len(decoded.outputs) != n:
            raise CaptureError(
                "row_mismatch", f"{n} input rows but {len(decoded.outputs)} predictions"
            )
        ids = decoded.ids
        if ids is None:
            rid = ex.request_headers.get(self.settings.id_header.lower())
            if rid:
                ids = [rid] if n == 1 else [f"{rid}:{i}" for i in range(n)]
        if ids is not None and len(ids) != n:
            raise CaptureError("row_mismatch", f"{n} input rows but {len(ids)} ids")
        if version is not None and NAME_RE.match(version):
            base["version"] = version
        attrs = schema.config.sensitive_attributes
        out = []
        for i in range(n):
            row = decoded.rows[i]
            ev = dict(base)
            groups = {a: row.pop(a) for a in attrs if a in row}
            if groups:
                ev["groups"] = groups
            ev["features"] = row
            pred, scores = _prediction(
                decoded.outputs[i],
                decoded.scores[i] if decoded.scores is not None else None,
                schema,
                route,
            )
            ev["prediction"] = pred
            if scores is not None:
                ev["scores"] = scores
            if ids is not None:
                ev["id"] = ids[i]
            out.append(ev)
        return name, out

    # -- payloads ---------------------------------------------------------------------

    def _decode(self, ex: Exchange, schema: ModelSchema, route: RouteSettings) -> Decoded:
        rows = self._decode_request(ex, schema, route, ex.protocol)
        resp = _json(ex.response_body, ex.response_headers, self.settings.max_capture_bytes)
        if ex.protocol == "kserve_v1":
            d = _v1_response(resp, route)
        elif ex.protocol == "oip_v2":
            d = _v2_response(resp, route)
        elif ex.protocol == "mlflow":
            d = _mlflow_response(resp, route)
        else:
            d = self._generic_response(ex, resp)
        d.rows = rows
        return d

    def _decode_request(
        self, ex: Exchange, schema: ModelSchema, route: RouteSettings, protocol: str
    ) -> list[dict[str, Any]]:
        if ex.too_large:
            raise CaptureError("too_large", "body over proxy.max_capture_bytes")
        req = _json(ex.request_body, ex.request_headers, self.settings.max_capture_bytes)
        names = route.inputs or tuple(schema.feature_kinds)
        if protocol == "kserve_v1":
            return _v1_request(req, names)
        if protocol == "oip_v2":
            return _v2_request(req, names)
        if protocol == "mlflow":
            return _mlflow_request(req, names)
        assert self.settings.generic is not None
        return _rows(_path(self.settings.generic.features, req, None), names)

    def _generic_response(self, ex: Exchange, resp: Any) -> Decoded:
        g = self.settings.generic
        assert g is not None
        req = None
        if g.ids is not None and g.ids.startswith("request."):
            req = _json(ex.request_body, ex.request_headers, self.settings.max_capture_bytes)
        outputs = _list(_path(g.predictions, req, resp), "predictions")
        scores = _list(_path(g.scores, req, resp), "scores") if g.scores else None
        ids = _list(_path(g.ids, req, resp), "ids") if g.ids else None
        return Decoded(rows=[], outputs=outputs, scores=scores, ids=ids)


def _failure_text(ex: Exchange) -> str:
    """The event's `error`, worded so its first word is one of config.FAILURE_REASONS."""
    if ex.failure == "timeout":
        return "timeout: no response from the upstream in time"
    if ex.failure is not None:
        return f"upstream_unavailable: {ex.failure}"
    if ex.status in (429, 503):
        return f"overloaded: HTTP {ex.status}"
    if 400 <= ex.status < 500:
        return f"invalid_input: HTTP {ex.status}"
    return f"model_error: HTTP {ex.status}"


def _json(body: bytes, headers: dict[str, str], limit: int) -> Any:
    if headers.get("content-encoding", "").lower() == "gzip":
        try:
            body = gunzip(body, limit)  # under the same after-decompression limit as the API
        except BadRequest as e:
            reason = "too_large" if e.status == 413 else "malformed_json"
            raise CaptureError(reason, e.message) from None
    try:
        return decode_json(body)
    except BadRequest as e:
        raise CaptureError("malformed_json", e.message) from None


def _unrecognised(what: str) -> CaptureError:
    return CaptureError("unrecognised_payload", what)


def _list(value: Any, what: str) -> list[Any]:
    if isinstance(value, list):
        return value
    raise _unrecognised(f"expected a list of {what}, got {type(value).__name__}")


def _path(path: str | None, req: Any, resp: Any) -> Any:
    """`request.a.0.b` / `response.x` looked up in the decoded bodies."""
    if path is None:
        return None
    head, *parts = path.split(".")
    node = req if head == "request" else resp
    for p in parts:
        if isinstance(node, dict) and p in node:
            node = node[p]
        elif isinstance(node, list) and p.isdigit() and int(p) < len(node):
            node = node[int(p)]
        else:
            raise _unrecognised(f"{path}: no {p!r}")
    return node


def _rows(value: Any, names: tuple[str | None, ...]) -> list[dict[str, Any]]:
    """Rows from a list of rows (positional lists or named objects) or a mapping of columns."""
    if isinstance(value, dict):
        return _columns(value)
    rows = _list(value, "rows")
    out: list[dict[str, Any]] = []
    for r in rows:
        if isinstance(r, dict):
            out.append(dict(r))
        elif isinstance(r, list):
            out.append(_positional(r, names))
        else:  # a model with one input: a bare value per row
            out.append(_positional([r], names))
    return out


def _positional(row: list[Any], names: tuple[str | None, ...]) -> dict[str, Any]:
    if len(row) != len(names):
        raise CaptureError(
            "row_mismatch",
            f"a row of {len(row)} values for {len(names)} input names (set proxy.models.*.inputs)",
        )
    return {n: v for n, v in zip(names, row, strict=True) if n is not None}


def _columns(cols: dict[str, Any]) -> list[dict[str, Any]]:
    lengths = set()
    for k, v in cols.items():
        if not isinstance(v, list):
            raise _unrecognised(f"column {k!r} is not a list")
        lengths.add(len(v))
    if len(lengths) > 1:
        raise CaptureError("row_mismatch", "columns of different lengths")
    n = lengths.pop() if lengths else 0
    return [{k: _scalar(v[i]) for k, v in cols.items()} for i in range(n)]


def _scalar(v: Any) -> Any:
    # A column of one-element rows ([[1.0], [2.0]]) holds scalars.
    return v[0] if isinstance(v, list) and len(v) == 1 else v


def _first(doc: Any, keys: tuple[str, ...]) -> Any:
    """The value of the first of ``keys`` that a JSON object has."""
    if isinstance(doc, dict):
        for k in keys:
            if k in doc:
                return doc[k]
    raise _unrecognised(f"expected an object with one of {', '.join(keys)}")


# KServe v1 / TF Serving: {"instances": rows} or {"inputs": rows | {name: column}}
def _v1_request(req: Any, names: tuple[str | None, ...]) -> list[dict[str, Any]]:
    return _rows(_first(req, ("instances", "inputs")), names)


def _v1_response(resp: Any, route: RouteSettings) -> Decoded:
    return _outputs(_first(resp, ("predictions", "outputs")), route)


def _outputs(value: Any, route: RouteSettings) -> Decoded:
    """Predictions as a list per row, or a mapping of named output columns."""
    if isinstance(value, dict):
        if not value:
            raise _unrecognised("no outputs")
        key = route.output if route.output is not None else next(iter(value))
        if key not in value:
            raise _unrecognised(f"no output {key!r}")
        scores = value.get(route.scores) if route.scores is not None else None
        return Decoded(
            rows=[],
            outputs=_list(value[key], "predictions"),
            scores=_list(scores, "scores") if scores is not None else None,
        )
    return Decoded(rows=[], outputs=_list(value, "predictions"))


# Open Inference Protocol v2: named tensors with shape, datatype and (flat or nested) data
def _tensor(t: Any) -> tuple[str, np.ndarray]:
    if not isinstance(t, dict) or "data" not in t or "shape" not in t:
        raise _unrecognised("a tensor needs name, shape, datatype and data")
    shape = t["shape"]
    if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
        raise _unrecognised("a tensor's shape is a list of sizes")
    try:
        if t.get("datatype") == "BYTES":
            arr = np.array(t["data"], dtype=object)
            arr = arr.reshape(shape) if arr.size == int(np.prod(shape)) else arr
        else:
            arr = np.asarray(t["data"], dtype=np.float64).reshape(shape)
    except (ValueError, TypeError) as e:
        raise _unrecognised(f"tensor {t.get('name')!r}: {e}") from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    return str(t.get("name", "")), arr


def _v2_request(req: Any, names: tuple[str | None, ...]) -> list[dict[str, Any]]:
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list) or not req["inputs"]:
        raise _unrecognised("expected {'inputs': [tensor, ...]}")
    tensors = [_tensor(t) for t in req["inputs"]]
    if len(tensors) == 1 and tensors[0][1].ndim == 2 and tensors[0][1].shape[1] != 1:
        # one [rows, features] tensor: positional
        return [_positional(r, names) for r in tensors[0][1].tolist()]
    # one tensor per feature, [rows] or [rows, 1]
    cols: dict[str, list[Any]] = {}
    for name, arr in tensors:
        if arr.ndim > 2 or (arr.ndim == 2 and arr.shape[1] != 1):
            raise _unrecognised(f"tensor {name!r}: expected shape [rows] or [rows, 1]")
        cols[name] = arr.reshape(-1).tolist()
    return _columns(cols)


def _v2_response(resp: Any, route: RouteSettings) -> Decoded:
    if (
        not isinstance(resp, dict)
        or not isinstance(resp.get("outputs"), list)
        or not resp["outputs"]
    ):
        raise _unrecognised("expected {'outputs': [tensor, ...]}")
    tensors = dict(_tensor(t) for t in resp["outputs"])
    key = route.output if route.output is not None else next(iter(tensors))
    if key not in tensors:
        raise _unrecognised(f"no output tensor {key!r}")
    out = tensors[key]
    outputs = _per_row(out)
    scores = None
    if route.scores is not None:
        if route.scores not in tensors:
            raise _unrecognised(f"no output tensor {route.scores!r}")
        scores = _per_row(tensors[route.scores])
    version = resp.get("model_version")
    return Decoded(
        rows=[],
        outputs=outputs,
        scores=scores,
        version=version if isinstance(version, str) else None,
    )


def _per_row(arr: np.ndarray) -> list[Any]:
    """A tensor's values per row: scalars for [rows], lists for [rows, ...]."""
    if arr.ndim == 1:
        return arr.tolist()
    return arr.reshape(arr.shape[0], int(np.prod(arr.shape[1:]))).tolist()


# MLflow /invocations: dataframe_split, dataframe_records, instances or inputs
def _mlflow_request(req: Any, names: tuple[str | None, ...]) -> list[dict[str, Any]]:
    if isinstance(req, dict):
        if "dataframe_split" in req:
            split = req["dataframe_split"]
            if not isinstance(split, dict) or not isinstance(split.get("data"), list):
                raise _unrecognised("dataframe_split needs data (and columns)")
            cols = split.get("columns")
            rows = split["data"]
            if cols is None:
                return _rows(rows, names)
            if not isinstance(cols, list):
                raise _unrecognised("dataframe_split.columns is a list")
            return _rows(rows, tuple(str(c) for c in cols))
        if "dataframe_records" in req:
            return _rows(req["dataframe_records"], names)
        if "instances" in req:
            return _rows(req["instances"], names)
        if "inputs" in req:
            return _rows(req["inputs"], names)
    raise _unrecognised("expected dataframe_split, dataframe_records, instances or inputs")


def _mlflow_response(resp: Any, route: RouteSettings) -> Decoded:
    if isinstance(resp, dict) and "predictions" in resp:
        resp = resp["predictions"]
    if isinstance(resp, dict):  # a DataFrame by columns
        return _outputs(resp, route)
    outputs = _list(resp, "predictions")
    if outputs and all(isinstance(o, dict) for o in outputs):  # a DataFrame by records
        key = route.output if route.output is not None else next(iter(outputs[0]), None)
        try:
            scores = [o[route.scores] for o in outputs] if route.scores is not None else None
            return Decoded(rows=[], outputs=[o[key] for o in outputs], scores=scores)
        except KeyError as e:
            raise _unrecognised(f"no output column {e}") from None
    return Decoded(rows=[], outputs=outputs)


# -- one row's output as the event's prediction (and scores) ---------------------------


def _prediction(
    raw: Any, scores: Any, schema: ModelSchema, route: RouteSettings
) -> tuple[Any, Any]:
    """A row's prediction for the event. Classifiers accept a class, a list of class
    probabilities (the class is the most probable), or, for binary models, the positive
    class's probability (a number strictly between 0 and 1); regression a number."""
    if isinstance(raw, dict):
        if route.scores is not None and route.scores in raw:
            scores = raw[route.scores]
        key = route.output if route.output is not None else next(iter(raw), None)
        raw = raw.get(key)
    if isinstance(raw, list) and len(raw) == 1:
        raw = raw[0]
    classes = schema.classes
    if not classes:
        return raw, None
    if isinstance(scores, list) and len(scores) == 1:
        scores = scores[0]
    if isinstance(raw, list):
        if len(raw) == len(classes) and all(_is_number(p) for p in raw):
            probs = raw
            return classes[int(np.argmax(probs))], dict(zip(classes, probs, strict=True))
        return raw, None  # the event validation reports it
    if type(raw) is float:
        if raw.is_integer():
            raw = int(raw)
        elif schema.positive_class is not None and 0.0 < raw < 1.0:
            neg = classes[1 - schema.positive_index]
            return (schema.positive_class if raw >= 0.5 else neg), raw
    if isinstance(scores, list) and len(scores) == len(classes):
        return raw, dict(zip(classes, scores, strict=True))
    if _is_number(scores):
        return raw, scores
    return raw, None


def _is_number(v: Any) -> bool:
    return type(v) in (int, float)
