"""Feedback on a sender's mistakes, over real sockets to `mlmon serve`'s server: unknown
feature names reported and counted (bounded), labels outside the model's classes refused,
refused feature values counted by feature and reason, and 4xx answers in the log."""

from __future__ import annotations

import logging

import pytest
from helpers import FakeClock, Served
from mlmon.demo import synthetic
from test_ingest import _columns, fingerprint, same_state

URL = "/v1/models/credit-risk/predictions"
LABELS = "/v1/models/credit-risk/labels"
MODEL = {"model": "credit-risk"}


def unknown(registry, feature: str) -> float | None:
    return registry.get_sample_value(
        "mlmon_ingest_unknown_features_total", {**MODEL, "feature": feature}
    )


def refused(registry, feature: str, reason: str) -> float | None:
    return registry.get_sample_value(
        "mlmon_ingest_refused_values_total", {**MODEL, "feature": feature, "reason": reason}
    )


def unknown_series(registry) -> dict[str, float]:
    return {
        s.labels["feature"]: s.value
        for f in registry.collect()
        if f.name == "mlmon_ingest_unknown_features"
        for s in f.samples
        if s.name.endswith("_total")
    }


def rows(env, n: int, seed: int) -> list[dict]:
    return synthetic.without_labels(synthetic.events(env.spec, n, seed=seed, version="v1"))


def test_a_misspelt_feature_is_reported_and_counted_in_both_forms(small_env, serve):
    mon, registry, client = serve(small_env)
    events = rows(small_env, 30, seed=1)
    for ev in events:  # as many keys as the model has features: only the names differ
        ev["features"]["agee"] = ev["features"].pop("age")
    r = client.post(URL, json={"events": events})
    assert r.json == {"accepted": 30, "rejected": 0, "unknown_features": ["agee"]}
    for ev in events[::3]:
        ev["features"]["Country"] = "DE"
    r = client.post(URL, json={"events": events[:15]})
    assert r.status_code == 200
    assert r.json == {"accepted": 15, "rejected": 0, "unknown_features": ["Country", "agee"]}
    assert unknown(registry, "agee") == 45 and unknown(registry, "Country") == 5
    # the misspelt feature is missing, as before: nothing of it was read
    m = mon.models["credit-risk"]
    assert m.state.versions["v1"].total[m.layout.num_missing.start] == 45
    # the columnar form: a column under an unknown name counts once per row
    r = client.post(URL, json=_columns(events[:12]))
    assert r.status_code == 200 and r.json["unknown_features"] == ["Country", "agee"]
    assert unknown(registry, "agee") == 57 and unknown(registry, "Country") == 17
    # a correct batch answers as ever, and counts nothing
    r = client.post(URL, json={"events": rows(small_env, 5, seed=2)})
    assert r.json == {"accepted": 5, "rejected": 0}
    assert unknown_series(registry) == {"agee": 57, "Country": 17}


def test_a_flood_of_unknown_names_adds_a_bounded_number_of_series(small_env, serve):
    _mon, registry, client = serve(small_env)
    cap = 20  # limits.max_unknown_features
    names = [f"col_{i:05d}" for i in range(10_000)]
    events = [
        {"features": {"age": 40, "balance": 0, "country": "DE", name: 1}, "prediction": 1}
        for name in names
    ]
    r = client.post(URL, json={"events": events})
    assert r.status_code == 200 and r.json["accepted"] == 10_000
    assert r.json["unknown_features"] == sorted(names)[:20]
    series = unknown_series(registry)
    assert len(series) == cap + 1 and set(series) - {"__other__"} <= set(names)
    assert series["__other__"] == 10_000 - cap and sum(series.values()) == 10_000
    n_series = sum(len(f.samples) for f in registry.collect())
    # a second flood of other names, and a name too long to be a label value
    more = [{"features": {f"other_{i}": 1}, "prediction": 1} for i in range(5_000)]
    more.append({"features": {"x" * 1_000: 1}, "prediction": 1})
    assert client.post(URL, json={"events": more}).status_code == 200
    assert sum(len(f.samples) for f in registry.collect()) == n_series
    assert unknown_series(registry)["__other__"] == 10_000 - cap + 5_001
    hits = registry.get_sample_value("mlmon_limit_hits_total", {"limit": "max_unknown_features"})
    assert hits == 10_000 - cap + 5_000  # the over-long name is folded, but hits no cap


