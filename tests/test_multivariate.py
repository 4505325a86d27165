"""Multivariate drift end to end, over real sockets to `mlmon serve`, with a baseline built
by `mlmon baseline`: two features correlated +0.9 in training, six independent ones and
two categoricals. A version whose correlation flips to -0.9 (marginals unchanged) is
flagged while every univariate flag stays 0; a version from the baseline's distribution is
not; an ordinary 1-sigma shift in two features is."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from helpers import Exporter, parse_metrics, write_baseline_config

MODEL = "joint"
INDEPENDENT = {"x3": (5.0, 2.0), "x4": (0.0, 1.0), "x5": (-1.0, 0.5), "x6": (100.0, 15.0)}
INDEPENDENT |= {"x7": (3.0, 3.0), "x8": (0.0, 10.0)}
COLOURS = {"red": 0.5, "green": 0.3, "blue": 0.2}
SIZES = {"s": 0.3, "m": 0.4, "l": 0.3}


def _rows(n: int, seed: int, rho: float = 0.9, shift: tuple[str, ...] = ()) -> list[dict]:
    rng = np.random.default_rng(seed)
    z1 = rng.normal(size=n)
    z2 = rho * z1 + np.sqrt(1 - rho**2) * rng.normal(size=n)
    cols = {"x1": 50 + 10 * z1, "x2": 1 + 0.2 * z2}
    for k, (mu, sd) in INDEPENDENT.items():
        cols[k] = rng.normal(mu + (sd if k in shift else 0.0), sd, n)
    colour = rng.choice(list(COLOURS), size=n, p=list(COLOURS.values()))
    size = rng.choice(list(SIZES), size=n, p=list(SIZES.values()))
    rows = []
    for i in range(n):
        feats = {k: round(float(v[i]), 5) for k, v in cols.items()}
        feats |= {"colour": str(colour[i]), "size": str(size[i])}
        score = float(1 / (1 + np.exp(-z1[i])))
        rows.append({"features": feats, "prediction": int(score > 0.5), "scores": {"1": score}})
    return rows


@pytest.fixture()
def joint_model(tmp_path):
    train = tmp_path / "train.csv"
    rows = _rows(20_000, seed=1)
    names = list(rows[0]["features"])
    with train.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*names, "prediction", "score"])
        for r in rows:
            w.writerow([*r["features"].values(), r["prediction"], r["scores"]["1"]])
    config = tmp_path / "mlmon.yml"
    model = {"name": MODEL, "task": "binary", "positive_class": 1, "baseline": "joint.json"}
    model["drift"] = {"min_samples": 500}
    return write_baseline_config(config, model, train)


def _version(samples: dict, name: str, version: str, **labels: str) -> float:
    key = {"model": MODEL, "version": version, **labels}
    return samples[(name, tuple(sorted(key.items())))]


@pytest.mark.integration
def test_a_flipped_correlation_is_caught_where_every_marginal_passes(joint_model):
    streams = {
        "same": _rows(2_000, seed=2),
        "flipped": _rows(2_000, seed=3, rho=-0.9),
        "shifted": _rows(2_000, seed=4, shift=("x3", "x4")),
    }
    exporter = Exporter(joint_model)
    try:
        for version, rows in streams.items():
            body = {"events": [{**r, "version": version} for r in rows]}
            r = exporter.session.post(
                f"{exporter.url}/v1/models/{MODEL}/predictions", json=body, timeout=30
            )
            assert r.status_code == 200
        samples = parse_metrics(exporter.get("/metrics").text)
        stats = exporter.get(f"/v1/models/{MODEL}/stats").json()["versions"]
    finally:
        exporter.stop()

    method = {"method": "pca_reconstruction"}
    score = {v: _version(samples, "mlmon_multivariate_drift_score", v, **method) for v in streams}
    limit = {
        v: _version(samples, "mlmon_multivariate_drift_threshold", v, **method) for v in streams
    }
    drifted = {v: _version(samples, "mlmon_multivariate_drifted", v) for v in streams}
    print(f"scores {score}, thresholds {limit}")
    assert drifted == {"same": 0.0, "flipped": 1.0, "shifted": 1.0}
    assert score["same"] < limit["same"] < score["flipped"]
    # the three windows hold as many events, so one threshold
    assert limit["same"] == limit["flipped"] == limit["shifted"]
    # /stats says what /metrics says
    for v in streams:
        assert stats[v]["multivariate"] == {
            "method": "pca_reconstruction",
            "events": 2_000,
            "reported": True,
            "score": score[v],
            "threshold": limit[v],
            "drifted": drifted[v] == 1,
        }

    # every marginal of the flipped stream passes: no feature drifted, none of the 10 tested
    flags = {
        dict(labels)["feature"]: v
        for (name, labels), v in samples.items()
        if name == "mlmon_feature_drifted" and dict(labels)["version"] == "flipped"
    }
    assert len(flags) == 10 and set(flags.values()) == {0.0}
    assert _version(samples, "mlmon_drifted_features", "flipped") == 0
    # the shifted stream's marginals do drift (the univariate tests see an ordinary shift)
    shifted = {
        dict(labels)["feature"]
        for (name, labels), v in samples.items()
        if name == "mlmon_feature_drifted" and dict(labels)["version"] == "shifted" and v == 1
    }
    assert shifted == {"x3", "x4"}

    components = samples[("mlmon_multivariate_components", (("model", MODEL),))]
    explained = samples[("mlmon_multivariate_explained_variance", (("model", MODEL),))]
    assert components >= 1 and 0.65 <= explained <= 1.0
