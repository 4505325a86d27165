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
from mlmon.stats import embedding
from mlmon.stats import multivariate as mv
from mlmon.stats.multivariate import split_rows
from scipy import stats
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
    return config, profile, _sent(x)


def _sent(x: np.ndarray) -> np.ndarray:
    """The vectors as the exporter receives them (rounded in the events)."""
    return np.array([e["features"]["emb"] for e in _events(x)])


def _distances(reference: PCA, x: np.ndarray) -> np.ndarray:
    """Each vector's distance to its reconstruction by scikit-learn's PCA."""
    return np.linalg.norm(x - reference.inverse_transform(reference.transform(x)), axis=1)


def _flags(samples: dict, version: str) -> dict[str, float]:
    return {
        dict(labels)["feature"]: v
        for (name, labels), v in samples.items()
        if name == "mlmon_feature_drifted" and dict(labels)["version"] == version
    }


def _serve(config, streams: dict[str, np.ndarray]) -> dict:
    """The metrics after each stream was sent as its own version; each embedding score
    checked against what /stats says of it."""
    exporter = Exporter(config)
    try:
        for version, x in streams.items():
            r = exporter.post(MODEL, _events(x, version))
            assert r.status_code == 200, r.text
        samples = parse_metrics(exporter.get("/metrics").text)
        stats = exporter.get(f"/v1/models/{MODEL}/stats").json()["versions"]
    finally:
        exporter.stop()
    for (name, labels), v in samples.items():
        if name == "mlmon_embedding_drift_score":
            key = dict(labels)
            got = stats[key["version"]]["embeddings"][key["feature"]]
            assert got["score"] == v and got["method"] == key["method"]
            assert got["events"] == len(streams[key["version"]])
    return samples


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

    # the PCA is fitted on a random half of the baseline, the other half measures its errors
    fit_rows, held_rows = split_rows(len(sent), 0)
    reference = PCA(n_components=10, svd_solver="full").fit(sent[fit_rows])
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

    # the reconstruction error's baseline is scikit-learn's reconstruction of the held-out
    # half; the window's score is the mean error of the vectors sent
    held = _distances(reference, sent[held_rows])
    assert stored["error"]["count"] == len(held_rows)
    assert stored["error"]["mean"] == pytest.approx(held.mean(), rel=1e-9)
    assert stored["error"]["std"] == pytest.approx(held.std(ddof=1), rel=1e-9)
    assert stored["error"]["skew"] == pytest.approx(stats.skew(held), rel=1e-6)
    for version, x in streams.items():
        labels = ("feature", "emb"), ("method", "pca_reconstruction"), ("model", MODEL)
        labels += (("version", version),)
        score = samples[("mlmon_embedding_drift_score", labels)]
        assert score == pytest.approx(_distances(reference, _sent(x)).mean(), rel=1e-9)
        # a change of mix inside the baseline's subspace moves components, not the score:
        # every cluster has the same noise off the plane of their centres
        print(version, score, samples[("mlmon_embedding_drift_threshold", labels)])
        assert score <= samples[("mlmon_embedding_drift_threshold", labels)]
        assert samples[("mlmon_embedding_drifted", labels[:1] + labels[2:])] == 0


@pytest.mark.integration
def test_vectors_leaving_the_baseline_subspace_raise_the_embedding_score(mixture_model):
    """A shift orthogonal to every monitored component: no component's histogram moves, and
    only the embedding's reconstruction error sees it."""
    config, profile, _ = mixture_model
    axes = np.array(profile["embeddings"]["emb"]["axes"])
    u = np.random.default_rng(11).normal(size=DIM)
    u -= axes.T @ (axes @ u)
    u /= np.linalg.norm(u)
    base = _mixture(3_000, WEIGHTS, seed=4)
    streams = {"same": base, "off_plane": base + 2.0 * u}
    samples = _serve(config, streams)
    same, off = _flags(samples, "same"), _flags(samples, "off_plane")
    print({"same": same, "off_plane": off})
    assert set(same.values()) == set(off.values()) == {0.0}
    flags = {
        dict(labels)["version"]: v
        for (name, labels), v in samples.items()
        if name == "mlmon_embedding_drifted"
    }
    scores = {
        (name.removeprefix("mlmon_embedding_"), dict(labels)["version"]): v
        for (name, labels), v in samples.items()
        if name.startswith("mlmon_embedding_drift")
    }
    print(scores)
    assert flags == {"same": 0.0, "off_plane": 1.0}


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
    scores = {
        (name.removeprefix("mlmon_embedding_"), dict(labels)["version"]): v
        for (name, labels), v in samples.items()
        if name.startswith("mlmon_embedding_drift")
    }
    print(scores)


