"""Regression and multiclass models: outputs binned, exported and drift-tested."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from mlmon.cli import build_registry
from mlmon.core.baseline import build_profile, read_training_data, write_profile
from mlmon.core.config import load_config
from mlmon.core.monitor import Monitor
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from scipy import stats as st


def _rows(n: int, seed: int, shift: float = 0.0, task: str = "regression") -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        size = float(rng.normal(120 + shift * 30, 30))
        rooms = int(rng.integers(1, 7))
        city = str(rng.choice(["berlin", "paris", "rome"], p=[0.5, 0.3, 0.2]))
        if task == "regression":
            pred: object = round(size * 2.1 + rooms * 10 + rng.normal(0, 5), 3)
            label: object = pred + float(rng.normal(0, 10))
            scores = None
        else:
            logits = np.array([size / 60, rooms / 2, 1.0])
            p = np.exp(logits) / np.exp(logits).sum()
            pred = ["small", "medium", "large"][int(p.argmax())]
            label = pred
            scores = {c: float(x) for c, x in zip(["small", "medium", "large"], p, strict=True)}
        row = {
            "features": {"size": size, "rooms": rooms, "city": city},
            "prediction": pred,
            "label": label,
        }
        if scores:
            row["scores"] = scores
        rows.append(row)
    return rows


def _monitor(tmp_path, task: str) -> Monitor:
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows(4_000, 1, task=task)))
    model = {
        "name": "m",
        "task": task,
        "baseline": "m.json",
        "features": {"size": "numeric", "rooms": "numeric", "city": "categorical"},
        "drift": {"min_samples": 200},
    }
    if task == "multiclass":
        model["classes"] = ["small", "medium", "large"]
    cfg_path = tmp_path / "c.yml"
    cfg_path.write_text(yaml.safe_dump({"models": [model]}))
    cfg = load_config(cfg_path)
    m = cfg.models[0]
    write_profile(
        build_profile(m, read_training_data(data, ["size", "rooms", "city"], False)), m.baseline
    )
    return Monitor(cfg)


def test_regression_predictions_are_histograms_with_drift(tmp_path):
    mon = _monitor(tmp_path, "regression")
    registry = build_registry(mon)
    m = mon.models["m"]
    live = _rows(1_000, 7, shift=1.0)
    for r in live:
        del r["label"]
    m.ingest(live)
    preds = np.array([r["prediction"] for r in live])
    lab = {"model": "m", "version": "unversioned"}
    assert registry.get_sample_value("mlmon_prediction_value_count", lab) == 1_000
    assert registry.get_sample_value("mlmon_prediction_value_sum", lab) == pytest.approx(
        preds.sum()
    )
    edges = m.schema.prediction_numeric.coarse_edges[0]
    assert (
        registry.get_sample_value(
            "mlmon_prediction_value_bucket", {**lab, "le": repr(float(edges[4]))}
        )
        == (preds <= edges[4]).sum()
    )
    assert registry.get_sample_value("mlmon_prediction_baseline_count", {"model": "m"}) == 4_000
    out = m.stats()["versions"]["unversioned"]["prediction"]["value"]
    assert out["drifted"] is True
    train_preds = np.array([r["prediction"] for r in _rows(4_000, 1)])
    assert out["scores"]["ks"] == pytest.approx(st.ks_2samp(train_preds, preds).statistic, abs=0.02)
    assert registry.get_sample_value("mlmon_prediction_drifted", {**lab, "output": "value"}) == 1
    # scores make no sense for a regression model
    with pytest.raises(Exception, match="invalid"):
        m.ingest([{"features": {"size": 1}, "prediction": 3.0, "scores": {"a": 0.5}}])
    # a NaN prediction is counted as missing, not as a value
    m.ingest([{"features": {"size": 1}, "prediction": float("nan")}])
    assert registry.get_sample_value("mlmon_prediction_missing_total", lab) == 1


def test_multiclass_tracks_classes_and_top_score(tmp_path):
    mon = _monitor(tmp_path, "multiclass")
    registry = build_registry(mon)
    m = mon.models["m"]
    live = _rows(500, 9, task="multiclass")
    for r in live:
        del r["label"]
    m.ingest(live)
    lab = {"model": "m", "version": "unversioned"}
    for cls in ("small", "medium", "large"):
        assert registry.get_sample_value(
            "mlmon_prediction_class_total", {**lab, "class": cls}
        ) == sum(r["prediction"] == cls for r in live)
    top = np.array([max(r["scores"].values()) for r in live])
    assert registry.get_sample_value("mlmon_prediction_score_sum", lab) == pytest.approx(top.sum())
    ratio = registry.get_sample_value(
        "mlmon_prediction_baseline_class_ratio", {"model": "m", "class": "large"}
    )
    train = _rows(4_000, 1, task="multiclass")
    assert ratio == pytest.approx(sum(r["prediction"] == "large" for r in train) / 4_000)
    outputs = m.stats()["versions"]["unversioned"]["prediction"]
    assert set(outputs) == {"class", "score"}
    assert outputs["class"]["drifted"] is False
    families = {f.name for f in text_string_to_metric_families(generate_latest(registry).decode())}
    assert "mlmon_prediction_value" not in families


def test_too_many_classes_are_refused(tmp_path):
    import pytest as _pytest
    from mlmon.core.config import ConfigError

    mon_dir = tmp_path / "mc"
    mon_dir.mkdir()
    _monitor(mon_dir, "multiclass")  # three classes: fine
    doc = yaml.safe_load((mon_dir / "c.yml").read_text())
    doc["limits"] = {"max_classes": 2}
    (mon_dir / "c.yml").write_text(yaml.safe_dump(doc))
    with _pytest.raises(ConfigError, match=r"3 classes exceed limits\.max_classes"):
        Monitor(load_config(mon_dir / "c.yml"))
