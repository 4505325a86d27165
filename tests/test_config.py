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