@pytest.mark.integration
def test_digits_the_baseline_never_saw_raise_the_embedding_score(tmp_path):
    """A baseline of the digits 0-7: held-out 0-7 score like it, a stream where a third are
    8s and 9s (images the baseline's components were not fitted to) scores above it."""
    digits = load_digits()
    order = np.random.default_rng(8).permutation(len(digits.target))
    known = order[digits.target[order] <= 7]
    unseen = order[digits.target[order] >= 8]
    train, held_out = known[:1000], known[1000:]
    config, _, _ = _model(tmp_path, digits.data[train], min_samples=300)
    new_kind = np.concatenate([digits.data[held_out[:200]], digits.data[unseen[:100]]])
    streams = {"held_out": digits.data[held_out], "with_8_and_9": new_kind}
    samples = _serve(config, streams)
    found = {
        (name.removeprefix("mlmon_embedding_"), dict(labels)["version"]): v
        for (name, labels), v in samples.items()
        if name.startswith("mlmon_embedding_drift")
    }
    print(found)
    assert found["drifted", "held_out"] == 0
    assert found["drifted", "with_8_and_9"] == 1


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


# -- the reconstruction error, against scikit-learn ----------------------------------------


def _factor_vectors(rng: np.random.Generator, n: int, dim: int = 24) -> np.ndarray:
    """Vectors driven by 6 latent factors plus noise: a low-rank structure like an embedding's."""
    loadings = np.random.default_rng(99).normal(size=(6, dim))
    return rng.normal(size=(n, 6)) @ loadings + 0.5 * rng.normal(size=(n, dim)) + 3.0


def test_the_error_is_the_distance_to_scikit_learns_reconstruction():
    rng = np.random.default_rng(21)
    x = _factor_vectors(rng, 2_000)
    p = embedding.fit(x, 4)
    fit_rows, held_rows = split_rows(len(x), 0)
    reference = PCA(n_components=4, svd_solver="full").fit(x[fit_rows])
    fresh = _factor_vectors(rng, 500)
    got = p.errors(fresh, p.project(fresh))
    np.testing.assert_allclose(got, _distances(reference, fresh), rtol=1e-7)
    held = _distances(reference, x[held_rows])
    assert (p.error_count, p.error_mean) == (len(held_rows), pytest.approx(held.mean(), rel=1e-9))
    assert p.error_std == pytest.approx(held.std(ddof=1), rel=1e-9)
    back = embedding.Projection.from_dict(json.loads(json.dumps(p.to_dict())))
    np.testing.assert_array_equal(back.errors(fresh, back.project(fresh)), got)


def test_an_absurd_vector_is_capped_and_a_full_rank_projection_is_not_scored():
    rng = np.random.default_rng(22)
    x = _factor_vectors(rng, 1_000)
    p = embedding.fit(x, 4)
    huge = np.array([[1e150] * 24, [1e200] * 24, [-1e300] * 24])
    np.testing.assert_array_equal(p.errors(huge, p.project(huge)), [p.error_cap] * 3)
    assert np.isfinite(p.error_cap) and p.error_cap > p.error_mean + 5 * p.error_std
    # every dimension kept: the error is rounding noise, not scored
    full = embedding.fit(x, 24)
    assert not full.scored and "error" not in full.to_dict()
    # too few rows to hold half out
    assert not embedding.fit(x[:99], 4).scored and embedding.fit(x[:100], 4).scored


def test_the_embedding_score_keeps_its_false_alarm_rate_over_200_windows():
    rng = np.random.default_rng(23)
    p = embedding.fit(_factor_vectors(rng, 4_000), 4)
    for n in (200, 1_000):
        alarms = 0
        for _ in range(200):
            fresh = _factor_vectors(rng, n)
            e = p.errors(fresh, p.project(fresh))
            alarms += mv.drifted(mv.score(n, e.sum()), mv.threshold(p, n))
        print(n, alarms)
        assert alarms <= 2, (n, alarms)
