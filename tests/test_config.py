from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlmon.core.config import THRESHOLDS, ConfigError, load_config, parse_config, parse_duration

ROOT = Path(__file__).resolve().parent.parent


def test_minimal_form_is_accepted(tmp_path):
    doc = yaml.safe_load("""
models:
  - name: credit-risk
    task: binary
    positive_class: 1
    baseline: baselines/credit-risk.json
    features: {age: numeric, income: numeric, country: categorical}
""")
    cfg = parse_config(doc, tmp_path)
    m = cfg.model("credit-risk")
    assert m is not None
    assert m.task == "binary" and m.positive_class == "1"
    assert [(f.name, f.kind) for f in m.features] == [
        ("age", "numeric"),
        ("income", "numeric"),
        ("country", "categorical"),
    ]
    assert m.baseline == tmp_path / "baselines/credit-risk.json"
    assert m.window.length_seconds == 3600 and m.window.slices == 60
    assert m.drift.correction == "benjamini-hochberg"
    assert m.thresholds == {k: v[0] for k, v in THRESHOLDS.items()}
    assert cfg.server.listen_address.startswith("127.0.0.1:")


def test_every_error_is_reported_with_its_path(tmp_path):
    doc = yaml.safe_load("""
defaults:
  window: {length: forever}
models:
  - name: a
    task: binary
    positive_class: 3
    classes: [0, 1]
    baseline: a.json
    features: {age: number, "bad name!": numeric}
    drift: {correction: holm, min_samples: -1}
    thresholds: {drift_alpha: high, unknown_threshold: 1}
  - name: a
    task: clustering
  - task: regression
    baseline: b.json
    features: [x]
    extra: 1
limits: {max_body_bytes: 0}
""")
    with pytest.raises(ConfigError) as ei:
        parse_config(doc, tmp_path)
    errors = "\n".join(ei.value.errors)
    for expected in [
        "defaults.window.length:",
        "models[0].positive_class: '3' is not one of classes",
        "models[0].features.age: must be one of numeric, categorical",
        "models[0].features.bad name!:",
        "models[0].drift.correction:",
        "models[0].drift.min_samples: must be >= 1",
        "models[0].thresholds.drift_alpha: expected a number",
        "models[0].thresholds.unknown_threshold: unknown key",
        "models[1].task: must be one of binary, multiclass, regression",
        "models[1].baseline: required",
        "models[2].name: required",
        "models[2].extra: unknown key",
        "limits.max_body_bytes: must be >= 1",
    ]:
        assert expected in errors, f"missing {expected!r} in:\n{errors}"
    assert len(ei.value.errors) >= 13


def test_duplicate_model_names_are_refused(tmp_path):
    doc = {"models": [{"name": "m", "task": "regression", "baseline": "x.json"}] * 2}
    with pytest.raises(ConfigError, match=r"models\[1\].name: duplicate model name"):
        parse_config(doc, tmp_path)


