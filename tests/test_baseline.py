from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlmon.core import baseline
from mlmon.core.baseline import (
    BaselineError,
    build_profile,
    dumps,
    load_profile,
    read_training_data,
    write_profile,
)
from mlmon.core.config import parse_config
from mlmon.demo import synthetic

ROOT = Path(__file__).resolve().parent.parent


def _model(tmp_path: Path, features=None, task: str = "binary", **extra):
    doc = {"models": [{"name": "m", "task": task, "baseline": "m.json", **extra}]}
    if features is not None:
        doc["models"][0]["features"] = features
    return parse_config(doc, tmp_path).models[0]


@pytest.fixture()
def training(tmp_path):
    spec = synthetic.TableSpec(
        numeric={"a": (0.0, 1.0), "b": (-50.0, 20.0)},
        categorical={"c": {f"k{i}": 1.0 / (i + 1) for i in range(60)}},
        weights={"a": 1.0},
    )
    rows = synthetic.events(spec, 3_000, seed=4)
    rows[5]["features"]["a"] = None  # one missing value
    csv_path, jsonl_path = tmp_path / "t.csv", tmp_path / "t.jsonl"
    synthetic.write_csv(rows, csv_path)
    synthetic.write_jsonl(rows, jsonl_path)
    return spec, rows, csv_path, jsonl_path


def test_profile_contents(tmp_path, training):
    spec, rows, csv_path, _ = training
    m = _model(tmp_path, spec.config_features(), positive_class=1, drift={"top_k": 10})
    p = build_profile(m, read_training_data(csv_path, list(spec.config_features()), False))
    a = np.array([r["features"]["a"] for r in rows if r["features"]["a"] is not None])
    pa = p["features"]["a"]
    assert pa["missing"] == 1 and pa["count"] == 2_999
    assert pa["min"] == a.min() and pa["max"] == a.max()
    assert pa["mean"] == pytest.approx(a.mean()) and pa["std"] == pytest.approx(a.std())
    expected_deciles = sorted({float(f"{x:.6g}") for x in np.quantile(a, np.arange(1, 10) / 10)})
    assert pa["edges"] == expected_deciles
    assert set(pa["edges"]) <= set(pa["grid"]), "coarse edges are part of the fine grid"
    assert len(pa["grid"]) >= 95 and sum(pa["grid_counts"]) == 2_999
    # every bin holds the values in (edge[i-1], edge[i]]
    edges = np.array(pa["grid"])
    assert pa["grid_counts"][0] == int((a <= edges[0]).sum())
    assert pa["grid_counts"][-1] == int((a > edges[-1]).sum())
    pc = p["features"]["c"]
    assert pc["kind"] == "categorical" and len(pc["categories"]) == 10
    assert pc["distinct"] == 60
    assert pc["other"] + sum(n for _, n in pc["categories"]) == 3_000
    counts = [n for _, n in pc["categories"]]
    assert counts == sorted(counts, reverse=True)
    assert p["prediction"]["kind"] == "categorical"
    assert [c for c, _ in p["label"]["categories"]] == ["0", "1"]
    assert p["score"]["edges"] == list(baseline.SCORE_EDGES)
    assert p["rows"] == 3_000 and p["hash"].startswith("sha256:")


def test_deterministic_and_csv_equals_jsonl(tmp_path, training):
    spec, _, csv_path, jsonl_path = training
    m = _model(tmp_path, spec.config_features(), positive_class=1)
    names = list(spec.config_features())
    at = "2026-11-30T12:00:00Z"
    a = dumps(build_profile(m, read_training_data(csv_path, names, False), created_at=at))
    b = dumps(build_profile(m, read_training_data(csv_path, names, False), created_at=at))
    c = dumps(build_profile(m, read_training_data(jsonl_path, names, False), created_at=at))
    assert a == b == c


