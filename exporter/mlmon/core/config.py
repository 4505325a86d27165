"""The YAML configuration: models, their schema, windows, drift settings, thresholds, limits.

Validation walks the whole document and reports every problem at once, each with its
path in the file (``models[0].features.age: ...``), so one edit fixes them all.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

TASKS = ("binary", "multiclass", "regression")
KINDS = ("numeric", "categorical")
CORRECTIONS = ("benjamini-hochberg", "bonferroni", "none")
NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

# Every threshold a model exports as `mlmon_threshold_<name>`; alerts and dashboards read
# these series, so one config value moves the alert and the red line together.
THRESHOLDS: dict[str, tuple[float, str]] = {
    "drift_alpha": (
        0.05,
        "Significance level for drift tests, after multiple-testing correction.",
    ),
    "drift_ks_min": (
        0.1,
        "Smallest KS statistic that counts as drift for a numeric feature (effect-size floor).",
    ),
    "drift_psi_min": (
        0.1,
        "Smallest PSI that counts as drift for a categorical feature (effect-size floor).",
    ),
    "drifted_features_ratio_max": (
        0.3,
        "Share of a model's features that may drift before the whole dataset counts as drifted.",
    ),
    "missing_ratio_increase_max": (
        0.05,
        "How far a feature's missing-value ratio may rise above its baseline ratio.",
    ),
    "out_of_range_ratio_max": (
        0.05,
        "Share of a numeric feature's values that may fall outside the baseline's [min, max].",
    ),
    "unseen_category_ratio_increase_max": (
        0.05,
        "How far the share of categories outside the baseline vocabulary may rise above baseline.",
    ),
    "error_ratio_max": (
        0.01,
        "Error budget: the share of inferences that may fail (0.01 is a 99% success objective).",
    ),
    "latency_p99_seconds_max": (
        0.5,
        "Largest acceptable 99th-percentile inference latency, in seconds.",
    ),
    "request_rate_min": (
        0.0,
        "Inferences per second below which traffic counts as stopped (0: only a full stop).",
    ),
    "accuracy_min": (
        0.7,
        "Lowest acceptable accuracy of the labelled predictions.",
    ),
    "f1_min": (
        0.5,
        "Lowest acceptable F1 (the positive class for binary models, macro for multiclass).",
    ),
    "false_negative_rate_max": (
        0.5,
        "Highest acceptable false-negative rate of the positive class (binary models).",
    ),
    "calibration_error_max": (
        0.1,
        "Highest acceptable expected calibration error of the scores.",
    ),
    "disparate_impact_min": (
        0.8,
        "Lowest acceptable ratio of a group's selection rate to the reference group's "
        "(the four-fifths rule).",
    ),
    "challenger_p_value_max": (
        0.05,
        "Significance level below which a challenger's accuracy difference counts as real.",
    ),
}

LIMIT_DEFAULTS: dict[str, int] = {
    "max_body_bytes": 10 * 1024 * 1024,
    "max_batch_events": 10_000,
    "max_features_per_event": 1_000,
    "max_string_length": 256,
    "max_versions": 10,
    "max_groups": 20,
    "max_classes": 50,
}

FAILURE_REASONS = (
    "timeout",
    "invalid_input",
    "model_error",
    "upstream_unavailable",
    "overloaded",
    "other",
)

# `reason` of mlmon_http_connections_closed_total: why the server closed a connection.
CLOSE_REASONS = (
    "header_timeout",
    "body_timeout",
    "idle_timeout",
    "send_timeout",
    "evicted",
    "refused",
    "bad_request",
    "head_too_large",
)

DEFAULT_LISTEN = "127.0.0.1:9797"
DEFAULT_PROXY_LISTEN = "127.0.0.1:9798"


class ConfigError(Exception):
    """Every problem found in a configuration, each prefixed with its path."""

    def __init__(self, errors: list[str], source: str = "config") -> None:
        self.errors = errors
        self.source = source
        super().__init__(
            f"{source}: {len(errors)} error(s)\n" + "\n".join(f"  - {e}" for e in errors)
        )


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    kind: str | None  # None: inferred from the baseline
    edges: tuple[float, ...] | None = None  # explicit histogram bucket edges (numeric only)


@dataclass(frozen=True)
class WindowSettings:
    length_seconds: float = 3600.0
    slices: int = 60

    @property
    def slice_seconds(self) -> float:
        return self.length_seconds / self.slices


@dataclass(frozen=True)
class DriftSettings:
    correction: str = "benjamini-hochberg"
    min_samples: int = 500
    bins: int = 10  # coarse histogram buckets from reference quantiles (deciles)
    grid: int = 100  # finer quantile grid used for KS and Wasserstein
    top_k: int = 50  # categories kept per feature; the rest fold into __other__
    ks_p_value: str = "kolmogorov"  # or "kstwo" (ks_2samp's asymp p-values; slower)


@dataclass(frozen=True)
class LabelSettings:
    max_entries: int = 100_000  # predictions waiting for their label, per model
    ttl_seconds: float = 14 * 86400.0  # how long a prediction waits for its label


@dataclass(frozen=True)
class PerformanceSettings:
    min_labels: int = 100  # labelled predictions a window needs before metrics are reported
    recalibrate: bool = True  # label-free estimates use the baseline's calibration table
    champion: str | None = None  # None: the version with the most traffic in the window


@dataclass(frozen=True)
class FairnessSettings:
    min_samples: int = 100  # predictions (and labels) a group needs before it is reported
    reference_groups: dict[str, str] = field(default_factory=dict)  # attribute -> group


@dataclass(frozen=True)
class ModelConfig:
    name: str
    task: str
    baseline: Path
    features: tuple[FeatureSpec, ...] | None  # None: every feature of the baseline
    classes: tuple[str, ...] | None = None
    positive_class: str | None = None
    sensitive_attributes: tuple[str, ...] = ()
    default_version: str = "unversioned"
    window: WindowSettings = field(default_factory=WindowSettings)
    drift: DriftSettings = field(default_factory=DriftSettings)
    thresholds: dict[str, float] = field(default_factory=dict)
    labels: LabelSettings = field(default_factory=LabelSettings)
    performance: PerformanceSettings = field(default_factory=PerformanceSettings)
    fairness: FairnessSettings = field(default_factory=FairnessSettings)


@dataclass(frozen=True)
class ServerSettings:
    listen_address: str = DEFAULT_LISTEN
    threads: int = 4
    # Bearer tokens, read from files (paths relative to the config); the environment
    # variables MLMON_ADMIN_TOKEN, MLMON_INGEST_TOKEN and MLMON_METRICS_TOKEN take
    # precedence. No admin token: the admin API is off. No ingest or metrics token: open.
    admin_token_file: Path | None = None
    ingest_token_file: Path | None = None
    metrics_token_file: Path | None = None
    # Restart without amnesia: where each model's state is snapshotted (None: never), and
    # how often (also on SIGTERM).
    snapshot_dir: Path | None = None
    snapshot_interval_seconds: float = 60.0
    # Slow and idle clients (see `guard`): the whole request head must arrive within
    # header_timeout; a body may fall silent for body_timeout; a keep-alive connection may
    # idle for idle_timeout. At max_connections a newcomer evicts the oldest connection
    # that has not sent a complete request head.
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0
    idle_timeout_seconds: float = 60.0
    max_connections: int = 1000


@dataclass(frozen=True)
class RouteSettings:
    """How the proxy reads one upstream model's payloads (keyed by its name in the URL)."""

    model: str  # the configured model its events go to
    # Feature name of each position of a positional input row; None skips a position.
    # Default: the model's features in config (else baseline) order.
    inputs: tuple[str | None, ...] | None = None
    output: str | None = None  # the output (tensor, column or key) holding the prediction
    scores: str | None = None  # the output holding class probabilities, if separate


