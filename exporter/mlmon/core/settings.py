"""What a loaded configuration is: frozen settings the rest of the exporter reads. The YAML
document is validated in `document`; `config` turns it into these."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mlmon.core.catalog import DEFAULT_LISTEN, DEFAULT_PROXY_LISTEN, LIMIT_DEFAULTS
from mlmon.core.values import upstream_address


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    kind: str | None  # None: inferred from the baseline
    edges: tuple[float, ...] | None = None  # explicit histogram bucket edges (numeric only)
    dim: int | None = None  # embedding only: the numbers each event carries
    components: int | None = None  # embedding only: principal components monitored


@dataclass(frozen=True)
class WindowSettings:
    length_seconds: float = 3600.0
    slices: int = 60
    # an event's timestamp this far ahead of the exporter's clock is still "now" (clock
    # skew between hosts); further ahead it is clamped to now and counted
    future_tolerance_seconds: float = 60.0

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
    # multivariate drift: the share of the baseline's (encoded) variance the PCA keeps
    multivariate_variance: float = 0.65


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
class StoreSettings:
    """The Redis (or Valkey) store shared by a fleet of replicas: join records of
    predictions waiting for labels, and runtime thresholds. MLMON_STORE_URL overrides the
    url (and configures a store when the file has none)."""

    url: str  # redis://HOST:PORT[/DB] or rediss:// (TLS)
    password_file: Path | None = None  # the password, read at start (never in the url)
    ca_file: Path | None = None  # CA bundle for rediss:// (default: the system's)
    prefix: str = "mlmon"  # of every key, so environments can share one Redis
    timeout_seconds: float = 0.5  # per call, connect included
    queue_size: int = 100_000  # join records waiting to be written; beyond, dropped


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
    store: StoreSettings | None = None
    path: Path | None = None

    def model(self, name: str) -> ModelConfig | None:
        for m in self.models:
            if m.name == name:
                return m
        return None
