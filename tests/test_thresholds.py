"""Runtime thresholds: a PUT survives `kill -9` (with a snapshot dir) and `/-/reload`, a
DELETE puts the config's value back, both are audit-logged, bad calls change nothing.
Over real sockets to real `mlmon serve` processes; the values are checked in /metrics, the
series the alerts read, as well as in the API's answers."""

from __future__ import annotations

import json
import signal

import pytest
import yaml
from helpers import Exporter, parse_metrics
from mlmon.core import overrides
from mlmon.core.config import load_config
from mlmon.core.monitor import Monitor

MODEL = "credit-risk"
URL = f"/v1/models/{MODEL}/thresholds"
ADMIN = "admin-thresholds-token"
ENV = {"MLMON_ADMIN_TOKEN": ADMIN}
AUTH = {"Authorization": f"Bearer {ADMIN}"}


def _config(env, tmp_path, snapshots: bool, thresholds: dict | None = None):
    doc = yaml.safe_load(env.config_path.read_text())
    doc["models"][0]["baseline"] = str(env.config.models[0].baseline)
    doc["models"][0]["thresholds"] = thresholds or {"drift_ks_min": 0.1}
    if snapshots:
        # an hour: no periodic snapshot between the PUT and the kill
        doc["server"] = {"snapshot_dir": "snapshots", "snapshot_interval": "1h"}
    path = tmp_path / "mlmon.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _exported(exporter: Exporter, name: str) -> float:
    """The threshold gauge as Prometheus scrapes it."""
    samples = parse_metrics(exporter.get("/metrics").text)
    return samples[(f"mlmon_threshold_{name}", (("model", MODEL),))]


def _audit(exporter: Exporter) -> list[str]:
    return [ln for ln in exporter.log.read_text().splitlines() if " mlmon.audit: " in ln]


@pytest.mark.integration
def test_a_put_survives_kill_9_right_after_its_answer(small_env, tmp_path):
    cfg = _config(small_env, tmp_path, snapshots=True)
    exporter = Exporter(cfg, env=ENV)
    try:
        r = exporter.session.put(exporter.url + URL, json={"drift_ks_min": 0.25}, headers=AUTH)
        assert r.status_code == 200 and r.json()["persistence"] == "file"
        exporter.proc.send_signal(signal.SIGKILL)  # at once: no snapshot, no shutdown hook
        assert exporter.proc.wait(10) == -signal.SIGKILL
    finally:
        exporter.stop()
    restarted = Exporter(cfg, env=ENV)
    try:
        doc = restarted.get(URL).json()
        assert doc["sources"]["drift_ks_min"] == {"value": 0.25, "source": "runtime", "config": 0.1}
        assert doc["sources"]["drift_psi_min"]["source"] == "config"
        assert doc["overrides"] == {"drift_ks_min": 0.25}
        assert _exported(restarted, "drift_ks_min") == 0.25
        assert restarted.get(f"/v1/models/{MODEL}/stats").json()["threshold_overrides"] == {
            "drift_ks_min": 0.25
        }
    finally:
        restarted.stop()
    stored = json.loads((tmp_path / "snapshots" / overrides.FILE).read_text())
    assert stored["models"] == {MODEL: {"drift_ks_min": 0.25}}


@pytest.mark.integration
def test_reload_keeps_overrides_and_delete_restores_the_config(small_env, tmp_path):
    """Without a snapshot dir (overrides in memory): a reload that changes the config's
    value keeps the override; DELETE then applies the new config value, audit-logged."""
    cfg = _config(small_env, tmp_path, snapshots=False)
    exporter = Exporter(cfg, env=ENV)
    try:
        s, url = exporter.session, exporter.url + URL
        r = s.put(url, json={"drift_ks_min": 0.25, "error_ratio_max": 0.02}, headers=AUTH)
        assert r.status_code == 200 and r.json()["persistence"] == "memory"
        _config(small_env, tmp_path, False, {"drift_ks_min": 0.3, "drift_psi_min": 0.4})
        r = s.post(exporter.url + "/-/reload", headers=AUTH)
        assert r.status_code == 200 and r.json()["kept"] == [MODEL]
        sources = s.get(url).json()["sources"]
        assert sources["drift_ks_min"] == {"value": 0.25, "source": "runtime", "config": 0.3}
        assert sources["drift_psi_min"] == {"value": 0.4, "source": "config", "config": 0.4}
        assert _exported(exporter, "drift_ks_min") == 0.25
        assert _exported(exporter, "drift_psi_min") == 0.4

        r = s.delete(f"{url}/drift_ks_min", headers=AUTH)
        assert r.status_code == 200
        assert r.json()["sources"]["drift_ks_min"] == {
            "value": 0.3,
            "source": "config",
            "config": 0.3,
        }
        assert r.json()["overrides"] == {"error_ratio_max": 0.02}
        assert _exported(exporter, "drift_ks_min") == 0.3
        assert _exported(exporter, "error_ratio_max") == 0.02
        lines = _audit(exporter)
    finally:
        exporter.stop()
    put, reload, delete = lines
    assert "role=admin" in put and "action=put_thresholds" in put and f'"{MODEL}"' in put
    assert '"drift_ks_min": 0.1' in put and '"drift_ks_min": 0.25' in put
    assert "action=reload" in reload
    assert "role=admin" in delete and "action=delete_threshold" in delete
    assert f'model="{MODEL}"' in delete and 'threshold="drift_ks_min"' in delete
    assert "before=0.25" in delete and "after=0.3" in delete
    assert ADMIN not in "".join(lines)


