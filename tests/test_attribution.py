"""Feature-attribution drift end to end, over real sockets to `mlmon serve`: a linear model
whose attributions are exactly coefficient * (x - mean) (its SHAP values, the features
being independent), a baseline built by `mlmon baseline` from training data with
`attr_<feature>` columns, and live events carrying `attributions`. Shifting an important
feature raises its global attribution to the closed form and drops NDCG below the
threshold; the baseline's own distribution keeps NDCG near 1. The columnar form counts
what the row form counts; bad attributions are refused like any bad field."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from helpers import Exporter, parse_metrics, write_baseline_config

MODEL = "linear"
# (mean, sd, coefficient): x3 ranks third by global attribution |c| * sd * sqrt(2/pi)
FEATURES = {
    "x1": (10.0, 2.0, 1.5),
    "x2": (0.0, 1.0, 2.0),
    "x3": (5.0, 3.0, 0.4),
    "x4": (-3.0, 0.5, 1.0),
    "x5": (100.0, 20.0, 0.01),
}
SHIFT = 4.0  # x3 moves by 4 standard deviations


def _rows(n: int, seed: int, shift: float = 0.0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    xs = {
        k: rng.normal(mu + (shift * sd if k == "x3" else 0.0), sd, n)
        for k, (mu, sd, _) in FEATURES.items()
    }
    for i in range(n):
        feats = {k: float(xs[k][i]) for k in FEATURES}
        attr = {k: c * (feats[k] - mu) for k, (mu, _, c) in FEATURES.items()}
        margin = sum(attr.values())
        score = 1.0 / (1.0 + math.exp(-margin))
        rows.append(
            {
                "features": feats,
                "attributions": attr,
                "prediction": int(score >= 0.5),
                "scores": {"1": score},
            }
        )
    return rows


@pytest.fixture()
def linear_model(tmp_path):
    train = tmp_path / "train.csv"
    with train.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*FEATURES, *(f"attr_{k}" for k in FEATURES), "prediction", "score"])
        for r in _rows(20_000, seed=1):
            w.writerow(
                [
                    *r["features"].values(),
                    *r["attributions"].values(),
                    r["prediction"],
                    r["scores"]["1"],
                ]
            )
    config = tmp_path / "mlmon.yml"
    model = {
        "name": MODEL,
        "task": "binary",
        "positive_class": 1,
        "baseline": "linear.json",
        "drift": {"min_samples": 500},
    }
    return write_baseline_config(config, model, train)


def _by_feature(samples: dict, name: str, version: str) -> dict[str, float]:
    out = {}
    for (metric, labels), v in samples.items():
        d = dict(labels)
        if metric == name and d.get("version") == version:
            out[d["feature"]] = v
    return out


def _post(exporter: Exporter, body: dict):
    return exporter.session.post(
        f"{exporter.url}/v1/models/{MODEL}/predictions", json=body, timeout=30
    )


@pytest.mark.integration
def test_a_shifted_feature_raises_its_attribution_and_ndcg_falls(linear_model):
    exporter = Exporter(linear_model)
    try:
        for version, seed, shift in (("v1", 2, 0.0), ("v2", 3, SHIFT)):
            rows = [{**r, "version": version} for r in _rows(2_000, seed, shift)]
            assert _post(exporter, {"events": rows}).status_code == 200
        samples = parse_metrics(exporter.get("/metrics").text)
        stats = exporter.get(f"/v1/models/{MODEL}/stats").json()["versions"]
    finally:
        exporter.stop()

    sqrt_2_pi = math.sqrt(2 / math.pi)
    base = {
        k: v
        for (metric, labels), v in samples.items()
        if metric == "mlmon_baseline_feature_attribution"
        for k in [dict(labels)["feature"]]
    }
    for k, (_, sd, c) in FEATURES.items():  # E|c (x - mu)| = |c| sd sqrt(2/pi)
        assert base[k] == pytest.approx(abs(c) * sd * sqrt_2_pi, rel=0.03)

    v1 = _by_feature(samples, "mlmon_feature_attribution", "v1")
    v2 = _by_feature(samples, "mlmon_feature_attribution", "v2")
    _, sd3, c3 = FEATURES["x3"]
    # x ~ N(mu + d sd, sd): E|x - mu| is the folded normal's mean
    folded = sd3 * (sqrt_2_pi * math.exp(-(SHIFT**2) / 2) + SHIFT * (1 - 2 * _phi(-SHIFT)))
    assert v2["x3"] == pytest.approx(abs(c3) * folded, rel=0.03)
    assert v1["x3"] == pytest.approx(base["x3"], rel=0.05)
    shift = _by_feature(samples, "mlmon_feature_attribution_shift", "v2")
    assert shift["x3"] == pytest.approx(v2["x3"] - base["x3"], abs=1e-9)
    assert _by_feature(samples, "mlmon_feature_attribution_events", "v2") == dict.fromkeys(
        FEATURES, 2000.0
    )

    def ndcg(version: str) -> float:
        return samples[
            (
                "mlmon_attribution_drift_score",
                (("method", "ndcg"), ("model", MODEL), ("version", version)),
            )
        ]

    def drifted(version: str) -> float:
        return samples[("mlmon_attribution_drifted", (("model", MODEL), ("version", version)))]

    threshold = samples[("mlmon_threshold_attribution_ndcg_min", (("model", MODEL),))]
    assert threshold == 0.9
    assert ndcg("v1") > 0.99 and drifted("v1") == 0
    assert ndcg("v2") < threshold and drifted("v2") == 1
    # /stats says what /metrics says
    for version, per_feature in (("v1", v1), ("v2", v2)):
        got = stats[version]["attribution"]
        assert (got["ndcg"], got["reported"]) == (ndcg(version), True)
        assert got["drifted"] == (drifted(version) == 1)
        assert {k: f["mean_abs"] for k, f in got["features"].items()} == per_feature
        assert {f["events"] for f in got["features"].values()} == {2_000}
    assert stats["v2"]["attribution"]["features"]["x3"]["shift"] == shift["x3"]
    # the exporter's NDCG is Clarify's formula over the exported attributions
    names = list(FEATURES)
    rel = np.array([base[k] for k in names])
    order = np.argsort([-v2[k] for k in names])
    ideal = np.sort(rel)[::-1]
    discounts = 1 / np.log2(np.arange(2, len(names) + 2))
    assert ndcg("v2") == pytest.approx((rel[order] @ discounts) / (ideal @ discounts), abs=1e-12)


def _phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


@pytest.mark.integration
def test_columns_count_what_rows_count_and_bad_attributions_are_refused(linear_model):
    exporter = Exporter(linear_model)
    try:
        rows = _rows(600, seed=4)
        for r in rows[::7]:
            r["attributions"]["x5"] = None  # none for this feature
            r["attributions"]["not_a_feature"] = 1.0  # ignored, as unknown features are
        assert _post(exporter, {"events": [{**r, "version": "rows"} for r in rows]}).ok
        columns = {
            "version": ["cols"] * len(rows),
            "features": {k: [r["features"][k] for r in rows] for k in FEATURES},
            "attributions": {
                k: [r["attributions"].get(k) for r in rows] for k in [*FEATURES, "not_a_feature"]
            },
            "prediction": [r["prediction"] for r in rows],
            "scores": [r["scores"]["1"] for r in rows],
        }
        assert _post(exporter, {"columns": columns}).ok
        samples = parse_metrics(exporter.get("/metrics").text)
        for family in ("mlmon_feature_attribution", "mlmon_feature_attribution_events"):
            by_rows = _by_feature(samples, family, "rows")
            assert by_rows and by_rows == _by_feature(samples, family, "cols")
        assert _by_feature(samples, "mlmon_feature_attribution_events", "rows")["x5"] == 600 - 86

        good = rows[0]
        for bad, field, message in (
            ({"x1": "high"}, "attributions.x1", "expected a number, got string"),
            ([1, 2], "attributions", "expected an object of feature -> number, got array"),
            ({"x2": 10**400}, "attributions.x2", "number out of range"),
            # NaN and Infinity tokens (Python's and JavaScript's encoders write them)
            ({"x1": 0.5, "x3": float("nan")}, "attributions.x3", "expected a finite number"),
            ({"x4": float("-inf")}, "attributions.x4", "expected a finite number"),
        ):
            body = json.dumps({"events": [good, {**good, "attributions": bad}]})  # NaN tokens
            r = exporter.session.post(
                f"{exporter.url}/v1/models/{MODEL}/predictions",
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=30,
            )
            assert r.status_code == 400
            detail = r.json()["details"][0]
            assert (detail["index"], detail["field"], detail["message"]) == (1, field, message)
        after = parse_metrics(exporter.get("/metrics").text)
        assert _by_feature(after, "mlmon_feature_attribution_events", "rows") == _by_feature(
            samples, "mlmon_feature_attribution_events", "rows"
        )
    finally:
        exporter.stop()
