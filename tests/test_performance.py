"""Labels, performance, calibration, estimates, fairness and version comparison, each
against an independent reference (scikit-learn, scipy, closed forms) on the same events."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from helpers import FakeClock, make_env
from mlmon.cli import build_registry
from mlmon.core.baseline import SCORE_EDGES
from mlmon.core.config import load_config
from mlmon.core.monitor import Monitor
from mlmon.demo import synthetic
from mlmon.stats import performance as perf
from scipy import stats as st
from sklearn import metrics as skm

MODEL = "credit-risk"
TOL = 1e-9


@pytest.fixture(scope="module")
def binary_env(tmp_path_factory):
    spec = synthetic.TableSpec(
        numeric={"age": (40.0, 10.0), "income": (50.0, 15.0)},
        categorical={"country": {"DE": 0.6, "FR": 0.4}},
        weights={"age": 0.08, "income": -0.05},
        intercept=-0.7,
    )
    return make_env(
        tmp_path_factory.mktemp("perf"),
        spec,
        n_train=5_000,
        model_extra={
            "sensitive_attributes": ["gender"],
            "performance": {"min_labels": 50},
            "fairness": {"min_samples": 50, "reference_groups": {"gender": "m"}},
            "drift": {"min_samples": 50},
        },
    )


def _events(
    env, n: int, seed: int, version: str = "v1", prefix: str = "e", groups=("f", "m", "x")
) -> list[dict]:
    rows = synthetic.events(env.spec, n, seed=seed, version=version, id_prefix=prefix)
    rng = np.random.default_rng(seed)
    for r in rows:
        r["groups"] = {"gender": str(rng.choice(groups))}
    return rows


def _post(m, rows: list[dict]) -> None:
    m.ingest([{k: v for k, v in r.items() if k != "label"} for r in rows])


def _label(m, rows: list[dict], flip: float = 0.0, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    labels = []
    for r in rows:
        y = r["label"]
        if flip and rng.random() < flip:
            y = 1 - y
        r["_y"] = y
        labels.append({"id": r["id"], "label": y})
    outcomes, details = m.ingest_labels(labels)
    assert not details
    return outcomes


def test_binary_metrics_equal_scikit_learn(binary_env):
    mon = binary_env.monitor(FakeClock())
    m = mon.models[MODEL]
    rows = _events(binary_env, 2_000, seed=3)
    _post(m, rows)
    assert _label(m, rows, flip=0.1) == {"matched": 2_000}
    rep = m.views()[0].performance
    y = np.array([r["_y"] for r in rows])
    p = np.array([r["prediction"] for r in rows])
    s = np.array([r["scores"]["1"] for r in rows])
    assert rep.accuracy == pytest.approx(skm.accuracy_score(y, p), abs=TOL)
    c = rep.per_class["1"]
    assert c["precision"] == pytest.approx(skm.precision_score(y, p), abs=TOL)
    assert c["recall"] == pytest.approx(skm.recall_score(y, p), abs=TOL)
    assert c["f1"] == pytest.approx(skm.f1_score(y, p), abs=TOL)
    tn, fp, fn, tp = skm.confusion_matrix(y, p).ravel()
    assert c["false_negative_rate"] == pytest.approx(fn / (fn + tp), abs=TOL)
    assert c["false_positive_rate"] == pytest.approx(fp / (fp + tn), abs=TOL)
    assert c["specificity"] == pytest.approx(tn / (tn + fp), abs=TOL)
    assert rep.brier == pytest.approx(skm.brier_score_loss(y, s), abs=TOL)
    # AUC from binned scores equals scikit-learn on the scores quantised to the same bins
    grid = np.asarray(m.schema.score.edges[0][np.isfinite(m.schema.score.edges[0])])
    q = np.searchsorted(grid, s, side="left")
    assert rep.roc_auc == pytest.approx(skm.roc_auc_score(y, q), abs=TOL)
    assert rep.roc_auc == pytest.approx(skm.roc_auc_score(y, s), abs=0.01)
    # ECE: closed form over the 10 score buckets
    b = np.searchsorted(np.asarray(SCORE_EDGES), s, side="left")
    ece = sum(
        (b == k).sum() / len(s) * abs(s[b == k].mean() - y[b == k].mean())
        for k in range(10)
        if (b == k).any()
    )
    assert rep.calibration_error == pytest.approx(ece, abs=TOL)
    registry = build_registry(mon)
    lab = {"model": MODEL, "version": "v1"}
    assert registry.get_sample_value("mlmon_accuracy", lab) == pytest.approx(rep.accuracy)
    assert (
        registry.get_sample_value("mlmon_classification_outcomes_total", {**lab, "outcome": "fn"})
        == fn
    )
    assert registry.get_sample_value("mlmon_f1", {**lab, "class": "1"}) == pytest.approx(c["f1"])


def test_unmatched_duplicate_and_expired_labels_change_nothing(binary_env):
    clock = FakeClock()
    mon = binary_env.monitor(clock)
    m = mon.models[MODEL]
    rows = _events(binary_env, 200, seed=4)
    _post(m, rows)
    _label(m, rows[:100])
    before = m.views()[0].performance
    out, _ = m.ingest_labels(
        [{"id": "nope-1", "label": 1}, {"id": rows[0]["id"], "label": 0}, {"id": 12345, "label": 1}]
    )
    assert out == {"unmatched": 2, "duplicate": 1}
    after = m.views()[0].performance
    assert after.labelled == before.labelled == 100
    assert after.accuracy == before.accuracy
    clock.t += binary_env.config.models[0].labels.ttl_seconds + 1
    out, _ = m.ingest_labels([{"id": rows[150]["id"], "label": 1}])
    assert out == {"expired": 1}
    assert m.state.versions["v1"].total[m.layout.labelled.start] == 100  # all-time: unchanged
    registry = build_registry(mon)
    assert (
        registry.get_sample_value("mlmon_labels_total", {"model": MODEL, "outcome": "unmatched"})
        == 2
    )
    with pytest.raises(Exception) as ei:
        m.ingest_labels([{"id": "a"}, {"label": 1}, 7])
    assert [d["field"] for d in ei.value.details] == ["label", "id", ""]


def test_windowed_accuracy_falls_with_late_out_of_order_labels(binary_env):
    """Accuracy 0.9, then 0.7: labels arrive late and shuffled, some for unknown ids; the
    windowed accuracy is exactly the realised accuracy of the joined events."""
    clock = FakeClock()
    mon = binary_env.monitor(clock)
    m = mon.models[MODEL]
    good = _events(binary_env, 1_000, seed=5, prefix="g")
    bad = _events(binary_env, 1_000, seed=6, prefix="b")
    _post(m, good)
    clock.t += 600
    _post(m, bad)
    rng = np.random.default_rng(1)
    labels = []
    for rows, acc in ((good, 0.9), (bad, 0.7)):
        for r in rows:
            right = rng.random() < acc
            y = r["prediction"] if right else 1 - r["prediction"]
            r["_y"] = y
            labels.append({"id": r["id"], "label": y})
    labels += [{"id": f"ghost-{i}", "label": 1} for i in range(50)]
    order = rng.permutation(len(labels))
    clock.t += 900  # the labels come a quarter of an hour later
    for chunk in np.array_split(order, 7):
        m.ingest_labels([labels[i] for i in chunk])
    rep = m.views()[0].performance
    joined = good + bad
    realised = np.mean([r["_y"] == r["prediction"] for r in joined])
    assert rep.labelled == 2_000 and rep.accuracy == pytest.approx(realised, abs=TOL)
    assert 0.75 < realised < 0.85
    assert m.labels.outcomes["unmatched"] == 50
    # one hour later only the second half's labels... none left: all labels arrived together
    clock.t += 3_600
    assert m.views()[0].performance.labelled == 0


def test_multiclass_and_regression_equal_scikit_learn(tmp_path):
    from test_tasks import _monitor, _rows

    (tmp_path / "mc").mkdir()
    (tmp_path / "rg").mkdir()
    mon = _monitor(tmp_path / "mc", "multiclass")
    m = mon.models["m"]
    rows = _rows(600, seed=11, task="multiclass")
    rng = np.random.default_rng(2)
    classes = ["small", "medium", "large"]
    for i, r in enumerate(rows):
        r["id"] = i
        r["label"] = r["label"] if rng.random() < 0.7 else str(rng.choice(classes))
    m.ingest([{k: v for k, v in r.items() if k != "label"} for r in rows])
    m.ingest_labels([{"id": r["id"], "label": r["label"]} for r in rows])
    rep = m.views()[0].performance
    y = [r["label"] for r in rows]
    p = [r["prediction"] for r in rows]
    present = [c for c in classes if c in y]
    assert rep.accuracy == pytest.approx(skm.accuracy_score(y, p), abs=TOL)
    for c in present:
        assert rep.per_class[c]["precision"] == pytest.approx(
            skm.precision_score(y, p, labels=[c], average="macro", zero_division=np.nan), abs=TOL
        )
        assert rep.per_class[c]["recall"] == pytest.approx(
            skm.recall_score(y, p, labels=[c], average="macro"), abs=TOL
        )
    assert rep.per_class["__macro__"]["f1"] == pytest.approx(
        skm.f1_score(y, p, labels=present, average="macro"), abs=TOL
    )

    mon = _monitor(tmp_path / "rg", "regression")
    m = mon.models["m"]
    rows = _rows(500, seed=12)
    for i, r in enumerate(rows):
        r["id"] = f"r{i}"
    m.ingest([{k: v for k, v in r.items() if k != "label"} for r in rows])
    m.ingest_labels([{"id": r["id"], "label": r["label"]} for r in rows])
    reg = m.views()[0].performance.regression
    y = np.array([r["label"] for r in rows])
    p = np.array([r["prediction"] for r in rows])
    assert reg.mae == pytest.approx(skm.mean_absolute_error(y, p), abs=1e-9)
    assert reg.rmse == pytest.approx(np.sqrt(skm.mean_squared_error(y, p)), abs=1e-9)
    assert reg.r2 == pytest.approx(skm.r2_score(y, p), abs=1e-9)
    assert reg.bias == pytest.approx(np.mean(p - y), abs=1e-9)
    registry = build_registry(mon)
    assert registry.get_sample_value(
        "mlmon_regression_absolute_error_sum", {"model": "m", "version": "unversioned"}
    ) == pytest.approx(np.abs(p - y).sum())


def test_fairness_against_the_closed_form(binary_env):
    """Group f's selection rate falls to 70% of the reference group m's; x stays."""
    mon = binary_env.monitor(FakeClock())
    m = mon.models[MODEL]
    rng = np.random.default_rng(9)
    rows = []
    for group, rate, n in (("m", 0.5, 600), ("f", 0.35, 600), ("x", 0.5, 600)):
        for i in range(n):
            pred = int(rng.random() < rate)
            rows.append(
                {
                    "id": f"{group}{i}",
                    "features": {"age": 40.0},
                    "prediction": pred,
                    "scores": {"1": 0.7 if pred else 0.3},
                    "groups": {"gender": group},
                    "version": "v1",
                    "label": int(rng.random() < 0.5),
                }
            )
    _post(m, rows)
    m.ingest_labels([{"id": r["id"], "label": r["label"]} for r in rows])
    fr = m.views()[0].performance.fairness[0]
    by = {g: i for i, g in enumerate(fr.groups)}
    sel = {g: np.mean([r["prediction"] for r in rows if r["groups"]["gender"] == g]) for g in by}
    tpr = {
        g: np.mean(
            [r["prediction"] for r in rows if r["groups"]["gender"] == g and r["label"] == 1]
        )
        for g in by
    }
    for g, i in by.items():
        assert fr.metrics.selection_rate[i] == pytest.approx(sel[g], abs=TOL)
        assert fr.metrics.disparate_impact[i] == pytest.approx(sel[g] / sel["m"], abs=TOL)
        assert fr.metrics.demographic_parity_difference[i] == pytest.approx(
            sel[g] - sel["m"], abs=TOL
        )
        assert fr.metrics.equal_opportunity_difference[i] == pytest.approx(
            tpr[g] - tpr["m"], abs=TOL
        )
    assert fr.groups[fr.metrics.reference] == "m"
    registry = build_registry(mon)
    di = {
        g: registry.get_sample_value(
            "mlmon_fairness_disparate_impact",
            {"model": MODEL, "version": "v1", "attribute": "gender", "group": g, "reference": "m"},
        )
        for g in by
    }
    assert 0.6 < di["f"] < 0.8 and di["m"] == 1.0 and di["x"] > 0.8


def test_default_reference_is_the_most_favoured_group():
    g = perf.fairness(
        np.array([30, 60, 45]),
        np.array([100, 100, 100]),
        np.array([1, 1, 1]),
        np.array([2, 2, 2]),
        np.array([0, 0, 0]),
        np.array([98, 98, 98]),
        50,
    )
    assert g.reference == 1
    assert g.disparate_impact == pytest.approx([0.5, 1.0, 0.75])


def test_two_proportion_z_test_equals_chi_squared():
    for k1, n1, k2, n2 in ((420, 600, 4500, 5400), (30, 50, 35, 50), (5, 100, 9, 120)):
        _, p = perf.two_proportion_z_test(k1, n1, k2, n2)
        table = np.array([[k1, n1 - k1], [k2, n2 - k2]])
        assert p == pytest.approx(st.chi2_contingency(table, correction=False).pvalue, abs=TOL)


def test_canary_with_lower_accuracy_is_reported_once_enough_labels_arrived(binary_env):
    mon = binary_env.monitor(FakeClock())
    m = mon.models[MODEL]
    rng = np.random.default_rng(21)

    def round_(n: int, seed: int) -> None:
        rows = _events(binary_env, n, seed=seed, prefix=f"s{seed}-")
        for r in rows:
            r["version"] = "v2" if rng.random() < 0.1 else "v1"
        _post(m, rows)
        labels = []
        for r in rows:
            acc = 0.75 if r["version"] == "v2" else 0.9
            y = r["prediction"] if rng.random() < acc else 1 - r["prediction"]
            labels.append({"id": r["id"], "label": y})
        m.ingest_labels(labels)

    round_(300, 1)  # about 30 canary labels: below min_labels, nothing is claimed
    comps = m.comparisons(m.views())
    assert comps and np.isnan(comps[0].p_value)
    for seed in range(2, 12):
        round_(1_000, seed)
    c = m.comparisons(m.views())[0]
    assert (c.champion, c.challenger) == ("v1", "v2")
    assert c.accuracy_difference < -0.05 and c.p_value < 0.05
    registry = build_registry(mon)
    assert registry.get_sample_value(
        "mlmon_version_accuracy_p_value", {"model": MODEL, "version": "v2", "champion": "v1"}
    ) == pytest.approx(c.p_value)


def test_label_free_estimates_track_realised_performance(binary_env):
    """Labels drawn from the (calibrated) scores: the estimates, from the scores alone,
    agree with the realised values once the labels arrive."""
    mon = binary_env.monitor(FakeClock())
    m = mon.models[MODEL]
    rows = _events(binary_env, 4_000, seed=31)
    _post(m, rows)
    est = m.views()[0].performance.estimates
    assert est is not None
    _label(m, rows)
    rep = m.views()[0].performance
    assert est.accuracy == pytest.approx(rep.accuracy, abs=0.03)
    assert est.precision == pytest.approx(rep.per_class["1"]["precision"], abs=0.05)
    assert est.recall == pytest.approx(rep.per_class["1"]["recall"], abs=0.05)
    # the closed form on the raw scores (no recalibration)
    s = np.array([r["scores"]["1"] for r in rows])
    p = np.array([r["prediction"] for r in rows])
    raw = perf.binary_estimates(s[p == 1].sum(), (p == 1).sum(), s[p == 0].sum(), (p == 0).sum())
    assert raw.accuracy == pytest.approx(np.mean(np.where(p == 1, s, 1 - s)), abs=TOL)
    assert est.accuracy == pytest.approx(raw.accuracy, abs=0.03)


def test_labels_endpoint(binary_env, serve):
    _mon, registry, client = serve(binary_env, FakeClock())
    rows = _events(binary_env, 20, seed=41)
    r = client.post(
        f"/v1/models/{MODEL}/predictions",
        json={"events": [{k: v for k, v in x.items() if k != "label"} for x in rows]},
    )
    assert r.status_code == 200
    r = client.post(f"/v1/models/{MODEL}/labels", json={"id": rows[0]["id"], "label": 1})
    assert r.json == {"matched": 1, "unmatched": 0, "expired": 0, "duplicate": 0, "rejected": 0}
    r = client.post(
        f"/v1/models/{MODEL}/labels",
        json={"labels": [{"id": x["id"], "label": x["label"]} for x in rows]},
    )
    assert r.json["matched"] == 19 and r.json["duplicate"] == 1
    r = client.post(f"/v1/models/{MODEL}/labels", json={"labels": [{"id": "z", "label": [1]}]})
    assert r.status_code == 400 and r.json["details"][0] == {
        "index": 0,
        "field": "label",
        "message": "required: a class (string or integer)",
    }
    assert client.post("/v1/models/nope/labels", json={"id": 1, "label": 1}).status_code == 404
    stats = client.get(f"/v1/models/{MODEL}/stats").json
    assert stats["versions"]["v1"]["performance"]["labelled"] == 20
    assert (
        registry.get_sample_value("mlmon_labels_total", {"model": MODEL, "outcome": "duplicate"})
        == 1
    )


def test_group_cardinality_is_bounded(tmp_path, binary_env):
    doc = yaml.safe_load(binary_env.config_path.read_text())
    doc["limits"] = {"max_groups": 3}
    path = tmp_path / "c.yml"
    doc["models"][0]["baseline"] = str(binary_env.config.models[0].baseline)
    path.write_text(yaml.safe_dump(doc))
    mon = Monitor(load_config(path))
    m = mon.models[MODEL]
    m.ingest(
        [
            {"features": {"age": 1}, "prediction": 1, "groups": {"gender": f"g{i}"}}
            for i in range(50)
        ]
    )
    assert m.group_names[0] == ["g0", "g1", "g2", "__other__"]
    assert mon.counters.limit_hits["max_groups"] == 47


def test_the_champion_is_the_first_version_and_a_half_share_canary_does_not_take_it(binary_env):
    """v1 serves alone, then a canary v2 that is 6 points less accurate takes about half of
    the traffic, then more than half: v1 stays the champion at every step and the alert's
    condition (a negative difference with p below challenger_p_value_max) holds."""
    mon = binary_env.monitor(FakeClock())
    m = mon.models[MODEL]
    rng = np.random.default_rng(5)

    def round_(n: int, seed: int, canary_share: float) -> None:
        rows = _events(binary_env, n, seed=seed, prefix=f"h{seed}-")
        for r in rows:
            r["version"] = "v2" if rng.random() < canary_share else "v1"
        _post(m, rows)
        labels = []
        for r in rows:
            acc = 0.84 if r["version"] == "v2" else 0.9
            y = r["prediction"] if rng.random() < acc else 1 - r["prediction"]
            labels.append({"id": r["id"], "label": y})
        m.ingest_labels(labels)

    round_(500, 1, canary_share=0.0)
    for seed, share in enumerate([0.5, 0.5, 0.5, 0.55, 0.6, 0.6, 0.6, 0.6], start=2):
        round_(1_500, seed, canary_share=share)
        comps = m.comparisons(m.views())
        assert [(c.champion, c.challenger) for c in comps] == [("v1", "v2")]
    events = {v.snapshot.version: v.snapshot.window[m.layout.events.start] for v in m.views()}
    assert events["v2"] > events["v1"]  # the canary carries more traffic than the champion
    c = comps[0]
    assert c.accuracy_difference < -0.03
    assert c.p_value < m.thresholds["challenger_p_value_max"]


def test_the_baseline_regression_error_is_exported_and_optional(tmp_path):
    """mlmon_baseline_regression_error equals scikit-learn's MAE and RMSE on the training
    rows; a profile written before the field existed still loads and exports none."""
    from mlmon.core.baseline import content_hash, dumps, load_profile
    from test_tasks import _monitor, _rows

    mon = _monitor(tmp_path, "regression")
    train = _rows(4_000, 1)
    y = [r["label"] for r in train]
    p = [r["prediction"] for r in train]
    registry = build_registry(mon)
    for metric, expected in (
        ("mae", skm.mean_absolute_error(y, p)),
        ("rmse", np.sqrt(skm.mean_squared_error(y, p))),
    ):
        got = registry.get_sample_value(
            "mlmon_baseline_regression_error", {"model": "m", "metric": metric}
        )
        assert got == pytest.approx(expected, rel=1e-12)

    path = mon.models["m"].schema.config.baseline
    old = load_profile(path)
    del old["regression_error"]
    old["hash"] = content_hash(old)
    path.write_text(dumps(old))
    cfg = load_config(tmp_path / "c.yml")
    registry = build_registry(Monitor(cfg))
    names = {s.name for fam in registry.collect() for s in fam.samples}
    assert "mlmon_prediction_baseline_bucket" in names  # the old profile serves
    assert "mlmon_baseline_regression_error" not in names


def test_versions_first_seen_in_one_batch_are_ordered_by_their_share(binary_env):
    """A batch that starts with a canary's event still makes the majority version the
    champion: within a batch, versions are first seen in order of their share."""
    mon = binary_env.monitor(FakeClock())
    m = mon.models[MODEL]
    rows = _events(binary_env, 200, seed=77, prefix="o-")
    for i, r in enumerate(rows):
        r["version"] = "canary" if i % 10 == 0 else "main"  # the first event is the canary's
    _post(m, rows)
    assert [v.snapshot.version for v in m.views()] == ["main", "canary"]
    assert [(c.champion, c.challenger) for c in m.comparisons(m.views())] == [("main", "canary")]
