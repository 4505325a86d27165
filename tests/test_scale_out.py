"""Past one Prometheus, with real processes on 127.0.0.1: three `mlmon serve` exporters of
one model (one fed baseline-like traffic, two fed traffic with some features shifted),
two shard Prometheus servers (prometheus/scale-out/remote-write/shard.yml) that scrape
different exporters and remote-write their raw series to a central Prometheus
(remote-write/central.yml, `--web.enable-remote-write-receiver`), a second central
Prometheus that pulls the same shards' /federate (federation/central.yml), and a single
Prometheus that scrapes every exporter. All three centrals run the repository's rules; the
fleet records of the scaled-out ones must equal the single one's.

What "equal" means here. Totals (`...:sum`) are sums of the latest counter values: once
the traffic stops they are exact integers, so they must be identical, and equal to the sum
of the exporters' own /metrics. Windowed records (`increase(...[1h])`, and the fleet KS
built from them) depend on when each Prometheus scraped and, centrally, on when each
series' samples arrived (remote write sends a scrape's series in parallel batches):
`increase` stretches each series' rise to the end of the window by up to 1.1 average
sample intervals, a factor in [1, 1 + delta] with delta = 1.1 / (samples - 1) that may
differ from series to series, and towards the start by at most the one warm-up event the
series began with. A live CDF value F = C / N (buckets over count) therefore lies in
[F / (1 + delta), F (1 + delta)] up to 2 I / N (I replicas, N events), and the KS within
delta + 2 I / N of the exact KS computed from the exporters' counters. With 0.5 s scrapes
and at least 60 samples in the window delta is below 0.02; each Prometheus must lie within
its bound of the exact KS, and the two within the sum of their bounds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import Env, Exporter, parse_metrics, require_binary, wait_until
from mlmon.demo import stack, synthetic

ROOT = Path(__file__).resolve().parent.parent
SCALE_OUT = ROOT / "prometheus/scale-out"
MODEL = "credit-risk"
VERSION = "v1"
SHIFTED = ("x01", "x04", "x07", "x10", "x13")
# (events, shift in standard deviations of the SHIFTED features, seed), one per exporter
TRAFFIC = ((2000, 0.0, 11), (1000, 1.0, 12), (1500, 1.0, 13))
# which exporters each shard scrapes: the fleet is only whole when both reach the centre
SHARDS = {"shard-a": (0, 1), "shard-b": (2,)}
# Scrapes every 0.5 s, rules every second; the window must hold MIN_SAMPLES samples of
# every replica before the windowed records are compared (see delta above).
SCRAPE = "500ms"
MIN_SAMPLES = 60
NUMERIC = 18  # wide_spec: 18 numeric and 2 categorical features
TOTALS = (
    ("model_version:mlmon_inference_requests_total:sum", "mlmon_inference_requests_total"),
    ("model_version_feature_le:mlmon_feature_value_bucket:sum", "mlmon_feature_value_bucket"),
    (
        "model_version_feature_category:mlmon_feature_category_total:sum",
        "mlmon_feature_category_total",
    ),
    ("model_version_class:mlmon_prediction_class_total:sum", "mlmon_prediction_class_total"),
)
KS = "model_version_feature:mlmon_feature_drift_ks:increase1h"
COUNT = "model_version_feature:mlmon_feature_value_count:increase1h"

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Fleet:
    exporters: list[Exporter]
    single: stack.Server
    centrals: dict[str, stack.Server]
    warm: list[Samples] = field(default_factory=list)  # each exporter after its warm-up
    end: list[Samples] = field(default_factory=list)  # ... and after its traffic

    def prometheus(self, topology: str) -> stack.Server:
        return self.single if topology == "single" else self.centrals[topology]


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _shard_config(name: str, targets: list[str], central: str) -> dict:
    """The shipped shard config, with loopback targets, the test's central store and 1 s
    scrapes and sends."""
    cfg = _load(SCALE_OUT / "remote-write/shard.yml")
    cfg["global"].update(scrape_interval=SCRAPE, evaluation_interval="1s")
    cfg["global"]["external_labels"]["shard"] = name
    cfg["scrape_configs"][0]["static_configs"] = [{"targets": targets}]
    cfg["remote_write"][0]["url"] = f"{central}/api/v1/write"
    cfg["remote_write"][0]["queue_config"]["batch_send_deadline"] = "1s"
    return cfg


def _central_config(rules: list[Path]) -> dict:
    cfg = _load(SCALE_OUT / "remote-write/central.yml")
    cfg["global"]["evaluation_interval"] = "1s"
    cfg["rule_files"] = [str(p) for p in rules]
    del cfg["alerting"]
    cfg["scrape_configs"] = []
    return cfg


def _federation_config(rules: list[Path], shards: list[str]) -> dict:
    cfg = _load(SCALE_OUT / "federation/central.yml")
    cfg["global"].update(scrape_interval=SCRAPE, evaluation_interval="1s")
    cfg["rule_files"] = [str(p) for p in rules]
    del cfg["alerting"]
    federate = cfg["scrape_configs"][0]
    federate["static_configs"] = [{"targets": [s.removeprefix("http://") for s in shards]}]
    cfg["scrape_configs"] = [federate]
    return cfg


def _start_servers(exporters: list[Exporter], tmp: Path, servers: list[stack.Server]) -> Fleet:
    rules = stack.overlay_rules(ROOT / "prometheus/rules", tmp / "rules")
    targets = [f"127.0.0.1:{e.port}" for e in exporters]
    central = stack.start_prometheus(
        _central_config(rules), tmp / "central", extra_args=("--web.enable-remote-write-receiver",)
    )
    servers.append(central)
    for name, members in SHARDS.items():
        cfg = _shard_config(name, [targets[i] for i in members], central.url)
        servers.append(stack.start_prometheus(cfg, tmp / name))
    federated = stack.start_prometheus(
        _federation_config(rules, [s.url for s in servers[1:]]), tmp / "federated"
    )
    servers.append(federated)
    single = stack.start_prometheus(
        {
            **stack.prometheus_config({"mlmon": targets}, rules, None),
            "global": {"scrape_interval": SCRAPE, "evaluation_interval": "1s"},
        },
        tmp / "single",
    )
    servers.append(single)
    return Fleet(exporters, single, {"remote-write": central, "federation": federated})


def _traffic(env: Env) -> list[list[dict]]:
    shift = dict.fromkeys(SHIFTED, 1.0)
    return [
        synthetic.without_labels(
            synthetic.events(
                env.spec,
                n + 1,
                seed=seed,
                shift={k: v * s for k, v in shift.items()},
                version=VERSION,
            )
        )
        for n, s, seed in TRAFFIC
    ]


def _query(server: stack.Server, promql: str) -> list[dict]:
    return stack.query(server.url, promql)


def _all(fleet: Fleet) -> list[stack.Server]:
    return [fleet.single, *fleet.centrals.values()]


def _feed(fleet: Fleet, streams: list[list[dict]]) -> None:
    # One event each first, so that every series exists (and has been scraped) before the
    # traffic: increase() counts only what arrives after a series' first sample.
    for exp, stream in zip(fleet.exporters, streams, strict=True):
        assert exp.post(MODEL, stream[:1]).status_code == 200
    for server in _all(fleet):
        wait_until(
            lambda s=server: len(_query(s, "mlmon_inference_requests_total")) == 3,
            40,
            f"{server.url} to hold all three exporters' series",
        )
    time.sleep(2)
    fleet.warm = [parse_metrics(e.get("/metrics").text) for e in fleet.exporters]
    for exp, stream in zip(fleet.exporters, streams, strict=True):
        for i in range(1, len(stream), 500):
            assert exp.post(MODEL, stream[i : i + 500]).status_code == 200
    fleet.end = [parse_metrics(e.get("/metrics").text) for e in fleet.exporters]


def _settle(fleet: Fleet) -> None:
    """Wait until every Prometheus has recorded the whole traffic, totals and windows."""
    total = sum(n + 1 for n, _, _ in TRAFFIC)
    stream = sum(n for n, _, _ in TRAFFIC)
    for server in _all(fleet):
        for what, promql, n in (
            ("requests", f"{TOTALS[0][0]} == {total}", 1),
            ("values", f'{TOTALS[1][0]}{{le="+Inf"}} == {total}', NUMERIC),
            ("windows", f"{COUNT} >= {stream}", NUMERIC),
        ):
            wait_until(
                lambda q=promql, k=n, s=server: len(_query(s, q)) == k,
                40,
                f"{server.url} to record the whole traffic ({what})",
            )
        wait_until(
            lambda s=server: _fewest_samples(s) >= MIN_SAMPLES,
            60,
            f"{server.url} to hold {MIN_SAMPLES} samples of every replica",
        )
    time.sleep(2)  # one more evaluation of every group over the settled window


@pytest.fixture(scope="module")
def fleet(wide_env: Env, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    require_binary("prometheus")
    tmp = tmp_path_factory.mktemp("scale-out")
    exporters: list[Exporter] = []
    servers: list[stack.Server] = []
    try:
        exporters += [Exporter(wide_env.config_path) for _ in TRAFFIC]
        fl = _start_servers(exporters, tmp, servers)
        _feed(fl, _traffic(wide_env))
        _settle(fl)
        yield fl
    finally:
        for s in servers:
            s.stop()
        for e in exporters:
            e.stop()


def _series(server: stack.Server, promql: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for s in _query(server, promql):
        labels = tuple(sorted((k, v) for k, v in s["metric"].items() if k != "__name__"))
        out[labels] = float(s["value"][1])
    return out


def _exporter_sum(samples: list[Samples], family: str) -> dict[tuple, float]:
    """The fleet total of a family from the exporters' own counters: labels as the rules
    leave them (plus job), `le` as Prometheus 2 writes it."""
    out: dict[tuple, float] = {}
    for sample in samples:
        for (name, labels), v in sample.items():
            if name == family:
                key = tuple(sorted((*labels, ("job", "mlmon"))))
                out[key] = out.get(key, 0.0) + v
    return out


@pytest.mark.parametrize("topology", ["remote-write", "federation"])
def test_central_store_holds_the_series_one_prometheus_would(fleet: Fleet, topology: str):
    # no shard label, the same job/instance/model/version labels as a direct scrape
    raw = "mlmon_inference_requests_total"
    central = _series(fleet.prometheus(topology), raw)
    assert central.keys() == _series(fleet.single, raw).keys()
    assert len(central) == 3
    assert not any(k == "shard" for labels in central for k, _ in labels)


@pytest.mark.parametrize("topology", ["remote-write", "federation"])
def test_fleet_totals_equal_the_single_prometheus_and_the_exporters(fleet: Fleet, topology: str):
    checked = 0
    for record, family in TOTALS:
        central = _series(fleet.prometheus(topology), record)
        single = _series(fleet.single, record)
        assert central == single, record
        expected = _exporter_sum(fleet.end, family)
        assert {_numeric_le(k): v for k, v in central.items()} == {
            _numeric_le(k): v for k, v in expected.items()
        }, record
        checked += len(central)
    assert checked > 3 * NUMERIC  # buckets of every feature, categories, classes
    for record in (
        "model:mlmon_drift_min_samples:max",
        "model:mlmon_threshold_drift_ks_min:max",
        "model_version:mlmon_drifted_features:ratio_increase1h",
        "model_version_feature:mlmon_feature_drifted:increase1h",
    ):
        central = _series(fleet.prometheus(topology), record)
        assert central and central == _series(fleet.single, record), record
    ratio = _series(
        fleet.prometheus(topology), "model_version:mlmon_drifted_features:ratio_increase1h"
    )
    assert list(ratio.values()) == [len(SHIFTED) / 20]


def _numeric_le(labels: tuple) -> tuple:
    return tuple((k, float(v)) if k == "le" else (k, v) for k, v in labels)


@pytest.mark.parametrize("topology", ["remote-write", "federation"])
def test_fleet_drift_equals_the_single_prometheus_within_the_extrapolation_bound(
    fleet: Fleet, topology: str
):
    central, single = fleet.prometheus(topology), fleet.single
    ks = {name: _by_feature(_series(s, KS)) for name, s in (("c", central), ("s", single))}
    delta = {name: _extrapolation(s) for name, s in (("c", central), ("s", single))}
    assert len(ks["c"]) == NUMERIC and ks["c"].keys() == ks["s"].keys()
    for feature in ks["c"]:
        exact, slack = _reference(fleet, feature)
        bound = {name: delta[name] + slack for name in delta}
        for name in ("c", "s"):
            assert abs(ks[name][feature] - exact) <= bound[name], (
                feature,
                name,
                exact,
                bound,
                _diagnose(central if name == "c" else single, feature),
            )
        gap = abs(ks["c"][feature] - ks["s"][feature])
        assert gap <= bound["c"] + bound["s"], (feature, ks["c"][feature], ks["s"][feature])
        # the drift itself: shifted features well above the 0.1 floor, the others well below
        assert (exact > 0.15) if feature in SHIFTED else (exact < 0.08), (feature, exact)
    # the counts the KS divides by: extrapolated up by no more than the bound says
    n = sum(n for n, _, _ in TRAFFIC)
    for name, server in (("c", central), ("s", single)):
        for count in _series(server, COUNT).values():
            assert n <= count <= n * (1 + delta[name]) + 2 * len(TRAFFIC), (name, count)


def _by_feature(series: dict[tuple, float]) -> dict[str, float]:
    return {dict(labels)["feature"]: v for labels, v in series.items()}


def _fewest_samples(server: stack.Server) -> float:
    counts = _series(server, "count_over_time(mlmon_inference_requests_total[1h])")
    assert len(counts) == 3
    return min(counts.values())


def _extrapolation(server: stack.Server) -> float:
    """delta = 1.1 / (samples - 1) of the replica with the fewest samples in the window;
    the recorded value may be a few samples older than this query."""
    return 1.1 / (_fewest_samples(server) - 1 - 4)


def _reference(fleet: Fleet, feature: str) -> tuple[float, float]:
    """The exact fleet KS of ``feature`` over the traffic (the exporters' counters after it,
    minus after the warm-up) and the warm-up slack 2 I / N."""
    live = [
        _cumulative(end, feature, "mlmon_feature_value_bucket")
        - _cumulative(warm, feature, "mlmon_feature_value_bucket")
        for warm, end in zip(fleet.warm, fleet.end, strict=True)
    ]
    base = _cumulative(fleet.end[0], feature, "mlmon_feature_baseline_bucket")
    fleet_cdf = sum(live) / sum(c[-1] for c in live)
    exact = float(np.abs(fleet_cdf - base / base[-1]).max())
    return exact, 2 * len(live) / sum(c[-1] for c in live)


def _cumulative(samples: Samples, feature: str, family: str) -> np.ndarray:
    by_le = {
        float(dict(labels)["le"]): v
        for (name, labels), v in samples.items()
        if name == family and dict(labels).get("feature") == feature
    }
    return np.array([by_le[le] for le in sorted(by_le)])


def _diagnose(server: stack.Server, feature: str) -> str:
    out = []
    for q in (
        f'count_over_time(mlmon_feature_value_bucket{{feature="{feature}",le="+Inf"}}[1h])',
        f'mlmon_feature_value_bucket{{feature="{feature}",le="+Inf"}}[1h]',
        f'model_version_feature_le:mlmon_feature_value_cdf:ratio_increase1h{{feature="{feature}"}}',
    ):
        out.append(q)
        for r in _query(server, q):
            vals = r.get("value") or [(round(t, 1), v) for t, v in r["values"]]
            out.append(f"  {r['metric'].get('instance', r['metric'].get('le'))} {vals}")
    return "\n".join(out)