def test_the_build_date_is_recorded_and_exported_but_not_hashed(tmp_path, training):
    """Two builds of the same data at different times: the same content hash, each with
    its own date; the exporter exports the date as seconds since the epoch."""
    from mlmon.core.monitor import Monitor

    spec, _, csv_path, _ = training
    m = _model(tmp_path, spec.config_features(), positive_class=1)
    data = read_training_data(csv_path, list(spec.config_features()), False)
    one = build_profile(m, data, created_at="2026-01-02T03:04:05Z")
    two = build_profile(m, data)
    assert one["hash"] == two["hash"] and one["created_at"] != two["created_at"]
    assert two["created_at"].endswith("Z") and len(two["created_at"]) == 20
    write_profile(one, m.baseline)
    assert load_profile(m.baseline)["created_at"] == "2026-01-02T03:04:05Z"
    cfg = parse_config({"models": [{"name": m.name, "task": "binary", "positive_class": 1,
                                    "baseline": str(m.baseline)}]}, tmp_path)  # fmt: skip
    schema = Monitor(cfg).models[m.name].schema
    assert schema.baseline_created == 1767323045.0  # date -u -d 2026-01-02T03:04:05Z +%s


def test_kinds_are_inferred_when_the_config_omits_them(tmp_path, training):
    _, _, csv_path, jsonl_path = training
    m = _model(tmp_path, None, positive_class=1)
    for path in (csv_path, jsonl_path):
        p = build_profile(m, read_training_data(path, None, False))
        assert {k: v["kind"] for k, v in p["features"].items()} == {
            "a": "numeric",
            "b": "numeric",
            "c": "categorical",
        }