# (method, path, body, headers, status, reason); all against a fresh exporter with no override
BAD = [
    ("PUT", "/v1/models/nope/thresholds", {"drift_ks_min": 0.2}, AUTH, 404, "unknown_model"),
    ("GET", "/v1/models/nope/thresholds", None, {}, 404, "unknown_model"),
    ("DELETE", "/v1/models/nope/thresholds/drift_ks_min", None, AUTH, 404, "unknown_model"),
    ("DELETE", f"{URL}/nope", None, AUTH, 400, "invalid_thresholds"),
    ("DELETE", f"{URL}/drift_ks_min", None, AUTH, 404, "no_override"),
    ("DELETE", f"{URL}/drift_ks_min", None, {}, 401, "unauthorized"),
    ("DELETE", f"{URL}/drift_ks_min", None, {"Authorization": "Bearer x"}, 403, "forbidden"),
    ("PUT", URL, {"drift_ks_min": 0.2}, {}, 401, "unauthorized"),
    ("PUT", URL, {"drift_ks_min": -1}, AUTH, 400, "invalid_thresholds"),
    ("PUT", URL, {"drift_ks_min": True}, AUTH, 400, "invalid_thresholds"),
    ("PUT", URL, {"drift_ks_min": "0.2"}, AUTH, 400, "invalid_thresholds"),
    ("PUT", URL, {"nope": 0.2, "drift_ks_min": 0.2}, AUTH, 400, "invalid_thresholds"),
    ("PUT", URL, {}, AUTH, 400, "invalid_thresholds"),
    ("PUT", URL, [0.2], AUTH, 400, "invalid_thresholds"),
]


@pytest.mark.integration
def test_bad_calls_are_refused_and_change_nothing(small_env, tmp_path):
    cfg = _config(small_env, tmp_path, snapshots=True)
    exporter = Exporter(cfg, env=ENV)
    try:
        for method, path, body, headers, status, reason in BAD:
            r = exporter.session.request(
                method, exporter.url + path, json=body, headers=headers, timeout=30
            )
            assert (r.status_code, r.json()["reason"]) == (status, reason), (method, path, body)
            if status in (400, 404):
                assert r.json()["details"], (method, path, body)
        doc = exporter.get(URL).json()
        assert doc["overrides"] == {} and doc["thresholds"]["drift_ks_min"] == 0.1
        assert _exported(exporter, "drift_ks_min") == 0.1
        assert _audit(exporter) == []
    finally:
        exporter.stop()
    assert not (tmp_path / "snapshots" / overrides.FILE).exists()


def test_an_unwritable_store_refuses_the_change(small_env, tmp_path):
    """The overrides are stored before they apply: when the file cannot be written, the
    model keeps its thresholds."""
    cfg = load_config(_config(small_env, tmp_path, snapshots=True))
    mon = Monitor(cfg)
    mon.put_thresholds(MODEL, {"drift_ks_min": 0.2})
    (tmp_path / "snapshots" / overrides.FILE).unlink()
    (tmp_path / "snapshots" / overrides.FILE).mkdir()  # os.replace onto a directory fails
    with pytest.raises(OSError):
        mon.put_thresholds(MODEL, {"drift_ks_min": 0.3})
    with pytest.raises(OSError):
        mon.delete_threshold(MODEL, "drift_ks_min")
    assert mon.models[MODEL].thresholds["drift_ks_min"] == 0.2
    assert mon.overrides == {MODEL: {"drift_ks_min": 0.2}}


def test_an_unreadable_file_falls_back_to_the_config(small_env, tmp_path, caplog):
    cfg = load_config(_config(small_env, tmp_path, snapshots=True))
    (tmp_path / "snapshots").mkdir()
    path = tmp_path / "snapshots" / overrides.FILE
    for text in ("{not json", '{"format": 1, "models": {"credit-risk": {"drift_ks_min": -1}}}'):
        path.write_text(text)
        with caplog.at_level("ERROR", logger="mlmon.overrides"):
            mon = Monitor(cfg)
        assert mon.models[MODEL].thresholds["drift_ks_min"] == 0.1
        assert "unreadable" in caplog.text
    # overrides of thresholds this version does not know are ignored, the rest apply
    path.write_text('{"format": 1, "models": {"credit-risk": {"gone": 1, "drift_ks_min": 0.4}}}')
    assert Monitor(cfg).models[MODEL].thresholds["drift_ks_min"] == 0.4
