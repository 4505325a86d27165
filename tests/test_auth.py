"""Bearer tokens and the admin endpoints, over real sockets to `mlmon serve`'s server (and to
the real process where tokens come from the environment)."""

from __future__ import annotations

import logging

import pytest
import yaml
from mlmon.core.config import ConfigError, load_config
from mlmon.demo import synthetic
from mlmon.http.auth import Tokens, fingerprint, load_tokens

URL = "/v1/models/credit-risk"
ADMIN, INGEST, METRICS = "admin-s3cret-token", "ingest-token", "metrics-token"


@pytest.fixture()
def secured(small_env, serve):
    return serve(small_env, tokens=Tokens(admin=ADMIN, ingest=INGEST, metrics=METRICS))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_threshold_change_moves_the_threshold_series(secured, caplog):
    _mon, registry, client = secured
    lab = {"model": "credit-risk"}
    assert registry.get_sample_value("mlmon_threshold_drift_ks_min", lab) == 0.1
    with caplog.at_level(logging.INFO, logger="mlmon.audit"):
        r = client.put(
            f"{URL}/thresholds",
            json={"drift_ks_min": 0.25, "error_ratio_max": 0.02},
            headers=bearer(ADMIN),
        )
    assert r.status_code == 200 and r.json["thresholds"]["drift_ks_min"] == 0.25
    assert registry.get_sample_value("mlmon_threshold_drift_ks_min", lab) == 0.25
    assert registry.get_sample_value("mlmon_threshold_error_ratio_max", lab) == 0.02
    line = caplog.records[-1].getMessage()
    assert "action=put_thresholds" in line and '"drift_ks_min": 0.1' in line
    assert '"drift_ks_min": 0.25' in line and fingerprint(ADMIN) in line
    assert ADMIN not in line


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Basic abc"}, 401),
        (bearer("wrong"), 403),
        (bearer(INGEST), 403),
    ],
)
def test_admin_needs_its_token(secured, headers, status):
    mon, _registry, client = secured
    r = client.put(f"{URL}/thresholds", json={"drift_ks_min": 0.9}, headers=headers)
    assert r.status_code == status and r.is_json
    if status == 401:
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert mon.models["credit-risk"].thresholds["drift_ks_min"] == 0.1


@pytest.mark.parametrize("body", [{"drift_ks_min": -1}, {"nope": 1}, {"drift_ks_min": "x"}, [], {}])
def test_invalid_thresholds_change_nothing(secured, body):
    mon, _, client = secured
    r = client.put(f"{URL}/thresholds", json=body, headers=bearer(ADMIN))
    assert r.status_code == 400 and r.json["details"]
    assert mon.models["credit-risk"].thresholds["drift_ks_min"] == 0.1


def test_admin_api_is_off_without_a_token(small_env, serve):
    _, _, client = serve(small_env, tokens=Tokens())
    r = client.put(f"{URL}/thresholds", json={"drift_ks_min": 0.2}, headers=bearer("anything"))
    assert r.status_code == 403 and "off" in r.json["error"]


def test_ingest_and_metrics_tokens(secured, small_env):
    _, registry, client = secured
    ev = synthetic.without_labels(synthetic.events(small_env.spec, 3, seed=1))
    assert client.post(f"{URL}/predictions", json={"events": ev}).status_code == 401
    assert (
        client.post(f"{URL}/predictions", json={"events": ev}, headers=bearer("x")).status_code
        == 403
    )
    assert (
        client.post(f"{URL}/predictions", json={"events": ev}, headers=bearer(INGEST)).status_code
        == 200
    )
    assert client.post(f"{URL}/labels", json={"id": "1", "label": 1}).status_code == 401
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=bearer(METRICS)).status_code == 200
    assert client.get("/healthz").status_code == 200  # health stays open
    # what /metrics shows, as JSON or HTML, needs the metrics token too
    for path in ("/v1/models", f"{URL}/stats", "/"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers=bearer("x")).status_code == 403, path
        assert client.get(path, headers=bearer(METRICS)).status_code == 200, path
    assert (
        registry.get_sample_value(
            "mlmon_ingest_rejected_requests_total",
            {"endpoint": "predictions", "reason": "unauthorized"},
        )
        == 1
    )


