"""Embedding features end to end, over real sockets to `mlmon serve`, with baselines built by
`mlmon baseline`: a 32-d mixture of three Gaussian clusters whose weights change, and the
64-pixel digits shipped with scikit-learn whose digit mix changes. Each embedding is
monitored through the PCA fitted on its baseline, component by component; the stored
projection is checked against scikit-learn's PCA, and bad vectors are refused alike in the
row and the columnar forms."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from helpers import Exporter, parse_metrics
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlmon.core.baseline import build_profile, read_training_data, write_profile
from mlmon.core.config import ConfigError, parse_config
from mlmon.core.decoding import BadRequest
from mlmon.core.monitor import Monitor
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from test_ingest import fingerprint, same_state

MODEL = "emb"
DIM = 32
WEIGHTS = (0.5, 0.3, 0.2)


def _mixture(n: int, weights: tuple[float, ...], seed: int) -> np.ndarray:
    """``n`` points of three unit-variance Gaussian clusters around fixed centres."""
    centres = np.random.default_rng(0).normal(0.0, 3.0, size=(3, DIM))
    rng = np.random.default_rng(seed)
    which = rng.choice(3, size=n, p=weights)
    return centres[which] + rng.normal(size=(n, DIM))


def _events(x: np.ndarray, version: str | None = None) -> list[dict]:
    events = [
        {"features": {"emb": [round(float(v), 5) for v in row]}, "prediction": float(row[0])}
        for row in x
    ]
    return [{**e, "version": version} for e in events] if version else events


def _model(tmp_path, x: np.ndarray, min_samples: int, **spec) -> tuple:
    """A regression model with one embedding feature and its baseline built from ``x``."""
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(e) + "\n" for e in _events(x)))
    config = tmp_path / "mlmon.yml"
    feature = {"kind": "embedding", "dim": x.shape[1], **spec}
    model = {"name": MODEL, "task": "regression", "baseline": "emb.json"}
    model |= {"features": {"emb": feature}, "drift": {"min_samples": min_samples}}
    config.write_text(yaml.safe_dump({"models": [model]}))
    argv = [sys.executable, "-m", "mlmon", "baseline", "--config", str(config), "--model", MODEL]
    subprocess.run([*argv, "--data", str(train), "--no-progress"], check=True, capture_output=True)
    profile = json.loads((tmp_path / "emb.json").read_text())
    # the profile holds the rounded vectors the exporter was sent
    sent = np.array([e["features"]["emb"] for e in _events(x)])
    return config, profile, sent


def _flags(samples: dict, version: str) -> dict[str, float]:
    return {
        dict(labels)["feature"]: v
        for (name, labels), v in samples.items()
        if name == "mlmon_feature_drifted" and dict(labels)["version"] == version
    }


def _serve(config, streams: dict[str, np.ndarray]) -> dict:
    exporter = Exporter(config)
    try:
        for version, x in streams.items():
            r = exporter.post(MODEL, _events(x, version))
            assert r.status_code == 200, r.text
        return parse_metrics(exporter.get("/metrics").text)
    finally:
        exporter.stop()


@pytest.fixture()
def mixture_model(tmp_path):
    return _model(tmp_path, _mixture(20_000, WEIGHTS, seed=1), min_samples=500)


@pytest.mark.integration
def test_a_mixture_shift_is_flagged_on_a_component(mixture_model):
    config, profile, sent = mixture_model
    streams = {
        "same": _mixture(3_000, WEIGHTS, seed=2),
        "shifted": _mixture(3_000, (0.2, 0.3, 0.5), seed=3),
    }
    samples = _serve(config, streams)
    names = [f"emb.pc{j}" for j in range(1, 11)]
    same, shifted = _flags(samples, "same"), _flags(samples, "shifted")
    print({n: (same[n], shifted[n]) for n in names})
    assert sorted(same) == sorted(shifted) == sorted(names)  # every component is tested
    assert set(same.values()) == {0.0}
    assert 1.0 in shifted.values()
    key = ("feature", "emb"), ("model", MODEL)
    assert samples[("mlmon_embedding_components", key)] == 10
    explained = samples[("mlmon_embedding_explained_variance", key)]

    reference = PCA(n_components=10, svd_solver="full").fit(sent)
    stored = profile["embeddings"]["emb"]
    axes = np.array(stored["axes"])
    # the same axes up to sign, the same shares of variance, the same centre
    np.testing.assert_allclose(np.abs(np.sum(axes * reference.components_, axis=1)), 1, atol=1e-6)
    np.testing.assert_allclose(
        stored["explained_variance_ratio"], reference.explained_variance_ratio_, rtol=1e-9
    )
    np.testing.assert_allclose(stored["mean"], reference.mean_, atol=1e-9)
    assert explained == pytest.approx(reference.explained_variance_ratio_.sum(), rel=1e-9)
    # each component's histogram holds the projected baseline values
    coords = reference.transform(sent)[:, 0] * np.sign(np.sum(axes[0] * reference.components_[0]))
    assert profile["features"]["emb.pc1"]["sum"] == pytest.approx(coords.sum(), abs=1e-6)


@pytest.mark.integration
def test_a_different_digit_mix_is_flagged_and_the_same_mix_is_not(tmp_path):
    digits = load_digits()
    order = np.random.default_rng(7).permutation(len(digits.target))
    train, held_out = order[:1200], order[1200:]
    low = np.flatnonzero(digits.target <= 4)
    config, _, _ = _model(tmp_path, digits.data[train], min_samples=300)
    streams = {"held_out": digits.data[held_out], "zero_to_four": digits.data[low]}
    samples = _serve(config, streams)
    held, low_mix = _flags(samples, "held_out"), _flags(samples, "zero_to_four")
    print(f"held out: {held}\n0-4: {low_mix}")
    assert len(held) == len(low_mix) == 10
    assert set(held.values()) == {0.0}
    assert sum(low_mix.values()) >= 1


BAD = [
    ([0.5] * (DIM - 1), "wrong_length", f"expected a list of {DIM} numbers, got {DIM - 1}"),
    (
        [0.5] * 3 + ["x"] + [0.5] * (DIM - 4),
        "type_error",
        "element 3: expected a number, got string",
    ),
    ("0.5", "type_error", f"expected a list of {DIM} numbers, got string"),
    ({"a": 1}, "type_error", f"expected a list of {DIM} numbers, got object"),
]


def _refused(exporter) -> dict[str, float]:
    samples = parse_metrics(exporter.get("/metrics").text)
    return {
        dict(labels)["reason"]: v
        for (name, labels), v in samples.items()
        if name == "mlmon_ingest_refused_values_total" and dict(labels)["feature"] == "emb"
    }


@pytest.mark.integration
def test_bad_vectors_are_refused_alike_in_both_forms(mixture_model):
    config, _, _ = mixture_model
    good = [0.25] * DIM
    exporter = Exporter(config)
    try:
        url = f"{exporter.url}/v1/models/{MODEL}/predictions"
        for value, _, message in BAD:
            values = [good, value, None]
            rows = [{"features": {"emb": v}, "prediction": 1.0} for v in values]
            columns = {"features": {"emb": values}, "prediction": [1.0] * 3}
            for body in ({"events": rows}, {"columns": columns}):
                r = exporter.session.post(url, json=body, timeout=30)
                assert r.status_code == 400, (body, r.text)
                detail = r.json()["details"][0]
                assert detail == {"index": 1, "field": "features.emb", "message": message}
        # each bad value was refused twice (once per form) and counted under its reason
        assert _refused(exporter) == {"type_error": 6.0, "wrong_length": 2.0, "out_of_range": 0.0}
        # null and an absent feature are missing, not errors, in both forms
        rows = [{"features": {"emb": v}, "prediction": 1.0} for v in (good, None)]
        rows.append({"features": {}, "prediction": 1.0})
        assert exporter.post(MODEL, rows).status_code == 200
        columns = {"features": {"emb": [good, None]}, "prediction": [1.0, 1.0]}
        r = exporter.session.post(url, json={"columns": columns}, timeout=30)
        assert r.status_code == 200, r.text
        samples = parse_metrics(exporter.get("/metrics").text)
        missing = {
            dict(labels)["feature"]: v
            for (name, labels), v in samples.items()
            if name == "mlmon_feature_missing_total"
        }
        # one null and one absent event in rows, one null in columns: 3 for each component
        assert missing == {f"emb.pc{j}": 3.0 for j in range(1, 11)}
    finally:
        exporter.stop()


def test_an_embedding_needs_its_dim_and_at_most_dim_components(tmp_path):
    def model(spec):
        return {"models": [{"name": "m", "task": "regression", "baseline": "b.json"} | spec]}

    cfg = parse_config(model({"features": {"e": {"kind": "embedding", "dim": 4}}}), tmp_path)
    assert (cfg.models[0].features[0].dim, cfg.models[0].features[0].components) == (4, 4)
    cfg = parse_config(model({"features": {"e": {"kind": "embedding", "dim": 64}}}), tmp_path)
    assert cfg.models[0].features[0].components == 10
    bad = {
        "e": {"kind": "embedding"},
        "f": {"kind": "embedding", "dim": 4, "components": 5},
        "g": {"kind": "numeric", "dim": 4},
    }
    with pytest.raises(ConfigError) as ei:
        parse_config(model({"features": bad}), tmp_path)
    text = str(ei.value)
    assert "features.e.dim: required: the numbers each event carries" in text
    assert "features.f.components: at most dim (4)" in text
    assert "features.g.dim: only embedding features have dim" in text


# -- the row and the columnar forms accept, refuse and count alike -------------------------

SMALL = 3
element = st.one_of(
    st.floats(-1e3, 1e3), st.integers(-(2**70), 2**70), st.floats(), st.booleans(),
    st.just("1"), st.none(), st.just(10**400),
)  # fmt: skip
vectors = st.one_of(
    st.none(),
    st.lists(st.floats(-1e3, 1e3), min_size=SMALL, max_size=SMALL),
    st.lists(element, min_size=SMALL, max_size=SMALL),
    st.lists(st.floats(-1e3, 1e3), max_size=SMALL + 1),
    st.sampled_from(["v", 1.5, {"a": 1}, [[1, 2, 3]]]),
)


@st.composite
def embedding_batches(draw) -> list[dict]:
    n = draw(st.integers(1, 6))
    errors = st.sampled_from([None, None, None, "timeout: x"])
    return [
        {"features": {"e": draw(vectors)}, "prediction": 1.0, "error": draw(errors)}
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def small_config(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("embedding")
    rng = np.random.default_rng(5)
    rows = [{"features": {"e": list(v)}, "prediction": 1.0} for v in rng.normal(size=(300, SMALL))]
    (tmp / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    feature = {"kind": "embedding", "dim": SMALL, "components": 2}
    model = {"name": "m", "task": "regression", "baseline": "m.json", "features": {"e": feature}}
    cfg = parse_config({"models": [model]}, tmp)
    data = read_training_data(tmp / "train.jsonl", ["e"], progress=False)
    write_profile(build_profile(cfg.models[0], data), cfg.models[0].baseline)
    return cfg


EMBEDDING_OUTCOMES = {True: 0, False: 0}


def _ingest(monitor, form: str, events: list[dict]) -> bool:
    m = monitor.models["m"]
    try:
        if form == "rows":
            m.ingest(events)
        else:
            cols = {"features": {"e": [e["features"]["e"] for e in events]}}
            cols |= {key: [e[key] for e in events] for key in ("prediction", "error")}
            m.ingest_columns(cols)
    except BadRequest as e:
        assert e.status == 400 and e.reason == "invalid_event", e.body()
        return False
    return True


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=embedding_batches())
def test_rows_and_columns_agree_on_embeddings(small_config, events):
    by_rows, by_cols = Monitor(small_config), Monitor(small_config)
    accepted = _ingest(by_rows, "rows", events)
    assert _ingest(by_cols, "columns", events) == accepted, events
    EMBEDDING_OUTCOMES[accepted] += 1
    assert same_state(fingerprint(by_rows), fingerprint(by_cols)), events
    assert by_rows.counters.refused_values == by_cols.counters.refused_values


def test_the_embedding_property_saw_both_outcomes():
    assert EMBEDDING_OUTCOMES[True] > 50 and EMBEDDING_OUTCOMES[False] > 50, EMBEDDING_OUTCOMES


def _baseline_error(tmp_path, data_name: str, data: str, features) -> str:
    (tmp_path / data_name).write_text(data)
    model = {"name": MODEL, "task": "regression", "baseline": "b.json", "features": features}
    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump({"models": [model]}))
    argv = [sys.executable, "-m", "mlmon", "baseline", "--config", str(config), "--model", MODEL]
    run = subprocess.run(
        [*argv, "--data", str(tmp_path / data_name), "--no-progress"], capture_output=True
    )
    assert run.returncode != 0 and not (tmp_path / "b.json").exists()
    return run.stderr.decode()


def test_the_baseline_says_what_is_wrong_with_embedding_data(tmp_path):
    spec = {"emb": {"kind": "embedding", "dim": 2}}
    csv = "emb,prediction\n1,1.0\n"
    assert "embedding features need JSONL training data" in _baseline_error(
        tmp_path, "t.csv", csv, spec
    )
    rows = [{"features": {"emb": [1.0, 2.0]}, "prediction": 1.0}] * 5
    rows.append({"features": {"emb": [1.0, "x"]}, "prediction": 1.0})
    jsonl = "".join(json.dumps(r) + "\n" for r in rows)
    assert "row 6: expected a list of 2 finite numbers" in _baseline_error(
        tmp_path, "t.jsonl", jsonl, spec
    )
    assert "holds lists: declare it as {kind: embedding" in _baseline_error(
        tmp_path, "t.jsonl", jsonl, ["emb"]
    )