def test_features_may_omit_kinds_and_carry_edges(tmp_path):
    doc = {
        "models": [
            {
                "name": "m",
                "task": "regression",
                "baseline": "x.json",
                "features": {"a": None, "b": {"edges": [-1, 0, 2.5]}},
            }
        ]
    }
    m = parse_config(doc, tmp_path).models[0]
    assert m.features[0].kind is None
    assert m.features[1].kind == "numeric" and m.features[1].edges == (-1.0, 0.0, 2.5)
    doc["models"][0]["features"]["b"]["edges"] = [3, 1]
    with pytest.raises(ConfigError, match="strictly increasing"):
        parse_config(doc, tmp_path)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), (90, 90), ("15m", 900), ("1h", 3600), ("7d", 604800), ("250ms", 0.25)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["0s", "-5", "1w", True, "", None])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yml")
    p = tmp_path / "bad.yml"
    p.write_text("models: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_example_config_loads_with_its_baselines():
    from mlmon.core.monitor import Monitor

    cfg = load_config(ROOT / "examples" / "mlmon.yml")
    mon = Monitor(cfg)
    assert set(mon.models) == {m.name for m in cfg.models}


def test_server_and_proxy_mistakes_are_reported_together(tmp_path):
    doc = yaml.safe_load("""
models:
  - {name: m, task: binary, baseline: x.json}
  - {name: n, task: regression, baseline: y.json, positive_class: 1}
server: {listen_address: nope, threads: 100, snapshot_interval: 1w, admin_token_file: "",
         max_connections: 3, port: 1}
proxy:
  upstream: https://model:8080
  version_header: "bad header"
  model: zz
  models: {q: {model: nope}, r: 5}
  generic: {path: predict, features: x}
""")
    with pytest.raises(ConfigError) as ei:
        parse_config(doc, tmp_path)
    errors = "\n".join(ei.value.errors)
    for expected in [
        "models[1].positive_class: only a binary model has a positive class",
        "server.listen_address: expected HOST:PORT, got 'nope'",
        "server.threads: must be <= 64, got 100",
        "server.snapshot_interval: expected a duration such as 60s, 15m or 1h, got '1w'",
        "server.admin_token_file: expected a file path",
        "server.max_connections: must be >= 16, got 3",
        "server.port: unknown key (allowed: admin_token_file, body_timeout, header_timeout,",
        "proxy.upstream: expected http://HOST[:PORT] (plain HTTP, no path), got 'https://model:8080'",
        "proxy.version_header: expected an HTTP header name",
        "proxy.model: 'zz' is not a configured model",
        "proxy.models.q.model: 'nope' is not a configured model",
        "proxy.models.r: expected a mapping, got 5",
        "proxy.generic.path: required: the request path to capture, e.g. /predict",
        "proxy.generic.features: required: a path such as request.instances",
        "proxy.generic.predictions: required: a path such as request.instances",
    ]:
        assert expected in errors, f"missing {expected!r} in:\n{errors}"
    assert len(ei.value.errors) == 15, errors


def test_a_full_config_builds_the_settings_it_says(tmp_path):
    doc = yaml.safe_load("""
defaults: {thresholds: {accuracy_min: 0.9}, drift: {top_k: 7}, window: {length: 2h}}
models:
  - name: m
    task: multiclass
    baseline: x.json
    features: [a, b]
    classes: [x, y, 3]
    window: {slices: 120}
    drift: {bins: 20, ks_p_value: kstwo}
    labels: {ttl: 1d}
    fairness: {reference_groups: {}}
server: {listen_address: "0.0.0.0:1", snapshot_dir: snaps, ingest_token_file: t,
         snapshot_interval: 5m, idle_timeout: 5s, max_connections: 100}
limits: {max_batch_events: 5}
proxy:
  upstream: http://127.0.0.1:8080/
  timeout: 5s
  models: {iris: {model: m, inputs: [a, null], output: 0}, m: }
  generic: {path: /p, features: request.x, predictions: response.y}
""")
    cfg = parse_config(doc, tmp_path)
    m = cfg.models[0]
    assert [f.name for f in m.features] == ["a", "b"] and m.classes == ("x", "y", "3")
    assert (m.window.length_seconds, m.window.slices) == (7200, 120)
    assert (m.drift.top_k, m.drift.bins, m.drift.ks_p_value) == (7, 20, "kstwo")
    assert m.thresholds["accuracy_min"] == 0.9 and m.labels.ttl_seconds == 86400
    assert cfg.server.snapshot_dir == tmp_path / "snaps"
    assert cfg.server.ingest_token_file == tmp_path / "t" and cfg.server.admin_token_file is None
    assert (cfg.server.snapshot_interval_seconds, cfg.server.idle_timeout_seconds) == (300, 5)
    assert cfg.limits["max_batch_events"] == 5 and cfg.limits["max_groups"] == 20
    p = cfg.proxy
    assert p.upstream == "http://127.0.0.1:8080" and p.timeout_seconds == 5 and p.model == "m"
    assert p.routes["iris"].inputs == ("a", None) and p.routes["iris"].output == "0"
    assert p.routes["m"].model == "m" and p.generic.predictions == "response.y"


def test_the_store_section_and_its_environment_override(tmp_path):
    from mlmon.core.fleet import store_settings

    doc = yaml.safe_load("""
models: [{name: m, task: binary, baseline: x.json}]
store: {url: "rediss://redis.monitoring:6380/2", password_file: secrets/redis,
        ca_file: ca.pem, prefix: "prod:eu", timeout: 250ms, queue_size: 5000}
""")
    store = parse_config(doc, tmp_path).store
    assert store.url == "rediss://redis.monitoring:6380/2"
    assert (store.password_file, store.ca_file) == (tmp_path / "secrets/redis", tmp_path / "ca.pem")
    assert (store.prefix, store.timeout_seconds, store.queue_size) == ("prod:eu", 0.25, 5000)
    env = {"MLMON_STORE_URL": "redis://127.0.0.1:6379/0"}
    assert store_settings(store, env).url == "redis://127.0.0.1:6379/0"
    assert store_settings(store, env).password_file == store.password_file
    assert store_settings(None, env).url == "redis://127.0.0.1:6379/0"
    assert store_settings(None, {}) is None and store_settings(store, {}) is store
    assert parse_config({"models": doc["models"]}, tmp_path).store is None

    bad = yaml.safe_load("""
models: [{name: m, task: binary, baseline: x.json}]
store: {url: "http://redis:6379", prefix: "a b", timeout: 1w, queue_size: 10, user: x}
""")
    with pytest.raises(ConfigError) as ei:
        parse_config(bad, tmp_path)
    errors = "\n".join(ei.value.errors)
    assert "http://redis" not in errors
    for expected in [
        # never echoed: a url may hold a password
        "store.url: expected redis://HOST:PORT[/DB] or rediss://HOST:PORT[/DB]",
        "store.prefix: expected 1 to 64 letters, digits or _ . : -",
        "store.timeout: expected a duration such as 60s, 15m or 1h, got '1w'",
        "store.queue_size: must be >= 1000, got 10",
        "store.user: unknown key (allowed: ca_file, password_file, prefix, queue_size,",
    ]:
        assert expected in errors, f"missing {expected!r} in:\n{errors}"
    missing = yaml.safe_load("{models: [{name: m, task: binary, baseline: x.json}], store: {}}")
    with pytest.raises(ConfigError) as ei:
        parse_config(missing, tmp_path)
    assert "store.url: required: expected redis://HOST:PORT[/DB]" in "\n".join(ei.value.errors)


def test_a_model_name_that_is_not_a_string_is_a_config_error(tmp_path):
    """Found by the config fuzz test: a list as a model's name raised TypeError (a set of
    names was fed an unhashable value) instead of a ConfigError."""
    for bad in ([], {}, [1, 2]):
        with pytest.raises(ConfigError) as ei:
            parse_config(
                {"models": [{"name": bad, "task": "binary", "baseline": "x.json"}]}, tmp_path
            )
        assert any(e.startswith("models[0].name:") for e in ei.value.errors), ei.value.errors
