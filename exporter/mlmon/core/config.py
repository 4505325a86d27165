"""The configuration: read the YAML, validate it (`document`), build the settings (`settings`).

Validation reports every problem at once, each with its path in the file
(``models[0].features.age: ...``), so one edit fixes them all. The vocabularies, settings
and value parsers are re-exported here, so `mlmon.core.config` stays the one import.
"""

from __future__ import annotations

import types
from dataclasses import fields, replace
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from mlmon.core.catalog import (
    CLOSE_REASONS,
    CORRECTIONS,
    DEFAULT_EMBEDDING_COMPONENTS,
    DEFAULT_LISTEN,
    DEFAULT_PROXY_LISTEN,
    FAILURE_REASONS,
    KINDS,
    LIMIT_DEFAULTS,
    NAME_RE,
    TASKS,
    THRESHOLDS,
)
from mlmon.core.document import (
    ConfigDoc,
    DefaultsDoc,
    ModelDoc,
    ProxyDoc,
    Section,
    ServerDoc,
    StoreDoc,
    config_problems,
)
from mlmon.core.settings import (
    Config,
    DriftSettings,
    FairnessSettings,
    FeatureSpec,
    GenericSettings,
    LabelSettings,
    ModelConfig,
    PerformanceSettings,
    ProxySettings,
    RouteSettings,
    ServerSettings,
    StoreSettings,
    WindowSettings,
)
from mlmon.core.values import label_text, parse_duration, split_address, upstream_address

__all__ = [
    "CLOSE_REASONS",
    "CORRECTIONS",
    "DEFAULT_LISTEN",
    "DEFAULT_PROXY_LISTEN",
    "FAILURE_REASONS",
    "KINDS",
    "LIMIT_DEFAULTS",
    "NAME_RE",
    "TASKS",
    "THRESHOLDS",
    "Config",
    "ConfigError",
    "DriftSettings",
    "FairnessSettings",
    "FeatureSpec",
    "GenericSettings",
    "LabelSettings",
    "ModelConfig",
    "PerformanceSettings",
    "ProxySettings",
    "RouteSettings",
    "ServerSettings",
    "StoreSettings",
    "WindowSettings",
    "label_text",
    "load_config",
    "parse_config",
    "parse_duration",
    "split_address",
    "upstream_address",
]


class ConfigError(Exception):
    """Every problem found in a configuration, each prefixed with its path."""

    def __init__(self, errors: list[str], source: str = "config") -> None:
        self.errors = errors
        self.source = source
        super().__init__(
            f"{source}: {len(errors)} error(s)\n" + "\n".join(f"  - {e}" for e in errors)
        )


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError([f"$: cannot read: {e.strerror}"], str(path)) from e
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError([f"$: not valid YAML: {e}"], str(path)) from e
    cfg = parse_config(doc, path.resolve().parent, str(path))
    return replace(cfg, path=path)


def parse_config(doc: Any, base_dir: Path, source: str = "config") -> Config:
    """Validate a parsed YAML document; raise ConfigError listing every problem."""
    if not isinstance(doc, dict):
        raise ConfigError(["$: expected a mapping with a 'models' list"], source)
    problems = list(config_problems(doc))
    try:
        valid = ConfigDoc.model_validate(doc)
    except ValidationError as e:
        problems += [(_location(err["loc"]), _message(err)) for err in e.errors()]
    if problems:
        problems.sort(key=lambda p: [(isinstance(part, str), part) for part in p[0]])
        raise ConfigError([f"{_path(loc)}: {message}" for loc, message in problems], source)
    return _build(valid, base_dir)


# -- messages -------------------------------------------------------------------------------


def _location(loc: tuple) -> tuple:
    return tuple(part for part in loc if part != "[key]")  # a bad key is reported at itself


def _path(loc: tuple) -> str:
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
    return text.lstrip(".") or "$"


def _message(err: dict) -> str:
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "value_error":
        return str(ctx["error"])
    if kind == "missing":
        _, info = _field_at(err["loc"])
        return "required" + (f": {info.description}" if info and info.description else "")
    if kind == "extra_forbidden":
        section, _ = _field_at(err["loc"][:-1])
        is_section = isinstance(section, type) and issubclass(section, Section)
        allowed = sorted(section.model_fields) if is_section else []
        return f"unknown key (allowed: {', '.join(allowed)})"
    if kind in ("greater_than_equal", "less_than_equal"):
        bound = ">= {ge}" if "ge" in ctx else "<= {le}"
        return f"must be {bound.format(**ctx)}, got {value}"
    expected = _EXPECTED.get(kind)
    if expected:
        return f"expected {expected}, got {value!r}"
    return err["msg"]


_EXPECTED = {
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "finite_number": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "model_type": "a mapping",
    "dict_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list",
}