def test_a_label_outside_the_classes_is_refused_and_changes_nothing(small_env, serve):
    mon, registry, client = serve(small_env, FakeClock())
    events = synthetic.events(small_env.spec, 10, seed=3, version="v1")
    assert client.post(URL, json={"events": synthetic.without_labels(events)}).status_code == 200
    m = mon.models["credit-risk"]
    before, outcomes = fingerprint(mon), dict(m.labels.outcomes)
    labels = [{"id": e["id"], "label": e["label"]} for e in events]
    for bad in (2, "yes", "__other__", 1.0):
        r = client.post(
            LABELS, json={"labels": [*labels[:3], {"id": events[3]["id"], "label": bad}]}
        )
        assert r.status_code == 400 and r.json["reason"] == "invalid_event", r.json
        detail = r.json["details"][0]
        assert (detail["index"], detail["field"]) == (3, "label")
        if bad != 1.0:  # a float is no class at all
            assert "is not a class of this model" in detail["message"]
            assert "'0', '1'" in detail["message"]
        assert same_state(before, fingerprint(mon)) and dict(m.labels.outcomes) == outcomes
    rejected = {"endpoint": "labels", "reason": "invalid_event"}
    assert registry.get_sample_value("mlmon_ingest_rejected_requests_total", rejected) == 4
    # with ?partial=true the classes are applied, the stranger reported
    r = client.post(
        LABELS + "?partial=true", json={"labels": [*labels[:3], {"id": "x", "label": 7}]}
    )
    assert r.status_code == 200 and r.json["matched"] == 3 and r.json["rejected"] == 1


def test_a_regression_label_must_be_a_finite_number(tmp_path, serve):
    from test_tasks import _monitor

    _mon, _registry, client = serve(_monitor(tmp_path, "regression").config)
    url = "/v1/models/m/labels"
    body = '{"labels": [{"id": "a", "label": 1.5}, {"id": "b", "label": %s}]}'
    for bad in ("NaN", "Infinity", '"3"', "true", "1" * 400):
        r = client.post(url, data=body % bad, content_type="application/json")
        assert r.status_code == 400, (bad, r.text)
        assert r.json["details"] == [
            {"index": 1, "field": "label", "message": "required: a finite number"}
        ]
    r = client.post(url, data=body % "2", content_type="application/json")
    assert r.status_code == 200 and r.json["unmatched"] == 2


def bad_values() -> tuple[list[dict], dict[tuple[str, str], int]]:
    """Events with refused values, and what each (feature, reason) must count, worked out
    here by hand and not by the code under test."""
    good = {"age": 40, "balance": 1.5, "country": "DE"}
    wrong = [
        {"age": "forty"},  # type_error
        {"age": True, "country": "x" * 300},  # type_error, too_long
        {"balance": 10**400},  # out_of_range
        {"country": 3.5},  # type_error
        {"country": ["DE"], "balance": {"a": 1}},  # type_error twice
        {"age": [1]},  # type_error
    ]
    events = [{"features": {**good, **w}, "prediction": 1} for w in wrong]
    events.insert(2, {"features": good, "prediction": 0})
    want = {
        ("age", "type_error"): 3,
        ("country", "too_long"): 1,
        ("country", "type_error"): 2,
        ("balance", "out_of_range"): 1,
        ("balance", "type_error"): 1,
    }
    return events, want


def counted(registry) -> dict[tuple[str, str], float]:
    out = {}
    for f in registry.collect():
        if f.name == "mlmon_ingest_refused_values":
            for s in f.samples:
                if s.name.endswith("_total") and s.value:
                    out[(s.labels["feature"], s.labels["reason"])] = s.value
    return out