@dataclass(frozen=True)
class GenericSettings:
    """A JSON API the proxy captures by configured paths (``request.a.b`` / ``response.c``)."""

    path: str
    features: str
    predictions: str
    scores: str | None = None
    ids: str | None = None


@dataclass(frozen=True)
class ProxySettings:
    upstream: str  # http://host:port of the model server
    listen_address: str = DEFAULT_PROXY_LISTEN
    timeout_seconds: float = 30.0  # the whole upstream response must arrive within this
    connect_timeout_seconds: float = 2.0
    max_capture_bytes: int = 10 * 1024 * 1024  # larger bodies are forwarded, not captured
    queue_size: int = 10_000  # exchanges waiting for capture; beyond, dropped and counted
    queue_bytes: int = 64 * 1024 * 1024  # their bodies' bytes; beyond, dropped and counted
    max_upstream_connections: int = 100  # pooled connections to the upstream, at most
    header_timeout_seconds: float = 10.0  # as in ServerSettings, for the proxy's clients
    body_timeout_seconds: float = 30.0
    idle_timeout_seconds: float = 60.0
    max_connections: int = 1000
    id_header: str = "X-Request-Id"
    version_header: str = "X-Model-Version"
    model: str | None = None  # the model of /invocations and generic requests
    routes: dict[str, RouteSettings] = field(default_factory=dict)
    generic: GenericSettings | None = None

    @property
    def upstream_host_port(self) -> tuple[str, int]:
        return upstream_address(self.upstream)