def test_tokens_come_from_the_environment_or_files(small_env, tmp_path, monkeypatch):
    doc = yaml.safe_load(small_env.config_path.read_text())
    doc["models"][0]["baseline"] = str(small_env.config.models[0].baseline)
    doc["server"] = {"admin_token_file": "admin.token", "metrics_token_file": "missing.token"}
    cfg = tmp_path / "c.yml"
    cfg.write_text(yaml.safe_dump(doc))
    (tmp_path / "admin.token").write_text("from-file\n")
    with pytest.raises(ConfigError, match=r"missing\.token"):
        load_tokens(load_config(cfg))
    monkeypatch.setenv("MLMON_METRICS_TOKEN", "from-env")
    monkeypatch.setenv("MLMON_INGEST_TOKEN", "ingest-env")
    t = load_tokens(load_config(cfg))
    assert (t.admin, t.ingest, t.metrics) == ("from-file", "ingest-env", "from-env")


def test_reload_keeps_unchanged_models_and_needs_the_token(small_env, tmp_path, serve):
    doc = yaml.safe_load(small_env.config_path.read_text())
    doc["models"][0]["baseline"] = str(small_env.config.models[0].baseline)
    cfg_path = tmp_path / "c.yml"
    cfg_path.write_text(yaml.safe_dump(doc))
    mon, registry, client = serve(load_config(cfg_path), tokens=Tokens(admin=ADMIN))
    ev = synthetic.without_labels(synthetic.events(small_env.spec, 50, seed=2, version="v1"))
    assert client.post(f"{URL}/predictions", json={"events": ev}).status_code == 200
    assert client.post("/-/reload").status_code == 401
    # new thresholds and a second model (the same baseline under another name)
    doc["models"][0]["thresholds"] = {"drift_ks_min": 0.3}
    doc["models"].append({**doc["models"][0], "name": "second"})
    cfg_path.write_text(yaml.safe_dump(doc))
    r = client.post("/-/reload", headers=bearer(ADMIN))
    assert r.status_code == 200
    assert r.json == {"kept": ["credit-risk"], "started": ["second"], "removed": []}
    assert (
        registry.get_sample_value(
            "mlmon_inference_requests_total", {"model": "credit-risk", "version": "v1"}
        )
        == 50
    )
    assert (
        registry.get_sample_value("mlmon_threshold_drift_ks_min", {"model": "credit-risk"}) == 0.3
    )
    assert (
        registry.get_sample_value(
            "mlmon_model_info",
            {
                "model": "second",
                "task": "binary",
                "baseline_hash": mon.models["second"].schema.baseline_hash,
            },
        )
        == 1
    )
    # a broken config changes nothing
    cfg_path.write_text("models: [")
    r = client.post("/-/reload", headers=bearer(ADMIN))
    assert r.status_code == 400 and set(mon.models) == {"credit-risk", "second"}
    # a changed schema starts that model clean; a removed one goes
    doc["models"] = [{**doc["models"][0], "features": {"age": "numeric"}}]
    cfg_path.write_text(yaml.safe_dump(doc))
    r = client.post("/-/reload", headers=bearer(ADMIN))
    assert r.json == {"kept": [], "started": ["credit-risk"], "removed": ["second"]}
    assert (
        registry.get_sample_value(
            "mlmon_inference_requests_total", {"model": "credit-risk", "version": "v1"}
        )
        is None
    )