def test_refused_values_are_counted_by_feature_and_reason(small_env, serve):
    mon, registry, client = serve(small_env)
    # every configured feature starts at 0 for the reasons its kind can refuse
    assert refused(registry, "age", "out_of_range") == 0
    assert refused(registry, "country", "too_long") == 0
    assert refused(registry, "country", "out_of_range") is None
    events, want = bad_values()
    before = fingerprint(mon)
    body = {"events": events}
    # 10**400 travels as an exact JSON integer, which no float holds
    r = client.post(URL, json=body)
    assert r.status_code == 400 and r.json["reason"] == "invalid_event"
    assert same_state(before, fingerprint(mon))
    assert counted(registry) == want
    r = client.post(URL + "?partial=true", json=body)
    assert r.status_code == 200 and (r.json["accepted"], r.json["rejected"]) == (1, 6)
    assert counted(registry) == {k: 2 * v for k, v in want.items()}
    # the columnar form counts every refused value, though it details the first per column
    r = client.post(URL, json=_columns_of(events))
    assert r.status_code == 400
    assert counted(registry) == {k: 3 * v for k, v in want.items()}


def _columns_of(events: list[dict]) -> dict:
    names = ("age", "balance", "country")
    return {
        "columns": {
            "features": {n: [e["features"].get(n) for e in events] for n in names},
            "prediction": [e["prediction"] for e in events],
        }
    }


@pytest.fixture()
def served(small_env):
    """`mlmon serve`'s server, kept whole, so a test can set its refusal log's clock."""
    s = Served(small_env.config)
    yield s
    s.close()


def test_refusals_are_logged_at_debug_and_summed_up_at_most_once_a_minute(
    small_env, served, caplog
):
    caplog.set_level(logging.DEBUG, logger="mlmon.server")
    client = served.client
    clock = FakeClock(1000.0)
    served.service.app.refusals.clock = clock

    def logged(level: int) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == level]

    bad = {"features": {"age": "forty"}, "prediction": 1}
    assert client.post(URL, json=bad).status_code == 400
    assert logged(logging.DEBUG) == [
        "refused POST /v1/models/credit-risk/predictions: 400 invalid_event: "
        "features.age of event 0: expected a number, got string"
    ]
    assert logged(logging.WARNING) == [
        "1 request(s) refused: invalid_event=1 (each is logged at debug level; this "
        "summary comes at most once per 60 s)"
    ]
    for t in (1010.0, 1030.0, 1059.0):  # within the minute: counted, not warned
        clock.t = t
        assert client.post(URL, json=bad).status_code == 400
        assert client.post("/v1/models/nope/predictions", json=bad).status_code == 404
    assert len(logged(logging.WARNING)) == 1
    assert len(logged(logging.DEBUG)) == 7
    clock.t = 1061.0
    assert client.get("/nope").status_code == 404
    assert logged(logging.WARNING)[1] == (
        "7 request(s) refused in the last 61 s: invalid_event=3, not_found=1, "
        "unknown_model=3 (each is logged at debug level; this summary comes at most once "
        "per 60 s)"
    )
    n = len(caplog.records)
    assert client.post(URL, json={"events": rows(small_env, 3, seed=1)}).status_code == 200
    assert len(caplog.records) == n  # a success logs nothing


@pytest.mark.parametrize("distinct", [1, 4, 5, 60])
def test_unknown_names_are_counted_per_event_whatever_their_number(distinct):
    """Few unknown names are counted one pass each, many with one Counter: both give what
    a plain loop over every key of every event gives."""
    import random

    from mlmon.core.fields import unknown_features

    rng = random.Random(distinct)
    known = {"a": "numeric", "b": "categorical"}
    feats = []
    for _ in range(500):
        f = {k: 1 for k in known if rng.random() < 0.9}
        f.update((f"u{rng.randrange(distinct)}", 1) for _ in range(rng.randrange(3)))
        feats.append(f)
    want: dict[str, int] = {}
    for f in feats:
        for k in f:
            if k not in known:
                want[k] = want.get(k, 0) + 1
    assert len(want) == distinct
    assert unknown_features(feats, known, complete=False) == want
    complete = [f for f in feats if known.keys() <= f.keys()]
    want = {k: sum(k in f for f in complete) for k in want if any(k in f for f in complete)}
    assert unknown_features(complete, known, complete=True) == want
