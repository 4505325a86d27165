"""The ingest API, over real sockets to `mlmon serve`'s server: accepted shapes, and bad
input refused precisely without touching state."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from helpers import FakeClock
from mlmon.core.state import Layout
from mlmon.demo import synthetic

URL = "/v1/models/credit-risk/predictions"


def fingerprint(mon) -> dict:
    out = {}
    for name, m in mon.models.items():
        for v, vs in m.state.versions.items():
            out[(name, v)] = (vs.total.copy(), vs.window.copy(), vs.ring.copy(), vs.ftotal.copy())
    return out


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        all(np.array_equal(x, y) for x, y in zip(a[k], b[k], strict=True)) for k in a
    )


def rejects(registry, reason: str) -> float:
    return (
        registry.get_sample_value(
            "mlmon_ingest_rejected_requests_total", {"endpoint": "predictions", "reason": reason}
        )
        or 0.0
    )


@pytest.fixture()
def api(small_env, serve):
    mon, registry, client = serve(small_env)
    events = synthetic.without_labels(synthetic.events(small_env.spec, 50, seed=9, version="v1"))
    r = client.post(URL, json={"events": events})
    assert r.status_code == 200 and r.json == {"accepted": 50, "rejected": 0}
    return mon, registry, client, events


def test_single_event_batch_and_ndjson(api):
    mon, registry, client, events = api
    m = mon.models["credit-risk"]
    before = m.state.versions["v1"].total[m.layout.events.start]
    assert client.post(URL, json=events[0]).json == {"accepted": 1, "rejected": 0}
    body = "\n".join(json.dumps(e) for e in events[:7]) + "\n"
    r = client.post(URL, data=body, content_type="application/x-ndjson")
    assert r.json == {"accepted": 7, "rejected": 0}
    r = client.post(
        URL,
        data=gzip.compress(json.dumps({"events": events[:2]}).encode()),
        headers={"Content-Encoding": "gzip"},
        content_type="application/json",
    )
    assert r.json == {"accepted": 2, "rejected": 0}
    assert m.state.versions["v1"].total[m.layout.events.start] == before + 10
    assert registry.get_sample_value("mlmon_ingest_events_total", {"model": "credit-risk"}) == 60


BAD = [
    # (body or json, content type, status, reason, index, field)
    (b'{"events": [', "application/json", 400, "malformed_json", None, None),
    (b"\xff\xfe", "application/json", 400, "malformed_json", None, None),
    ({"events": [{"features": {"age": 1}, "prediction": 1}, 7]}, None, 400, "invalid_event", 1, ""),
    ({"events": "nope"}, None, 400, "invalid_event", None, "events"),
    ({"prediction": 1}, None, 400, "invalid_event", 0, "features"),
    ({"features": {"age": 30}}, None, 400, "invalid_event", 0, "prediction"),
    ({"features": [1, 2]}, None, 400, "invalid_event", 0, "features"),
    (
        {
            "events": [
                {"features": {"age": 30}, "prediction": 1},
                {"features": {"age": "forty"}, "prediction": 1},
            ]
        },
        None,
        400,
        "invalid_event",
        1,
        "features.age",
    ),
    ({"features": {"age": True}, "prediction": 1}, None, 400, "invalid_event", 0, "features.age"),
    (
        {"features": {"country": 3.5}, "prediction": 1},
        None,
        400,
        "invalid_event",
        0,
        "features.country",
    ),
    ({"features": {"age": 1}, "prediction": [1]}, None, 400, "invalid_event", 0, "prediction"),
    (
        {"features": {"age": 1}, "prediction": 1, "scores": {"1": 1.5}},
        None,
        400,
        "invalid_event",
        0,
        "scores",
    ),
    (
        {"features": {"age": 1}, "prediction": 1, "latency_seconds": -1},
        None,
        400,
        "invalid_event",
        0,
        "latency_seconds",
    ),
    (
        {"features": {"age": 1}, "prediction": 1, "version": "v 1/../x"},
        None,
        400,
        "invalid_event",
        0,
        "version",
    ),
    (
        {"features": {"age": 1}, "prediction": 1, "timestamp": "yesterday"},
        None,
        400,
        "invalid_event",
        0,
        "timestamp",
    ),
    (
        {"features": {"country": "x" * 300}, "prediction": 1},
        None,
        400,
        "invalid_event",
        0,
        "features.country",
    ),
    (b"a=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type", None, None),
]


@pytest.mark.parametrize(("body", "ctype", "status", "reason", "index", "field"), BAD)
def test_bad_input_is_refused_precisely_and_changes_nothing(
    api, body, ctype, status, reason, index, field
):
    mon, registry, client, _ = api
    before, rejected = fingerprint(mon), rejects(registry, reason)
    if isinstance(body, bytes):
        r = client.post(URL, data=body, content_type=ctype)
    else:
        r = client.post(URL, json=body)
    assert r.status_code == status, r.json
    assert r.is_json and r.json["reason"] == reason and r.json["error"]
    if index is not None or field is not None:
        detail = r.json["details"][0]
        assert detail.get("index") == index
        assert detail["field"] == field
        assert detail["message"]
    assert same_state(before, fingerprint(mon))
    assert rejects(registry, reason) == rejected + 1


def test_unknown_model_is_404_and_creates_no_series(api):
    mon, registry, client, events = api
    before = fingerprint(mon)
    r = client.post("/v1/models/nope/predictions", json=events[0])
    assert r.status_code == 404 and r.json["reason"] == "unknown_model"
    assert "credit-risk" in r.json["details"][0]["message"]
    assert rejects(registry, "unknown_model") == 1
    assert registry.get_sample_value("mlmon_ingest_events_total", {"model": "nope"}) is None
    assert same_state(before, fingerprint(mon))
    assert client.get("/v1/models/nope/stats").status_code == 404


def test_oversized_body_and_batch_are_413(small_env, serve):
    import yaml
    from mlmon.core.config import load_config

    doc = yaml.safe_load(small_env.config_path.read_text())
    doc["limits"] = {"max_body_bytes": 4096, "max_batch_events": 5}
    small_env.config_path.write_text(yaml.safe_dump(doc))
    mon, registry, client = serve(load_config(small_env.config_path))
    events = synthetic.without_labels(synthetic.events(small_env.spec, 40, seed=1))
    r = client.post(URL, json={"events": events})
    assert r.status_code == 413 and r.json["reason"] == "body_too_large"
    r = client.post(URL, json={"events": events[:6]})
    assert r.status_code == 413 and r.json["reason"] == "batch_too_large"
    bomb = gzip.compress(b'{"events": [' + b" " * 100_000 + b"]}")
    r = client.post(
        URL, data=bomb, headers={"Content-Encoding": "gzip"}, content_type="application/json"
    )
    assert r.status_code == 413
    assert client.post(URL, json={"events": events[:5]}).status_code == 200
    assert not any(
        v.total[mon.models["credit-risk"].layout.events.start] != 5
        for v in mon.models["credit-risk"].state.versions.values()
    )
    assert (
        registry.get_sample_value(
            "mlmon_ingest_rejected_requests_total",
            {"endpoint": "predictions", "reason": "body_too_large"},
        )
        == 2
    )


def test_nan_and_infinity_count_as_missing(api):
    mon, registry, client, _ = api
    m = mon.models["credit-risk"]
    body = (
        '{"events": [{"features": {"age": NaN, "balance": Infinity, "country": NaN},'
        ' "prediction": 1}, {"features": {"age": -Infinity, "balance": null},'
        ' "prediction": 0}]}'
    )
    r = client.post(URL, data=body, content_type="application/json")
    assert r.status_code == 200 and r.json["accepted"] == 2
    t = m.state.versions["unversioned"].total
    missing = Layout.view(t, m.layout.num_missing)
    assert list(missing) == [2, 2]  # age, balance
    assert Layout.view(t, m.layout.cat_missing)[0] == 2  # country: NaN once, absent once
    assert Layout.view(t, m.layout.num_bins).sum() == 0
    assert (
        registry.get_sample_value(
            "mlmon_feature_missing_total",
            {"model": "credit-risk", "version": "unversioned", "feature": "age"},
        )
        == 2
    )


def test_unseen_category_flood_lands_in_other_and_adds_no_series(api, small_env):
    _mon, registry, client, first = api
    # past min_samples, so drift series exist before the flood as after it
    more = synthetic.without_labels(synthetic.events(small_env.spec, 200, seed=3, version="v1"))
    assert client.post(URL, json={"events": more}).status_code == 200
    n_series = sum(len(f.samples) for f in registry.collect())
    events = [
        {
            "features": {"age": 40, "balance": 0, "country": f"zz-{i}"},
            "prediction": 1,
            "version": "v1",
        }
        for i in range(10_000)
    ]
    r = client.post(URL, json={"events": events})
    assert r.status_code == 200
    after = sum(len(f.samples) for f in registry.collect())
    assert after == n_series
    assert (
        registry.get_sample_value(
            "mlmon_feature_category_total",
            {
                "model": "credit-risk",
                "version": "v1",
                "feature": "country",
                "category": "__other__",
            },
        )
        == 10_000
    )
    assert registry.get_sample_value(
        "mlmon_feature_category_total",
        {"model": "credit-risk", "version": "v1", "feature": "country", "category": "DE"},
    ) == sum(e["features"]["country"] == "DE" for e in first + more)


def test_partial_acceptance_applies_the_valid_events(api):
    _mon, registry, client, events = api
    batch = [events[0], {"features": {"age": "x"}, "prediction": 1}, events[1]]
    r = client.post(URL + "?partial=true", json={"events": batch})
    assert r.status_code == 200
    assert r.json["accepted"] == 2 and r.json["rejected"] == 1
    assert r.json["details"][0]["index"] == 1
    assert (
        registry.get_sample_value("mlmon_ingest_rejected_events_total", {"model": "credit-risk"})
        == 1
    )


def test_failed_inference_counts_in_service_metrics_only(api):
    _mon, registry, client, _ = api
    r = client.post(
        URL,
        json={
            "events": [
                {"error": "timeout: upstream took 30s", "version": "v1", "latency_seconds": 30},
                {"error": "CUDA out of memory", "version": "v1"},
            ]
        },
    )
    assert r.status_code == 200
    labels = {"model": "credit-risk", "version": "v1"}
    assert (
        registry.get_sample_value("mlmon_inference_failures_total", {**labels, "reason": "timeout"})
        == 1
    )
    assert (
        registry.get_sample_value("mlmon_inference_failures_total", {**labels, "reason": "other"})
        == 1
    )
    assert registry.get_sample_value("mlmon_inference_requests_total", labels) == 52
    assert registry.get_sample_value("mlmon_profiled_events_total", labels) == 50
    assert (
        registry.get_sample_value(
            "mlmon_inference_latency_seconds_bucket", {**labels, "le": "10.0"}
        )
        == 0
    )
    assert registry.get_sample_value("mlmon_inference_latency_seconds_count", labels) == 1


def test_versions_beyond_the_cap_fold_into_other(small_env):
    import yaml
    from mlmon.core.config import load_config
    from mlmon.core.monitor import Monitor

    doc = yaml.safe_load(small_env.config_path.read_text())
    doc["limits"] = {"max_versions": 3}
    small_env.config_path.write_text(yaml.safe_dump(doc))
    mon = Monitor(load_config(small_env.config_path))
    m = mon.models["credit-risk"]
    for i in range(6):
        m.ingest([{"features": {"age": 1}, "prediction": 1, "version": f"v{i}"}])
    assert set(m.state.versions) == {"v0", "v1", "v2", "__other__"}
    assert m.state.versions["__other__"].total[m.layout.events.start] == 3
    assert mon.counters.limit_hits["max_versions"] == 3


def test_service_endpoints(api):
    _mon, _registry, client, _ = api
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    page = client.get("/").data.decode()
    assert "credit-risk" in page and "/v1/models/credit-risk/stats" in page
    models = client.get("/v1/models").json["models"]
    assert models[0]["name"] == "credit-risk" and models[0]["versions"]["v1"]["window_events"] == 50
    assert client.get("/nope").status_code == 404 and client.get("/nope").is_json
    assert client.get(URL).status_code == 405


def _columns(rows: list[dict]) -> dict:
    names = list(rows[0]["features"])
    return {
        "columns": {
            "version": [r.get("version", "unversioned") for r in rows],
            "id": [r["id"] for r in rows],
            "features": {n: [r["features"].get(n) for r in rows] for n in names},
            "prediction": [r["prediction"] for r in rows],
            "scores": {"1": [r["scores"]["1"] for r in rows]},
            "latency_seconds": [r.get("latency_seconds") for r in rows],
        }
    }


def test_columnar_batch_equals_the_same_rows(small_env, serve):
    rows = synthetic.without_labels(synthetic.events(small_env.spec, 300, seed=12, version="v1"))
    for i, r in enumerate(rows):
        r["latency_seconds"] = 0.001 * i
    rows[3]["features"]["age"] = None
    rows[4]["features"]["country"] = "unseen"
    mon_rows, _, client_rows = serve(small_env, FakeClock())
    mon_cols, _registry, client_cols = serve(small_env, FakeClock())
    assert client_rows.post(URL, json={"events": rows}).status_code == 200
    r = client_cols.post(URL, json=_columns(rows))
    assert r.status_code == 200 and r.json["accepted"] == 300
    a = mon_rows.models["credit-risk"].state.versions["v1"]
    b = mon_cols.models["credit-risk"].state.versions["v1"]
    assert np.array_equal(a.total, b.total) and np.array_equal(a.window, b.window)
    assert np.allclose(a.ftotal, b.ftotal)
    assert len(mon_cols.models["credit-risk"].labels) == 300


@pytest.mark.parametrize(
    ("mutate", "field", "index"),
    [
        (lambda c: c["features"]["age"].__setitem__(7, "x"), "features.age", 7),
        (lambda c: c["features"]["balance"].pop(), "features.balance", 0),
        (lambda c: c["prediction"].__setitem__(2, [1]), "prediction", 2),
        (lambda c: c["scores"]["1"].__setitem__(5, 2.0), "scores", 5),
        (lambda c: c.__setitem__("version", 7), "version", 0),
    ],
)
def test_bad_columnar_batches_are_refused_and_change_nothing(api, small_env, mutate, field, index):
    mon, _registry, client, _ = api
    rows = synthetic.without_labels(synthetic.events(small_env.spec, 20, seed=13))
    body = _columns(rows)
    mutate(body["columns"])
    before = fingerprint(mon)
    r = client.post(URL, json=body)
    assert r.status_code == 400 and r.json["reason"] == "invalid_event"
    assert {"index": index, "field": field} == {
        k: r.json["details"][0][k] for k in ("index", "field")
    }
    assert same_state(before, fingerprint(mon))


@pytest.mark.parametrize("rows", [1, 7, 40, 3000])
def test_both_binning_paths_equal_searchsorted(wide_env, rows):
    """Small batches are binned by comparing with every edge at once, large ones by a
    binary search per column: both give searchsorted(edges, x, side="left") exactly,
    including values equal to an edge, far outside the baseline, and missing ones."""
    block = wide_env.monitor().models["credit-risk"].schema.numeric
    rng = np.random.default_rng(rows)
    f = len(block)
    edge = block.edges[np.arange(f), rng.integers(0, 50, f)]
    x = np.where(rng.random((rows, f)) < 0.3, edge, rng.normal(0, 80, (rows, f)))
    x[rng.random((rows, f)) < 0.1] = np.nan
    x[0, 0], x[-1, -1] = -1e300, 1e300
    got = block.bin(x)
    if rows in (1, 3000):  # one of each path
        assert (rows * block.edges.size <= block.BROADCAST_LIMIT) == (rows == 1)
    present = ~np.isnan(x)
    for j in range(f):
        want = np.searchsorted(block.edges[j], x[:, j], side="left")
        assert (got[:, j][present[:, j]] == want[present[:, j]]).all()


def test_many_version_names_cost_a_few_deltas(small_env, monkeypatch):
    """A batch naming hundreds of versions is folded into the version cap before its
    counts are computed: at most max_versions + 1 deltas, whatever the names."""
    import mlmon.core.state

    calls = []
    real = mlmon.core.state.batch_delta
    monkeypatch.setattr(
        mlmon.core.state, "batch_delta", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    mon = small_env.monitor()
    m = mon.models["credit-risk"]
    n = 300
    m.ingest_columns(
        {
            "features": {"age": [30] * n},
            "prediction": [1] * n,
            "version": [f"v{i}" for i in range(n)],
        }
    )
    cap = m.limits["max_versions"]
    assert len(calls) <= cap + 1 and len(m.state.versions) <= cap + 1
    assert m.state.versions["__other__"].total[m.layout.events.start] == n - cap
    assert mon.counters.limit_hits["max_versions"] == n - cap


def test_gunzip_reads_every_member_and_refuses_what_is_no_gzip():
    """The bounded decompressor reads what `gzip.decompress` reads (several members), and
    refuses trailing bytes, truncation and output past the limit."""
    from mlmon.core.decoding import BadRequest, gunzip

    a, b = gzip.compress(b'{"x": '), gzip.compress(b"1}")
    assert gunzip(a + b, 100) == gzip.decompress(a + b) == b'{"x": 1}'
    for bad, status in ((a + b"garbage", 400), (a[:-3], 400), (b"", 400)):
        with pytest.raises(BadRequest) as e:
            gunzip(bad, 100)
        assert e.value.status == status and e.value.reason == "malformed_body"
    with pytest.raises(BadRequest) as e:
        gunzip(gzip.compress(b" " * 101), 100)
    assert e.value.status == 413