def _field_at(loc: tuple) -> tuple[Any, Any]:
    """The type of the value at `loc` (bare of Annotated and None), and the field it fills
    (None for a list item or mapping value)."""
    tp: Any = ConfigDoc
    info = None
    for part in _location(loc):
        tp = _bare(tp)
        if isinstance(part, str) and isinstance(tp, type) and issubclass(tp, BaseModel):
            info = tp.model_fields.get(part)
            if info is None:
                return None, None
            tp = info.annotation
        elif isinstance(part, int) and get_origin(tp) in (list, tuple):
            tp, info = get_args(tp)[0], None
        elif get_origin(tp) is dict:
            tp, info = get_args(tp)[1], None
        else:
            return None, None
    return _bare(tp), info


def _bare(tp: Any) -> Any:
    """`Annotated[X, ...] | None` -> X."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            tp = next(a for a in get_args(tp) if a is not type(None))
        else:
            return tp


# -- settings from a valid document -----------------------------------------------------------


def _build(doc: ConfigDoc, base_dir: Path) -> Config:
    defaults = doc.defaults or DefaultsDoc()
    window = _merged(WindowSettings(), defaults.window)
    drift = _merged(DriftSettings(), defaults.drift)
    thresholds = _thresholds({k: v[0] for k, v in THRESHOLDS.items()}, defaults.thresholds)
    models = tuple(_model(m, base_dir, window, drift, thresholds) for m in doc.models)
    limits = {**LIMIT_DEFAULTS, **(doc.limits.given() if doc.limits else {})}
    proxy = _proxy(doc.proxy, models) if doc.proxy else None
    server = _server(doc.server, base_dir)
    store = _store(doc.store, base_dir) if doc.store else None
    return Config(models=models, server=server, limits=limits, proxy=proxy, store=store)


def _merged(base: Any, section: Section | dict[str, Any] | None) -> Any:
    """`base` (a settings dataclass) with the keys the file set; a duration `x` sets
    `x_seconds`."""
    given = section.given() if isinstance(section, Section) else section or {}
    names = {f.name for f in fields(base)}
    return replace(base, **{(k if k in names else f"{k}_seconds"): v for k, v in given.items()})


def _thresholds(base: dict[str, float], section: Section | None) -> dict[str, float]:
    return {**base, **(section.given() if section else {})}


def _model(
    doc: ModelDoc,
    base_dir: Path,
    window: WindowSettings,
    drift: DriftSettings,
    thresholds: dict[str, float],
) -> ModelConfig:
    features = None
    if doc.features is not None:
        features = tuple(_feature_spec(name, spec) for name, spec in doc.features.items())
    return ModelConfig(
        name=doc.name,
        task=doc.task,
        baseline=base_dir / doc.baseline,
        features=features,
        classes=doc.classes,
        positive_class=doc.positive_class,
        sensitive_attributes=doc.sensitive_attributes,
        default_version=doc.default_version,
        window=_merged(window, doc.window),
        drift=_merged(drift, doc.drift),
        thresholds=_thresholds(thresholds, doc.thresholds),
        labels=_merged(LabelSettings(), doc.labels),
        performance=_merged(PerformanceSettings(), doc.performance),
        fairness=_merged(FairnessSettings(), doc.fairness),
    )


_SERVER_PATHS = ("admin_token_file", "ingest_token_file", "metrics_token_file", "snapshot_dir")


def _feature_spec(name: str, spec: Any) -> FeatureSpec:
    """A feature's settings; an embedding keeps DEFAULT_EMBEDDING_COMPONENTS components
    unless told, never more than its dim."""
    if spec.kind == "embedding":
        k = spec.components or min(DEFAULT_EMBEDDING_COMPONENTS, spec.dim)
        return FeatureSpec(name, "embedding", dim=spec.dim, components=k)
    return FeatureSpec(name, spec.kind or ("numeric" if spec.edges else None), spec.edges)


def _server(doc: ServerDoc | None, base_dir: Path) -> ServerSettings:
    server = _merged(ServerSettings(), doc)
    paths = {key: base_dir / getattr(server, key) for key in _SERVER_PATHS if getattr(server, key)}
    return replace(server, **paths)


def _store(doc: StoreDoc, base_dir: Path) -> StoreSettings:
    store = _merged(StoreSettings(url=doc.url), doc)
    paths = {
        k: base_dir / getattr(store, k) for k in ("password_file", "ca_file") if getattr(store, k)
    }
    return replace(store, **paths)


def _proxy(doc: ProxyDoc, models: tuple[ModelConfig, ...]) -> ProxySettings:
    given = doc.given()
    routes = {
        str(key): RouteSettings(model=(spec and spec.model) or key, **_route(spec))
        for key, spec in (given.pop("models", None) or {}).items()
    }
    generic = given.pop("generic", None)
    if "model" not in given and len(models) == 1:
        given["model"] = models[0].name
    out = _merged(ProxySettings(upstream=doc.upstream), given)
    generic_settings = GenericSettings(**generic.given()) if generic else None
    return replace(out, routes=routes, generic=generic_settings)


def _route(spec: Section | None) -> dict[str, Any]:
    return {k: v for k, v in (spec.given() if spec else {}).items() if k != "model"}