def test_cli_writes_a_loadable_profile(tmp_path, training):
    _spec, _, csv_path, _ = training
    cfg = tmp_path / "c.yml"
    cfg.write_text(
        "models:\n  - {name: m, task: binary, positive_class: 1, baseline: m.json,\n"
        "     features: {a: numeric, b: numeric, c: categorical}}\n"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlmon",
            "baseline",
            "--config",
            str(cfg),
            "--model",
            "m",
            "--data",
            str(csv_path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "3000 rows, 3 features" in out.stdout
    prof = load_profile(tmp_path / "m.json")
    assert prof["model"] == "m"
    # a hand edit breaks the hash
    text = (tmp_path / "m.json").read_text().replace('"rows": 3000', '"rows": 3001')
    (tmp_path / "m.json").write_text(text)
    with pytest.raises(BaselineError, match="hash"):
        load_profile(tmp_path / "m.json")


def test_progress_bar_on_large_files(tmp_path, training, monkeypatch, capsys):
    spec, _, csv_path, _ = training
    monkeypatch.setattr(baseline, "PROGRESS_MIN_BYTES", 1)
    read_training_data(csv_path, list(spec.config_features()), progress=True)
    err = capsys.readouterr().err
    assert "reading t.csv" in err and "100.0%" in err
    read_training_data(csv_path, list(spec.config_features()), progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("content", "features", "message"),
    [
        ("a,b\n1,2\n", {"a": "numeric", "z": "numeric"}, "missing column(s) z"),
        ("a,b\n1,\n2,NA\n", {"a": "numeric", "b": "numeric"}, "'b': has no values"),
        ("a,b\n1,2\n3,abc\n", {"a": "numeric", "b": "numeric"}, "line 3: 'abc' is not a number"),
        ("a,b\n1,2\n3\n", {"a": "numeric", "b": "numeric"}, ":3: 1 fields, header has 2"),
        ("", {"a": "numeric"}, "empty file"),
        ("a\n", {"a": "numeric"}, "no rows"),
    ],
)
def test_bad_training_data(tmp_path, content, features, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    m = _model(tmp_path, features, task="regression")
    with pytest.raises(BaselineError) as ei:
        build_profile(m, read_training_data(path, list(features), False))
    assert message in str(ei.value)


def test_bad_jsonl(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"features": {"a": 1}}\n{"features": {"a": "x"}}\n')
    m = _model(tmp_path, {"a": "numeric"}, task="regression")
    with pytest.raises(BaselineError, match="row 2: 'x' is not a number"):
        build_profile(m, read_training_data(path, ["a"], False))
    path.write_text('{"features": {"a": 1}}\nnot json\n')
    with pytest.raises(BaselineError, match=":2: not valid JSON"):
        read_training_data(path, ["a"], False)


def test_example_baseline_regenerates_byte_for_byte():
    spec = importlib.util.spec_from_file_location("build", ROOT / "examples/build_baselines.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for path, text in mod.example_profiles().items():
        assert path.read_text() == text, f"{path} is stale: run examples/build_baselines.py"


def _regression_rows(n: int, seed: int) -> list[dict]:
    """Predictions with heavy-tailed errors (so MAE and RMSE differ), a few rows without a
    label and one without a prediction."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        x = float(rng.normal(50, 10))
        pred = round(2 * x + 3, 4)
        label = round(pred + float(rng.standard_t(3)) * 4, 4)
        rows.append({"features": {"x": x}, "prediction": pred, "label": label})
        if i % 97 == 0:
            rows[-1]["label"] = None
    rows[10]["prediction"] = None
    return rows


def _write_regression_csv(rows: list[dict], path: Path) -> None:
    text = lambda v: "" if v is None else repr(v)  # noqa: E731
    lines = ["x,prediction,label"]
    lines += [f"{r['features']['x']!r},{text(r['prediction'])},{text(r['label'])}" for r in rows]
    path.write_text("\n".join(lines) + "\n")


def test_regression_profile_has_the_baseline_error_of_scikit_learn(tmp_path):
    from sklearn import metrics as skm

    rows = _regression_rows(2_000, seed=5)
    csv_path, jsonl_path = tmp_path / "r.csv", tmp_path / "r.jsonl"
    _write_regression_csv(rows, csv_path)
    synthetic.write_jsonl(rows, jsonl_path)
    both = [r for r in rows if r["prediction"] is not None and r["label"] is not None]
    y = [r["label"] for r in both]
    p = [r["prediction"] for r in both]
    m = _model(tmp_path, {"x": "numeric"}, task="regression")
    for path in (csv_path, jsonl_path):
        err = build_profile(m, read_training_data(path, ["x"], progress=False))["regression_error"]
        assert err["count"] == len(both) == 2_000 - 21 - 1
        assert err["mae"] == pytest.approx(skm.mean_absolute_error(y, p), rel=1e-12)
        assert err["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, p)), rel=1e-12)
        assert err["rmse"] > err["mae"] * 1.1  # heavy tails: the two tell different stories
    # no labels: no reference error; a classifier's profile has no such field
    for r in rows:
        r["label"] = None
    synthetic.write_jsonl(rows, jsonl_path)
    prof = build_profile(m, read_training_data(jsonl_path, ["x"], progress=False))
    assert prof["regression_error"] is None
    binary = _model(tmp_path, {"x": "numeric"})
    assert "regression_error" not in build_profile(
        binary, read_training_data(jsonl_path, ["x"], progress=False)
    )


def test_cli_reports_the_baseline_error(tmp_path):
    rows = _regression_rows(500, seed=6)
    _write_regression_csv(rows, tmp_path / "r.csv")
    cfg = tmp_path / "c.yml"
    cfg.write_text("models:\n  - {name: r, task: regression, baseline: r.json}\n")
    cmd = [sys.executable, "-m", "mlmon", "baseline", "--config", str(cfg), "--model", "r"]
    out = subprocess.run(
        [*cmd, "--data", str(tmp_path / "r.csv")], capture_output=True, text=True, check=True
    )
    err = load_profile(tmp_path / "r.json")["regression_error"]
    assert f"over {err['count']} labelled rows: MAE {err['mae']:.6g}, RMSE" in out.stdout