@dataclass(frozen=True)
class Config:
    models: tuple[ModelConfig, ...]
    server: ServerSettings = field(default_factory=ServerSettings)
    proxy: ProxySettings | None = None
    limits: dict[str, int] = field(default_factory=lambda: dict(LIMIT_DEFAULTS))
    path: Path | None = None

    def model(self, name: str) -> ModelConfig | None:
        for m in self.models:
            if m.name == name:
                return m
        return None


_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """`90`, `90s`, `15m`, `1h`, `7d` -> seconds; raises ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 60s, 15m or 1h")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value <= 0:
            raise ValueError("must be a positive duration")
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value.strip())
        if m:
            seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
            if seconds > 0:
                return seconds
    raise ValueError(f"expected a duration such as 60s, 15m or 1h, got {value!r}")


class _Checker:
    """Collects errors with their paths instead of stopping at the first one."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def err(self, path: str, msg: str) -> None:
        self.errors.append(f"{path}: {msg}")

    def mapping(self, value: Any, path: str, allowed: set[str]) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.err(path, f"expected a mapping, got {type(value).__name__}")
            return {}
        for key in value:
            if key not in allowed:
                self.err(f"{path}.{key}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
        return value

    def number(
        self,
        value: Any,
        path: str,
        lo: float | None = None,
        hi: float | None = None,
        integer: bool = False,
    ) -> float | None:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and integer and not float(value).is_integer():
            ok = False
        if not ok or not math.isfinite(float(value)):
            self.err(path, f"expected {'an integer' if integer else 'a number'}, got {value!r}")
            return None
        if lo is not None and value < lo:
            self.err(path, f"must be >= {lo}, got {value}")
            return None
        if hi is not None and value > hi:
            self.err(path, f"must be <= {hi}, got {value}")
            return None
        return int(value) if integer else float(value)

    def choice(self, value: Any, path: str, choices: tuple[str, ...]) -> str | None:
        if value not in choices:
            self.err(path, f"must be one of {', '.join(choices)}, got {value!r}")
            return None
        return value

    def duration(self, value: Any, path: str) -> float | None:
        try:
            return parse_duration(value)
        except ValueError as e:
            self.err(path, str(e))
            return None


def label_text(value: Any) -> str:
    """Classes, categories and groups arrive as JSON strings, ints or booleans; they are
    compared as text (booleans as JSON spells them)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return value if type(value) is str else str(value)


def _features(c: _Checker, raw: Any, path: str) -> tuple[FeatureSpec, ...] | None:
    if raw is None:
        return None
    specs: list[FeatureSpec] = []
    if isinstance(raw, list):
        items: list[tuple[Any, Any]] = [(name, None) for name in raw]
    elif isinstance(raw, dict):
        items = list(raw.items())
    else:
        c.err(path, "expected a mapping of feature name to kind, or a list of names")
        return None
    if not items:
        c.err(path, "must name at least one feature")
    seen: set[str] = set()
    for name, spec in items:
        fpath = f"{path}.{name}"
        if not isinstance(name, str) or not NAME_RE.match(name):
            c.err(fpath, "feature names are 1-64 characters of letters, digits, _ . : -")
            continue
        if name in seen:
            c.err(fpath, "duplicate feature")
        seen.add(name)
        kind: str | None = None
        edges: tuple[float, ...] | None = None
        if isinstance(spec, str):
            kind = c.choice(spec, fpath, KINDS)
        elif isinstance(spec, dict):
            c.mapping(spec, fpath, {"kind", "edges"})
            if "kind" in spec:
                kind = c.choice(spec["kind"], f"{fpath}.kind", KINDS)
            if "edges" in spec:
                raw_edges = spec["edges"]
                if (
                    not isinstance(raw_edges, list)
                    or not raw_edges
                    or not all(
                        isinstance(e, int | float) and not isinstance(e, bool) and math.isfinite(e)
                        for e in raw_edges
                    )
                ):
                    c.err(f"{fpath}.edges", "expected a non-empty list of finite numbers")
                elif sorted(set(raw_edges)) != list(raw_edges):
                    c.err(f"{fpath}.edges", "edges must be strictly increasing")
                else:
                    edges = tuple(float(e) for e in raw_edges)
                    if kind == "categorical":
                        c.err(f"{fpath}.edges", "only numeric features have edges")
                    kind = kind or "numeric"
        elif spec is not None:
            c.err(fpath, "expected 'numeric', 'categorical', a mapping or nothing")
        specs.append(FeatureSpec(name=name, kind=kind, edges=edges))
    return tuple(specs)


def _window(c: _Checker, raw: Any, path: str, base: WindowSettings) -> WindowSettings:
    raw = c.mapping(raw, path, {"length", "slices"})
    length = base.length_seconds
    slices = base.slices
    if "length" in raw:
        length = c.duration(raw["length"], f"{path}.length") or length
    if "slices" in raw:
        slices = c.number(raw["slices"], f"{path}.slices", lo=1, hi=1440, integer=True) or slices
    return WindowSettings(length_seconds=length, slices=int(slices))


def _drift(c: _Checker, raw: Any, path: str, base: DriftSettings) -> DriftSettings:
    raw = c.mapping(raw, path, {"correction", "min_samples", "bins", "grid", "top_k", "ks_p_value"})
    out = base
    if "correction" in raw:
        corr = c.choice(raw["correction"], f"{path}.correction", CORRECTIONS)
        out = replace(out, correction=corr or out.correction)
    if "ks_p_value" in raw:
        method = c.choice(raw["ks_p_value"], f"{path}.ks_p_value", ("kolmogorov", "kstwo"))
        out = replace(out, ks_p_value=method or out.ks_p_value)
    for key, lo, hi in (
        ("min_samples", 1, 10**9),
        ("bins", 2, 100),
        ("grid", 10, 1000),
        ("top_k", 1, 1000),
    ):
        if key in raw:
            v = c.number(raw[key], f"{path}.{key}", lo=lo, hi=hi, integer=True)
            if v is not None:
                out = replace(out, **{key: int(v)})
    return out


def _thresholds(c: _Checker, raw: Any, path: str, base: dict[str, float]) -> dict[str, float]:
    raw = c.mapping(raw, path, set(THRESHOLDS))
    out = dict(base)
    for key, value in raw.items():
        if key in THRESHOLDS:
            v = c.number(value, f"{path}.{key}", lo=0)
            if v is not None:
                out[key] = v
    return out


def _model(
    c: _Checker,
    raw: Any,
    path: str,
    base_dir: Path,
    window: WindowSettings,
    drift: DriftSettings,
    thresholds: dict[str, float],
) -> ModelConfig | None:
    allowed = {
        "name",
        "task",
        "baseline",
        "features",
        "classes",
        "positive_class",
        "sensitive_attributes",
        "default_version",
        "window",
        "drift",
        "thresholds",
        "labels",
        "performance",
        "fairness",
    }
    if not isinstance(raw, dict):
        c.err(path, "expected a mapping")
        return None
    c.mapping(raw, path, allowed)
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        c.err(f"{path}.name", "required: 1-64 characters of letters, digits, _ . : -")
        name = None
    task = c.choice(raw.get("task"), f"{path}.task", TASKS)
    baseline = raw.get("baseline")
    if not isinstance(baseline, str) or not baseline:
        c.err(f"{path}.baseline", "required: the path of the baseline profile (JSON)")
        baseline = None
    features = _features(c, raw.get("features"), f"{path}.features")

    classes = None
    if "classes" in raw:
        rc = raw["classes"]
        if not isinstance(rc, list) or len(rc) < 2 or not all(isinstance(x, str | int) for x in rc):
            c.err(f"{path}.classes", "expected a list of at least two class names")
        else:
            classes = tuple(label_text(x) for x in rc)
            if len(set(classes)) != len(classes):
                c.err(f"{path}.classes", "classes must be distinct")
            if task == "regression":
                c.err(f"{path}.classes", "a regression model has no classes")
    positive = None
    if "positive_class" in raw:
        if task != "binary":
            c.err(f"{path}.positive_class", "only a binary model has a positive class")
        elif not isinstance(raw["positive_class"], str | int):
            c.err(f"{path}.positive_class", "expected a class name")
        else:
            positive = label_text(raw["positive_class"])
            if classes is not None and positive not in classes:
                c.err(f"{path}.positive_class", f"{positive!r} is not one of classes")
    if task == "binary" and classes is not None and len(classes) != 2:
        c.err(f"{path}.classes", "a binary model has exactly two classes")

    sensitive: tuple[str, ...] = ()
    if "sensitive_attributes" in raw:
        rs = raw["sensitive_attributes"]
        if not isinstance(rs, list) or not all(isinstance(x, str) and NAME_RE.match(x) for x in rs):
            c.err(f"{path}.sensitive_attributes", "expected a list of attribute names")
        else:
            sensitive = tuple(rs)
    default_version = raw.get("default_version", "unversioned")
    if not isinstance(default_version, str) or not NAME_RE.match(default_version):
        c.err(f"{path}.default_version", "expected a version name")
        default_version = "unversioned"

    win = _window(c, raw.get("window"), f"{path}.window", window)
    dr = _drift(c, raw.get("drift"), f"{path}.drift", drift)
    th = _thresholds(c, raw.get("thresholds"), f"{path}.thresholds", thresholds)
    labels, perf, fair = _label_settings(c, raw, path, sensitive)
    if name is None or task is None or baseline is None:
        return None
    return ModelConfig(
        name=name,
        task=task,
        baseline=(base_dir / baseline),
        features=features,
        classes=classes,
        positive_class=positive,
        sensitive_attributes=sensitive,
        default_version=default_version,
        window=win,
        drift=dr,
        thresholds=th,
        labels=labels,
        performance=perf,
        fairness=fair,
    )


def _label_settings(
    c: _Checker, raw: dict, path: str, sensitive: tuple[str, ...]
) -> tuple[LabelSettings, PerformanceSettings, FairnessSettings]:
    lr = c.mapping(raw.get("labels"), f"{path}.labels", {"max_entries", "ttl"})
    labels = LabelSettings()
    if "max_entries" in lr:
        v = c.number(lr["max_entries"], f"{path}.labels.max_entries", lo=1, hi=10**8, integer=True)
        labels = replace(labels, max_entries=int(v or labels.max_entries))
    if "ttl" in lr:
        ttl = c.duration(lr["ttl"], f"{path}.labels.ttl")
        labels = replace(labels, ttl_seconds=ttl or labels.ttl_seconds)
    pr = c.mapping(
        raw.get("performance"), f"{path}.performance", {"min_labels", "recalibrate", "champion"}
    )
    perf = PerformanceSettings()
    if "min_labels" in pr:
        v = c.number(pr["min_labels"], f"{path}.performance.min_labels", lo=1, integer=True)
        perf = replace(perf, min_labels=int(v or perf.min_labels))
    if "recalibrate" in pr:
        if not isinstance(pr["recalibrate"], bool):
            c.err(f"{path}.performance.recalibrate", "expected true or false")
        else:
            perf = replace(perf, recalibrate=pr["recalibrate"])
    if "champion" in pr:
        if not isinstance(pr["champion"], str) or not NAME_RE.match(pr["champion"]):
            c.err(f"{path}.performance.champion", "expected a version name")
        else:
            perf = replace(perf, champion=pr["champion"])
    fr = c.mapping(raw.get("fairness"), f"{path}.fairness", {"min_samples", "reference_groups"})
    fair = FairnessSettings()
    if "min_samples" in fr:
        v = c.number(fr["min_samples"], f"{path}.fairness.min_samples", lo=1, integer=True)
        fair = replace(fair, min_samples=int(v or fair.min_samples))
    if "reference_groups" in fr:
        rg = fr["reference_groups"]
        if not isinstance(rg, dict):
            c.err(f"{path}.fairness.reference_groups", "expected a mapping of attribute to group")
        else:
            for attr in rg:
                if attr not in sensitive:
                    c.err(
                        f"{path}.fairness.reference_groups.{attr}",
                        "not one of sensitive_attributes",
                    )
            fair = replace(fair, reference_groups={str(k): label_text(v) for k, v in rg.items()})
    return labels, perf, fair


def parse_config(doc: Any, base_dir: Path, source: str = "config") -> Config:
    """Validate a parsed YAML document; raise ConfigError listing every problem."""
    c = _Checker()
    root = c.mapping(doc, "$", {"models", "defaults", "server", "limits", "proxy"})
    if not isinstance(doc, dict):
        raise ConfigError(c.errors or ["$: expected a mapping with a 'models' list"], source)

    defaults = c.mapping(root.get("defaults"), "defaults", {"window", "drift", "thresholds"})
    window = _window(c, defaults.get("window"), "defaults.window", WindowSettings())
    drift = _drift(c, defaults.get("drift"), "defaults.drift", DriftSettings())
    thresholds = _thresholds(
        c,
        defaults.get("thresholds"),
        "defaults.thresholds",
        {k: v[0] for k, v in THRESHOLDS.items()},
    )

    server_raw = c.mapping(
        root.get("server"),
        "server",
        {
            "listen_address",
            "threads",
            "admin_token_file",
            "ingest_token_file",
            "metrics_token_file",
            "snapshot_dir",
            "snapshot_interval",
            *_TIMEOUT_KEYS,
            "max_connections",
        },
    )
    server = ServerSettings()
    if "listen_address" in server_raw:
        la = server_raw["listen_address"]
        try:
            split_address(la)
            server = replace(server, listen_address=la)
        except ValueError as e:
            c.err("server.listen_address", str(e))
    if "threads" in server_raw:
        t = c.number(server_raw["threads"], "server.threads", lo=1, hi=64, integer=True)
        if t is not None:
            server = replace(server, threads=int(t))
    if "snapshot_interval" in server_raw:
        iv = c.duration(server_raw["snapshot_interval"], "server.snapshot_interval")
        if iv is not None:
            server = replace(server, snapshot_interval_seconds=iv)
    server = replace(server, **_connection_limits(c, server_raw, "server"))
    for key in ("admin_token_file", "ingest_token_file", "metrics_token_file", "snapshot_dir"):
        if key in server_raw:
            if not isinstance(server_raw[key], str) or not server_raw[key]:
                c.err(f"server.{key}", "expected a file path")
            else:
                server = replace(server, **{key: base_dir / server_raw[key]})

    limits_raw = c.mapping(root.get("limits"), "limits", set(LIMIT_DEFAULTS))
    limits = dict(LIMIT_DEFAULTS)
    for key, value in limits_raw.items():
        if key in LIMIT_DEFAULTS:
            v = c.number(value, f"limits.{key}", lo=1, integer=True)
            if v is not None:
                limits[key] = int(v)

    models: list[ModelConfig] = []
    raw_models = root.get("models")
    if not isinstance(raw_models, list) or not raw_models:
        c.err("models", "required: a non-empty list of models")
        raw_models = []
    names: set[str] = set()
    for i, raw in enumerate(raw_models):
        m = _model(c, raw, f"models[{i}]", base_dir, window, drift, thresholds)
        if m is None:
            continue
        if m.name in names:
            c.err(f"models[{i}].name", f"duplicate model name {m.name!r}")
        names.add(m.name)
        models.append(m)
    proxy = _proxy(c, root["proxy"], models) if root.get("proxy") is not None else None
    if c.errors:
        raise ConfigError(c.errors, source)
    return Config(models=tuple(models), server=server, limits=limits, proxy=proxy)


def upstream_address(url: str) -> tuple[str, int]:
    m = re.match(r"^http://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::(\d{1,5}))?/?$", url or "")
    if not m:
        raise ValueError(f"expected http://HOST[:PORT] (plain HTTP, no path), got {url!r}")
    port = int(m.group(2) or 80)
    if not 0 < port <= 65535:
        raise ValueError(f"port out of range in {url!r}")
    return m.group(1).strip("[]"), port


_TIMEOUT_KEYS = ("header_timeout", "body_timeout", "idle_timeout")


def _connection_limits(c: _Checker, raw: dict, path: str) -> dict[str, Any]:
    """The timeouts and the connection cap of a server section (`server` or `proxy`)."""
    out: dict[str, Any] = {}
    for key in _TIMEOUT_KEYS:
        if key in raw:
            v = c.duration(raw[key], f"{path}.{key}")
            if v is not None:
                out[f"{key}_seconds"] = v
    if "max_connections" in raw:
        v = c.number(raw["max_connections"], f"{path}.max_connections", lo=16, hi=1_000_000,
                     integer=True)  # fmt: skip
        if v is not None:
            out["max_connections"] = int(v)
    return out


_DOTTED_RE = re.compile(r"^(request|response)(\.[^.]+)+$")
_HEADER_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")


def _proxy(c: _Checker, raw: Any, models: list[ModelConfig]) -> ProxySettings | None:
    raw = c.mapping(
        raw,
        "proxy",
        {
            "upstream",
            "listen_address",
            "timeout",
            "connect_timeout",
            "max_capture_bytes",
            "queue_size",
            "queue_bytes",
            "max_upstream_connections",
            *_TIMEOUT_KEYS,
            "max_connections",
            "id_header",
            "version_header",
            "model",
            "models",
            "generic",
        },
    )
    known = {m.name: m for m in models}
    upstream = raw.get("upstream")
    try:
        upstream_address(upstream)
    except ValueError as e:
        c.err("proxy.upstream", f"required: {e}")
        return None
    out = ProxySettings(upstream=str(upstream).rstrip("/"))
    if "listen_address" in raw:
        try:
            split_address(raw["listen_address"])
            out = replace(out, listen_address=raw["listen_address"])
        except ValueError as e:
            c.err("proxy.listen_address", str(e))
    for key, attr in (
        ("timeout", "timeout_seconds"),
        ("connect_timeout", "connect_timeout_seconds"),
    ):
        if key in raw:
            v = c.duration(raw[key], f"proxy.{key}")
            if v is not None:
                out = replace(out, **{attr: v})
    for key in ("max_capture_bytes", "queue_size", "queue_bytes", "max_upstream_connections"):
        if key in raw:
            v = c.number(raw[key], f"proxy.{key}", lo=1, hi=2**31, integer=True)
            if v is not None:
                out = replace(out, **{key: int(v)})
    out = replace(out, **_connection_limits(c, raw, "proxy"))
    for key in ("id_header", "version_header"):
        if key in raw:
            if not isinstance(raw[key], str) or not _HEADER_RE.match(raw[key]):
                c.err(f"proxy.{key}", "expected an HTTP header name")
            else:
                out = replace(out, **{key: raw[key]})
    model = raw.get("model")
    if model is None and len(models) == 1:
        model = models[0].name
    elif model is not None and model not in known:
        c.err("proxy.model", f"{model!r} is not a configured model")
        model = None
    out = replace(out, model=model)
    routes: dict[str, RouteSettings] = {}
    rm = raw.get("models")
    if rm is not None and not isinstance(rm, dict):
        c.err("proxy.models", "expected a mapping of upstream model name to settings")
        rm = {}
    for key, spec in (rm or {}).items():
        path = f"proxy.models.{key}"
        spec = c.mapping(spec, path, {"model", "inputs", "output", "scores"})
        target = spec.get("model", key)
        if target not in known:
            c.err(f"{path}.model", f"{target!r} is not a configured model")
            continue
        inputs = spec.get("inputs")
        if inputs is not None and (
            not isinstance(inputs, list)
            or not inputs
            or not all(i is None or (isinstance(i, str) and NAME_RE.match(i)) for i in inputs)
        ):
            c.err(f"{path}.inputs", "expected a list of feature names (null skips a position)")
            inputs = None
        for k in ("output", "scores"):
            if k in spec and not isinstance(spec[k], str | int):
                c.err(f"{path}.{k}", "expected an output name")
        routes[str(key)] = RouteSettings(
            model=target,
            inputs=tuple(inputs) if inputs is not None else None,
            output=str(spec["output"]) if "output" in spec else None,
            scores=str(spec["scores"]) if "scores" in spec else None,
        )
    out = replace(out, routes=routes)
    if raw.get("generic") is not None:
        g = c.mapping(
            raw["generic"], "proxy.generic", {"path", "features", "predictions", "scores", "ids"}
        )
        gp = g.get("path")
        if not isinstance(gp, str) or not gp.startswith("/"):
            c.err("proxy.generic.path", "required: the request path to capture, e.g. /predict")
        for k in ("features", "predictions", "scores", "ids"):
            v = g.get(k)
            required = k in ("features", "predictions")
            if v is None and not required:
                continue
            if not isinstance(v, str) or not _DOTTED_RE.match(v):
                c.err(
                    f"proxy.generic.{k}",
                    ("required: " if required else "")
                    + "a path such as request.instances or response.outputs.0",
                )
        if model is None:
            c.err("proxy.model", "required with generic: the model its events go to")
        if isinstance(gp, str) and all(
            isinstance(g.get(k), str) for k in ("features", "predictions")
        ):
            out = replace(
                out,
                generic=GenericSettings(
                    path=gp,
                    features=g["features"],
                    predictions=g["predictions"],
                    scores=g.get("scores"),
                    ids=g.get("ids"),
                ),
            )
    return out


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


def split_address(address: str) -> tuple[str, int]:
    """`HOST:PORT` or `[v6]:PORT` -> (host, port)."""
    if not isinstance(address, str) or ":" not in address:
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected a port number in {address!r}")
    return host or "127.0.0.1", int(port)
