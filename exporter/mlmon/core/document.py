"""What the YAML file may say, as pydantic models: keys, types, ranges and the checks of one
value. Nothing here fills defaults or resolves paths; `config` builds the settings.

Every model forbids unknown keys and validates strictly (no "1" for 1, no true for 1). A
check that needs one value raises ValueError with the message the user reads; checks
that relate several values, which must speak even when other values are wrong, are the
functions at the end (`model_problems`, `config_problems`), run on the raw document.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, create_model

from mlmon.core.catalog import (
    CORRECTIONS,
    KINDS,
    LIMIT_DEFAULTS,
    NAME_RE,
    TASKS,
    THRESHOLDS,
)
from mlmon.core.values import label_text, parse_duration, split_address, upstream_address

_HEADER_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")
Problem = tuple[tuple[str | int, ...], str]  # (location in the document, message)


class Section(BaseModel):
    """A mapping of the document: unknown keys are errors, values are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    def given(self) -> dict[str, Any]:
        """The keys the file set, with their validated values."""
        return {key: getattr(self, key) for key in self.model_fields_set}


# -- one value ----------------------------------------------------------------------------


def one_of(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    return check


def _name_check(what: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not NAME_RE.match(value):
            raise ValueError(what)
        return value

    return check


def _address(value: Any) -> str:
    split_address(value)
    return value


def _upstream(value: Any) -> str:
    upstream_address(value)
    return str(value).rstrip("/")


def _class_names(value: Any) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or len(value) < 2
        or not all(isinstance(x, str | int) for x in value)
    ):
        raise ValueError("expected a list of at least two class names")
    names = tuple(label_text(x) for x in value)
    if len(set(names)) != len(names):
        raise ValueError("classes must be distinct")
    return names


def _class_name(value: Any) -> str:
    if not isinstance(value, str | int):
        raise ValueError("expected a class name")
    return label_text(value)


def _output_name(value: Any) -> str:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ValueError("expected an output name")
    return str(value)


def _file_path(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a file path")
    return value


def _dotted(required: bool) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        parts = value.split(".") if isinstance(value, str) else []
        if len(parts) < 2 or parts[0] not in ("request", "response") or not all(parts):
            hint = "a path such as request.instances or response.outputs.0"
            raise ValueError(("required: " if required else "") + hint)
        return value

    return check


def _request_path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError("required: the request path to capture, e.g. /predict")
    return value


def _edges(value: list[float]) -> tuple[float, ...]:
    if not value:
        raise ValueError("expected a non-empty list of finite numbers")
    if sorted(set(value)) != list(value):
        raise ValueError("edges must be strictly increasing")
    return tuple(value)


def _feature_spec(value: Any) -> Any:
    """A feature is a kind (`age: numeric`), nothing, or a mapping (`kind`, `edges`)."""
    if value is None:
        return {}
    if isinstance(value, str):
        return {"kind": one_of(KINDS)(value)}
    if not isinstance(value, dict):
        raise ValueError("expected 'numeric', 'categorical', a mapping or nothing")
    return value


def _feature_list(value: Any) -> Any:
    """`features: [a, b]` means `features: {a: , b: }`."""
    if value is not None and not isinstance(value, list | dict):
        raise ValueError("expected a mapping of feature name to kind, or a list of names")
    if isinstance(value, list):
        value = {name if isinstance(name, str) else repr(name): None for name in value}
    if value is not None and not value:
        raise ValueError("must name at least one feature")
    return value


def _attribute_names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(
        isinstance(x, str) and NAME_RE.match(x) for x in value
    ):
        raise ValueError("expected a list of attribute names")
    return tuple(value)


def _inputs(value: Any) -> tuple[str | None, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(i is None or (isinstance(i, str) and NAME_RE.match(i)) for i in value)
    ):
        raise ValueError("expected a list of feature names (null skips a position)")
    return tuple(value)


def _header(value: Any) -> str:
    if not isinstance(value, str) or not _HEADER_RE.match(value):
        raise ValueError("expected an HTTP header name")
    return value


def _reference_groups(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of attribute to group")
    return {str(k): label_text(v) for k, v in value.items()}


def _non_empty(value: list) -> list:
    if not value:
        raise ValueError("required: a non-empty list of models")
    return value


Name = Annotated[str, BeforeValidator(_name_check("expected a name"))]
ModelName = Annotated[
    str, BeforeValidator(_name_check("required: 1-64 characters of letters, digits, _ . : -"))
]
FeatureName = Annotated[
    str,
    BeforeValidator(_name_check("feature names are 1-64 characters of letters, digits, _ . : -")),
]
VersionName = Annotated[str, BeforeValidator(_name_check("expected a version name"))]
Duration = Annotated[float, BeforeValidator(parse_duration)]
Number = Annotated[float, Field(ge=0, allow_inf_nan=False)]
FilePath = Annotated[str, BeforeValidator(_file_path)]
Address = Annotated[str, BeforeValidator(_address)]


def Count(lo: int, hi: int | None = None) -> Any:
    return Annotated[int, Field(ge=lo, le=hi)]


# -- sections -----------------------------------------------------------------------------


class FeatureDoc(Section):
    kind: Annotated[str, BeforeValidator(one_of(KINDS))] | None = None
    edges: (
        Annotated[list[Annotated[float, Field(allow_inf_nan=False)]], AfterValidator(_edges)] | None
    ) = None
    dim: Count(1, 65536) | None = None
    components: Count(1, 1000) | None = None


class WindowDoc(Section):
    length: Duration | None = None
    slices: Count(1, 1440) | None = None
    future_tolerance: Duration | None = None


class DriftDoc(Section):
    correction: Annotated[str, BeforeValidator(one_of(CORRECTIONS))] | None = None
    min_samples: Count(1, 10**9) | None = None
    bins: Count(2, 100) | None = None
    grid: Count(10, 1000) | None = None
    top_k: Count(1, 1000) | None = None
    ks_p_value: Annotated[str, BeforeValidator(one_of(("kolmogorov", "kstwo")))] | None = None
    multivariate_variance: Annotated[float, Field(gt=0, le=1)] | None = None


ThresholdsDoc = create_model(
    "ThresholdsDoc",
    __base__=Section,
    **{name: (Number | None, None) for name in THRESHOLDS},
)

LimitsDoc = create_model(
    "LimitsDoc",
    __base__=Section,
    **{name: (Count(1) | None, None) for name in LIMIT_DEFAULTS},
)


class LabelsDoc(Section):
    max_entries: Count(1, 10**8) | None = None
    ttl: Duration | None = None


class PerformanceDoc(Section):
    min_labels: Count(1) | None = None
    recalibrate: bool | None = None
    champion: VersionName | None = None


class FairnessDoc(Section):
    min_samples: Count(1) | None = None
    reference_groups: Annotated[dict[str, str], BeforeValidator(_reference_groups)] | None = None


class ModelDoc(Section):
    name: ModelName = Field(description="1-64 characters of letters, digits, _ . : -")
    task: Annotated[str, BeforeValidator(one_of(TASKS))] = Field(
        description=f"one of {', '.join(TASKS)}"
    )
    baseline: FilePath = Field(description="the path of the baseline profile (JSON)")
    features: (
        Annotated[
            dict[FeatureName, Annotated[FeatureDoc, BeforeValidator(_feature_spec)]],
            BeforeValidator(_feature_list),
        ]
        | None
    ) = None
    classes: Annotated[tuple[str, ...], BeforeValidator(_class_names)] | None = None
    positive_class: Annotated[str, BeforeValidator(_class_name)] | None = None
    sensitive_attributes: Annotated[tuple[str, ...], BeforeValidator(_attribute_names)] = ()
    default_version: VersionName = "unversioned"
    window: WindowDoc | None = None
    drift: DriftDoc | None = None
    thresholds: ThresholdsDoc | None = None
    labels: LabelsDoc | None = None
    performance: PerformanceDoc | None = None
    fairness: FairnessDoc | None = None


class DefaultsDoc(Section):
    window: WindowDoc | None = None
    drift: DriftDoc | None = None
    thresholds: ThresholdsDoc | None = None


class ConnectionsDoc(Section):
    """The client-side limits of a listening server (`server` and `proxy` both have them)."""

    header_timeout: Duration | None = None
    body_timeout: Duration | None = None
    idle_timeout: Duration | None = None
    max_connections: Count(16, 1_000_000) | None = None


class ServerDoc(ConnectionsDoc):
    listen_address: Address | None = None
    threads: Count(1, 64) | None = None
    admin_token_file: FilePath | None = None
    ingest_token_file: FilePath | None = None
    metrics_token_file: FilePath | None = None
    snapshot_dir: FilePath | None = None
    snapshot_interval: Duration | None = None


def _store_url(value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"^rediss?://[^\s/?#]+(/\d{1,2})?$", value):
        raise ValueError("expected redis://HOST:PORT[/DB] or rediss://HOST:PORT[/DB]")
    return value


def _prefix(value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"^[A-Za-z0-9_.:-]{1,64}$", value):
        raise ValueError("expected 1 to 64 letters, digits or _ . : -")
    return value


class StoreDoc(Section):
    """The Redis (or Valkey) store a fleet of replicas shares (see `fleet`)."""

    url: Annotated[str, BeforeValidator(_store_url)] = Field(
        description="expected redis://HOST:PORT[/DB] or rediss://HOST:PORT[/DB]"
    )
    password_file: FilePath | None = None
    ca_file: FilePath | None = None
    prefix: Annotated[str, BeforeValidator(_prefix)] | None = None
    timeout: Duration | None = None
    queue_size: Count(1_000, 10_000_000) | None = None


class RouteDoc(Section):
    model: Name | None = None
    inputs: Annotated[tuple[str | None, ...], BeforeValidator(_inputs)] | None = None
    output: Annotated[str, BeforeValidator(_output_name)] | None = None
    scores: Annotated[str, BeforeValidator(_output_name)] | None = None


class GenericDoc(Section):
    path: Annotated[str, BeforeValidator(_request_path)] = Field(
        description="the request path to capture, e.g. /predict"
    )
    features: Annotated[str, BeforeValidator(_dotted(True))] = Field(
        description="a path such as request.instances or response.outputs.0"
    )
    predictions: Annotated[str, BeforeValidator(_dotted(True))] = Field(
        description="a path such as request.instances or response.outputs.0"
    )
    scores: Annotated[str, BeforeValidator(_dotted(False))] | None = None
    ids: Annotated[str, BeforeValidator(_dotted(False))] | None = None


Bytes = Count(1, 2**31)


class ProxyDoc(ConnectionsDoc):
    upstream: Annotated[str, BeforeValidator(_upstream)] = Field(
        description="expected http://HOST[:PORT] (plain HTTP, no path)"
    )
    listen_address: Address | None = None
    timeout: Duration | None = None
    connect_timeout: Duration | None = None
    max_capture_bytes: Bytes | None = None
    queue_size: Bytes | None = None
    queue_bytes: Bytes | None = None
    max_upstream_connections: Bytes | None = None
    id_header: Annotated[str, BeforeValidator(_header)] | None = None
    version_header: Annotated[str, BeforeValidator(_header)] | None = None
    model: Name | None = None
    models: dict[str, RouteDoc | None] | None = None
    generic: GenericDoc | None = None


class ConfigDoc(Section):
    models: Annotated[list[ModelDoc], AfterValidator(_non_empty)] = Field(
        description="a non-empty list of models"
    )
    defaults: DefaultsDoc | None = None
    server: ServerDoc | None = None
    limits: LimitsDoc | None = None
    proxy: ProxyDoc | None = None
    store: StoreDoc | None = None


# -- relations between values ---------------------------------------------------------------


def _valid(check: Callable[[Any], Any], value: Any) -> Any:
    """`check(value)`, or None where the value is wrong (its own error is reported already)."""
    try:
        return check(value)
    except ValueError:
        return None


def model_problems(raw: Any) -> Iterator[Problem]:
    """What is wrong between one model's values: classes against the task, the positive
    class, edges of a categorical feature, reference groups of unknown attributes."""
    if not isinstance(raw, dict):
        return
    task = raw.get("task")
    classes = _valid(_class_names, raw["classes"]) if "classes" in raw else None
    if classes is not None and task == "regression":
        yield ("classes",), "a regression model has no classes"
    if task == "binary" and classes is not None and len(classes) != 2:
        yield ("classes",), "a binary model has exactly two classes"
    if "positive_class" in raw:
        positive = _valid(_class_name, raw["positive_class"])
        if task != "binary" and task in TASKS:
            yield ("positive_class",), "only a binary model has a positive class"
        elif positive is not None and classes is not None and positive not in classes:
            yield ("positive_class",), f"{positive!r} is not one of classes"
    yield from _categorical_edges(raw.get("features"))
    yield from _embedding_problems(raw.get("features"))
    yield from _unknown_reference_groups(raw)


def _categorical_edges(features: Any) -> Iterator[Problem]:
    if not isinstance(features, dict):
        return
    for name, spec in features.items():
        if isinstance(spec, dict) and spec.get("kind") == "categorical" and "edges" in spec:
            yield ("features", name, "edges"), "only numeric features have edges"


def _embedding_problems(features: Any) -> Iterator[Problem]:
    """An embedding needs its dim and keeps at most dim components; only embeddings have
    either, and none has edges."""
    if not isinstance(features, dict):
        return
    for name, spec in features.items():
        spec = {"kind": spec} if isinstance(spec, str) else spec
        if not isinstance(spec, dict):
            continue
        if spec.get("kind") != "embedding":
            for key in ("dim", "components"):
                if key in spec:
                    yield ("features", name, key), "only embedding features have " + key
            continue
        dim, k = spec.get("dim"), spec.get("components")
        if dim is None:
            yield ("features", name, "dim"), "required: the numbers each event carries"
        elif type(dim) is int and type(k) is int and k > dim:
            yield ("features", name, "components"), f"at most dim ({dim})"
        if "edges" in spec:
            yield ("features", name, "edges"), "only numeric features have edges"


def _unknown_reference_groups(raw: dict) -> Iterator[Problem]:
    fairness = raw.get("fairness")
    groups = fairness.get("reference_groups") if isinstance(fairness, dict) else None
    if not isinstance(groups, dict):
        return
    sensitive = _valid(_attribute_names, raw.get("sensitive_attributes", [])) or ()
    for attribute in groups:
        if attribute not in sensitive:
            where = ("fairness", "reference_groups", attribute)
            yield where, "not one of sensitive_attributes"


def config_problems(doc: dict) -> Iterator[Problem]:
    """What is wrong between models and sections: each model's own relations, duplicate
    names, and proxy settings that name models the config does not have."""
    models = doc.get("models") if isinstance(doc.get("models"), list) else []
    names: set[str] = set()
    for i, raw in enumerate(models):
        for loc, message in model_problems(raw):
            yield ("models", i, *loc), message
        name = raw.get("name") if isinstance(raw, dict) else None
        if not isinstance(name, str):
            continue  # reported as not a name
        if name in names:
            yield ("models", i, "name"), f"duplicate model name {name!r}"
        names.add(name)
    if isinstance(doc.get("proxy"), dict):
        yield from _proxy_problems(doc["proxy"], names, len(models))


def _proxy_problems(proxy: dict, names: set, n_models: int) -> Iterator[Problem]:
    model = proxy.get("model")
    if model is not None and model not in names:
        yield ("proxy", "model"), f"{model!r} is not a configured model"
    if proxy.get("generic") is not None and model is None and n_models != 1:
        yield ("proxy", "model"), "required with generic: the model its events go to"
    routes = proxy.get("models")
    for key, spec in (routes if isinstance(routes, dict) else {}).items():
        if spec is not None and not isinstance(spec, dict):
            continue  # reported as not a mapping
        target = (spec or {}).get("model", key)
        if target not in names:
            yield ("proxy", "models", key, "model"), f"{target!r} is not a configured model"
