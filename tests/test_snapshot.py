"""Restart without amnesia: snapshots written atomically and read back; a corrupt or
incompatible one is reported and the exporter starts clean; kill -9 and SIGTERM with real
processes."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import yaml
from helpers import Exporter, parse_metrics, wait_until
from mlmon.core.config import load_config
from mlmon.core.monitor import Monitor
from mlmon.demo import synthetic

MODEL = "credit-risk"


def _config(env, tmp_path, interval: str = "1s"):
    doc = yaml.safe_load(env.config_path.read_text())
    doc["models"][0]["baseline"] = str(env.config.models[0].baseline)
    doc["models"][0]["sensitive_attributes"] = ["gender"]
    doc["server"] = {"snapshot_dir": "snapshots", "snapshot_interval": interval}
    path = tmp_path / "mlmon.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _traffic(env, mon, n: int, seed: int) -> list[dict]:
    rows = synthetic.events(env.spec, n, seed=seed, version="v1", id_prefix=f"s{seed}-")
    for i, r in enumerate(rows):
        r["groups"] = {"gender": "f" if i % 2 else "m"}
    mon.models[MODEL].ingest(synthetic.without_labels(rows))
    return rows


def test_state_survives_a_restart(small_env, tmp_path):
    cfg = load_config(_config(small_env, tmp_path))
    mon = Monitor(cfg)
    rows = _traffic(small_env, mon, 500, 1)
    mon.models[MODEL].ingest_labels([{"id": r["id"], "label": r["label"]} for r in rows[:200]])
    assert mon.write_snapshots()
    again = Monitor(cfg)
    assert again.snapshot_restores == {"restored": 1}
    a, b = mon.models[MODEL], again.models[MODEL]
    for name, vs in a.state.versions.items():
        for key in ("ring", "window", "fring", "fwindow"):
            assert np.array_equal(getattr(vs, key), getattr(b.state.versions[name], key)), key
        # the counters start again from 0, which Prometheus recognises as a reset
        restored = b.state.versions[name]
        assert not restored.total.any() and not restored.ftotal.any() and vs.total.any()
    assert not b.labels.outcomes or not any(b.labels.outcomes.values())
    assert len(b.labels) == 500 and b.group_names == a.group_names
    # the restored store still joins: the 300 unlabelled predictions get their labels
    out, _ = b.ingest_labels([{"id": r["id"], "label": r["label"]} for r in rows])
    assert out == {"duplicate": 200, "matched": 300}
    assert (
        a.stats()["versions"]["v1"]["features"]
        == Monitor(cfg).models[MODEL].stats()["versions"]["v1"]["features"]
    )


def test_corrupt_and_incompatible_snapshots_start_clean(small_env, tmp_path):
    cfg = load_config(_config(small_env, tmp_path))
    mon = Monitor(cfg)
    _traffic(small_env, mon, 100, 2)
    mon.write_snapshots()
    path = tmp_path / "snapshots" / f"{MODEL}.snapshot.npz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    broken = Monitor(cfg)
    assert broken.snapshot_restores == {"corrupt": 1}
    assert broken.models[MODEL].state.versions == {}
    path.write_bytes(b"not a snapshot at all")
    assert Monitor(cfg).snapshot_restores == {"corrupt": 1}
    # a snapshot of another schema (here: no sensitive attribute) is not forced in
    mon.write_snapshots()
    doc = yaml.safe_load((tmp_path / "mlmon.yml").read_text())
    doc["models"][0]["sensitive_attributes"] = []
    (tmp_path / "mlmon.yml").write_text(yaml.safe_dump(doc))
    other = Monitor(load_config(tmp_path / "mlmon.yml"))
    assert other.snapshot_restores == {"incompatible": 1}
    assert other.models[MODEL].state.versions == {}


def _window_events(exporter: Exporter) -> float:
    s = parse_metrics(exporter.get("/metrics").text)
    return s.get(("mlmon_window_events", (("model", MODEL), ("version", "v1"))), 0.0)


def _last_snapshot(exporter: Exporter) -> float:
    s = parse_metrics(exporter.get("/metrics").text)
    return s[("mlmon_snapshot_last_success_timestamp_seconds", ())]


@pytest.mark.integration
def test_kill_9_restores_the_last_snapshot_and_sigterm_writes_one(small_env, tmp_path):
    cfg = _config(small_env, tmp_path)
    exporter = Exporter(cfg)
    try:
        rows = synthetic.without_labels(synthetic.events(small_env.spec, 600, seed=3, version="v1"))
        assert exporter.post(MODEL, rows[:400]).status_code == 200
        posted = time.time()
        wait_until(lambda: _last_snapshot(exporter) > posted, 20, "a snapshot after the post")
        exporter.proc.send_signal(signal.SIGKILL)
        exporter.proc.wait(10)
    finally:
        exporter.stop()
    restarted = Exporter(cfg)
    try:
        assert _window_events(restarted) == 400
        s = parse_metrics(restarted.get("/metrics").text)
        assert s[("mlmon_snapshot_restores_total", (("outcome", "restored"),))] == 1
        assert restarted.post(MODEL, rows[400:]).status_code == 200
        restarted.proc.send_signal(signal.SIGTERM)  # writes a last snapshot on the way out
        assert restarted.proc.wait(20) == 0
    finally:
        restarted.stop()
    third = Exporter(cfg)
    try:
        assert _window_events(third) == 600
    finally:
        third.stop()
    assert not [p for p in os.listdir(tmp_path / "snapshots") if p.endswith(".tmp")]


def _model_counters(exporter: Exporter) -> dict:
    """Every counter sample of the model (its name ends in _total, _count, _sum or _bucket
    and it carries the model label), and the ingest counters; not the baseline's histograms,
    which are the training data's constant counts."""
    out = {}
    for (name, labels), value in parse_metrics(exporter.get("/metrics").text).items():
        counter_like = name.endswith(("_total", "_count", "_sum", "_bucket"))
        counter_like = counter_like and "_baseline" not in name
        if counter_like and (("model", MODEL) in labels or name.startswith("mlmon_ingest_")):
            out[(name, labels)] = value
    return out


@pytest.mark.integration
def test_counters_never_run_backwards_across_kill_9(small_env, tmp_path):
    """20 `kill -9`s at random points of a stream: after each restart every counter of the
    model starts again from 0 (a reset Prometheus recognises), never from a stale total
    between 0 and the value already exported; the windows still come back."""
    import random

    cfg = _config(small_env, tmp_path, interval="300ms")
    rows = synthetic.without_labels(synthetic.events(small_env.spec, 4_000, seed=5, version="v1"))
    rng = random.Random(11)
    sent = 0
    restored_windows = []
    for trial in range(20):
        exporter = Exporter(cfg)
        try:
            after_restart = _model_counters(exporter)
            assert after_restart and not [k for k, v in after_restart.items() if v != 0], trial
            restored_windows.append(_window_events(exporter))
            n = rng.randint(20, 150)
            assert exporter.post(MODEL, rows[sent : sent + n]).status_code == 200
            sent += n
            counted = _model_counters(exporter)
            key = ("mlmon_inference_requests_total", (("model", MODEL), ("version", "v1")))
            assert counted[key] == n  # this process's events, not a restored total plus them
            time.sleep(rng.uniform(0.0, 0.8))  # before or after the next snapshot
            exporter.proc.send_signal(signal.SIGKILL)
            exporter.proc.wait(10)
        finally:
            exporter.stop()
    # the windows came back (at most one snapshot interval behind) and grew over the trials
    assert restored_windows[0] == 0 and max(restored_windows) > 0
    assert all(w <= sent for w in restored_windows)