def test_rebaseline_from_the_window_and_restore(small_env, tmp_path, serve):
    import shutil

    from mlmon.core.monitor import Monitor

    doc = yaml.safe_load(small_env.config_path.read_text())
    base = tmp_path / "baseline.json"
    shutil.copy(small_env.config.models[0].baseline, base)
    doc["models"][0]["baseline"] = str(base)
    doc["models"][0]["drift"] = {"min_samples": 100}
    cfg_path = tmp_path / "c.yml"
    cfg_path.write_text(yaml.safe_dump(doc))
    mon, registry, client = serve(load_config(cfg_path), tokens=Tokens(admin=ADMIN))
    ev = synthetic.without_labels(
        synthetic.events(small_env.spec, 2_000, seed=8, version="v1", shift={"age": 1.5})
    )
    assert client.post(f"{URL}/predictions", json={"events": ev}).status_code == 200
    lab = {"model": "credit-risk", "version": "v1", "feature": "age"}
    assert registry.get_sample_value("mlmon_feature_drifted", lab) == 1
    old_hash = mon.models["credit-risk"].schema.baseline_hash
    assert client.post(f"{URL}/baseline").status_code == 401
    r = client.post(f"{URL}/baseline", headers=bearer(ADMIN))
    assert r.status_code == 200 and r.json["before"] == old_hash and r.json["version"] == "v1"
    assert r.json["rows"] == 2_000 and (tmp_path / r.json["backup"]).exists()
    # the window is now the reference: no drift, and the exported baseline follows
    assert registry.get_sample_value("mlmon_feature_drifted", lab) == 0
    assert registry.get_sample_value("mlmon_feature_drift_score", {**lab, "method": "ks"}) == 0
    assert (
        registry.get_sample_value(
            "mlmon_feature_baseline_count", {"model": "credit-risk", "feature": "age"}
        )
        == 2_000
    )
    assert (
        registry.get_sample_value(
            "mlmon_inference_requests_total", {"model": "credit-risk", "version": "v1"}
        )
        == 2_000
    )
    # a restart reads the new profile
    assert (
        Monitor(load_config(cfg_path)).models["credit-risk"].schema.baseline_hash == r.json["after"]
    )
    r = client.post(f"{URL}/baseline/restore", headers=bearer(ADMIN))
    assert r.status_code == 200 and r.json["after"] == old_hash
    assert registry.get_sample_value("mlmon_feature_drifted", lab) == 1
    assert client.post(f"{URL}/baseline/restore", headers=bearer(ADMIN)).status_code == 409


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", f"{URL}/thresholds"),
        ("POST", "/-/reload"),
        ("POST", f"{URL}/baseline"),
        ("POST", f"{URL}/baseline/restore"),
    ],
)
@pytest.mark.parametrize(("headers", "status"), [({}, 401), (bearer("wrong"), 403)])
def test_every_admin_endpoint_needs_the_admin_token(secured, method, path, headers, status):
    mon, _, client = secured
    before = dict(mon.models["credit-risk"].thresholds)
    r = client.open(path, method=method, json={"drift_ks_min": 0.5}, headers=headers)
    assert r.status_code == status and r.is_json
    assert mon.models["credit-risk"].thresholds == before


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(secured, scheme):
    _, _, client = secured
    r = client.get("/metrics", headers={"Authorization": f"{scheme} {METRICS}"})
    assert r.status_code == 200
    r = client.get("/metrics", headers={"Authorization": f"{scheme}  "})
    assert r.status_code == 401


@pytest.mark.parametrize("blank", ["", " ", "\t\n  "])
def test_an_empty_token_is_a_start_up_error(small_env, tmp_path, monkeypatch, blank):
    """A blank token must never leave an endpoint open: from the environment or a file, it
    stops the exporter before it serves (here through the real `mlmon serve`)."""
    import subprocess
    import sys

    doc = yaml.safe_load(small_env.config_path.read_text())
    doc["models"][0]["baseline"] = str(small_env.config.models[0].baseline)
    doc["server"] = {"admin_token_file": "admin.token"}
    cfg = tmp_path / "c.yml"
    cfg.write_text(yaml.safe_dump(doc))
    (tmp_path / "admin.token").write_text(blank)
    with pytest.raises(ConfigError, match="empty"):
        load_tokens(load_config(cfg))
    (tmp_path / "admin.token").write_text("fine")
    monkeypatch.setenv("MLMON_INGEST_TOKEN", blank)
    with pytest.raises(ConfigError, match="MLMON_INGEST_TOKEN"):
        load_tokens(load_config(cfg))
    run = subprocess.run(
        [sys.executable, "-m", "mlmon", "serve", "--config", str(cfg),
         "--web.listen-address", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2 and "MLMON_INGEST_TOKEN" in run.stderr, run.stderr


def test_tokens_guard_the_real_process(small_env):
    """`mlmon serve` with tokens from the environment: refused without, served with."""
    from helpers import Exporter

    env = {"MLMON_INGEST_TOKEN": INGEST, "MLMON_METRICS_TOKEN": METRICS,
           "MLMON_ADMIN_TOKEN": ADMIN}  # fmt: skip
    exporter = Exporter(small_env.config_path, env=env)
    try:
        s = exporter.session
        ev = synthetic.without_labels(synthetic.events(small_env.spec, 3, seed=1))
        url = f"{exporter.url}{URL}/predictions"
        assert s.post(url, json={"events": ev}).status_code == 401
        assert s.post(url, json={"events": ev}, headers=bearer(METRICS)).status_code == 403
        assert s.post(url, json={"events": ev}, headers=bearer(INGEST)).status_code == 200
        assert s.get(exporter.url + "/metrics").status_code == 401
        assert s.get(exporter.url + "/v1/models").status_code == 401
        assert s.get(exporter.url + "/metrics", headers=bearer(METRICS)).status_code == 200
        th = f"{exporter.url}{URL}/thresholds"
        assert s.put(th, json={"drift_ks_min": 0.2}, headers=bearer(INGEST)).status_code == 403
        assert s.put(th, json={"drift_ks_min": 0.2}, headers=bearer(ADMIN)).status_code == 200
        assert s.get(exporter.url + "/healthz").status_code == 200
    finally:
        exporter.stop()
