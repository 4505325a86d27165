"""The columnar form of a batch is the row form transposed: every generated batch is accepted
in one form exactly when it is accepted in the other, and leaves the same state; oversized
ids and group values are refused in both forms and never reach /metrics or the snapshot."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import FakeClock, make_env, parse_metrics
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlmon.core.decoding import BadRequest
from mlmon.demo import synthetic
from test_ingest import fingerprint, same_state

ATTR = "gender"

numbers = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.sampled_from(["1", "x"]),
    st.just(10**400),
)
strings = st.one_of(st.sampled_from(["DE", "FR", "ES", "zz", "", "v1"]), st.text(max_size=4))
classes = st.one_of(
    st.none(), st.sampled_from([0, 1, "0", "1", "2", True]), st.integers(-(2**70), 2**70),
    st.floats(), st.just("c" * 300), st.just([1]),
)  # fmt: skip
categories = st.one_of(st.none(), strings, st.integers(0, 3), st.floats(), st.just("x" * 300))
ids = st.one_of(
    st.none(), st.text(max_size=6), st.integers(-(2**70), 2**70), st.floats(), st.booleans(),
    st.just("i" * 300),
)  # fmt: skip
versions = st.one_of(st.none(), st.sampled_from(["v1", "v2", "", "bad version", "x" * 65]))
errors = st.one_of(st.none(), st.none(), st.sampled_from(["timeout: x", "boom"]), st.just(3))
group_values = st.one_of(
    st.sampled_from(["f", "m", "x"]), st.integers(0, 2), st.none(), st.just("g" * 300),
    st.integers(2**64, 2**65), st.floats(), st.booleans(),
)  # fmt: skip
positive = st.one_of(st.none(), st.floats(0, 1), st.floats(), st.integers(-1, 2), st.booleans())


# Valid values only: half of the batches are drawn from these, so that accepted batches
# (and their state) are compared as often as refused ones.
clean = {
    "number": st.one_of(st.none(), st.floats(-1e6, 1e6), st.integers(-1000, 1000)),
    "category": st.one_of(st.none(), st.sampled_from(["DE", "FR", "ES", "zz"]), st.integers(0, 3)),
    "class": st.sampled_from([0, 1, "0", "1"]),
    "id": st.one_of(st.none(), st.text(max_size=6), st.integers(0, 2**40)),
    "version": st.sampled_from([None, "v1", "v2"]),
    "latency": st.one_of(st.none(), st.floats(0, 10)),
    "timestamp": st.one_of(st.none(), st.floats(1.7e9, 1.8e9)),
    "error": st.sampled_from([None, None, None, "timeout: x"]),
    "score": st.one_of(st.none(), st.floats(0, 1)),
    "group": st.sampled_from(["f", "m", 1]),
}
hostile = {
    "number": numbers,
    "category": categories,
    "class": classes,
    "id": ids,
    "version": versions,
    "latency": numbers,
    "timestamp": numbers,
    "error": errors,
    "score": positive,
    "group": group_values,
}


@st.composite
def batches(draw) -> list[dict]:
    n = draw(st.integers(1, 6))
    with_groups = draw(st.booleans())
    out = []
    for _ in range(n):
        v = draw(st.sampled_from([clean, clean, clean, hostile]))
        ev = {
            "features": {
                "age": draw(v["number"]),
                "balance": draw(v["number"]),
                "country": draw(v["category"]),
            },
            "prediction": draw(v["class"]),
            "id": draw(v["id"]),
            "version": draw(v["version"]),
            "latency_seconds": draw(v["latency"]),
            "timestamp": draw(v["timestamp"]),
            "error": draw(v["error"]),
            "scores": draw(v["score"]),
            "groups": {ATTR: draw(v["group"])} if with_groups else None,
        }
        out.append(ev)
    return out


def columns_of(events: list[dict]) -> dict:
    cols: dict = {
        "features": {k: [e["features"][k] for e in events] for k in ("age", "balance", "country")},
        "prediction": [e["prediction"] for e in events],
    }
    for key in ("id", "version", "latency_seconds", "timestamp", "error", "scores"):
        cols[key] = [e[key] for e in events]
    if events[0]["groups"] is not None:
        cols["groups"] = {ATTR: [e["groups"][ATTR] for e in events]}
    return cols


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    spec = synthetic.TableSpec(
        numeric={"age": (40.0, 10.0), "balance": (-200.0, 500.0)},
        categorical={"country": {"DE": 0.5, "FR": 0.3, "ES": 0.2}},
        weights={"age": 0.05},
        intercept=-2.0,
    )
    return make_env(
        tmp_path_factory.mktemp("columns"),
        spec,
        n_train=3_000,
        model_extra={"sensitive_attributes": [ATTR]},
    )


OUTCOMES = {True: 0, False: 0}


def _apply(model, form: str, events: list[dict]) -> bool:
    """Ingest ``events`` in one form; whether they were accepted."""
    try:
        if form == "rows":
            model.ingest(events)
        else:
            model.ingest_columns(columns_of(events))
    except BadRequest as e:
        assert e.status == 400 and e.reason == "invalid_event", e.body()
        return False
    return True


@settings(
    max_examples=1_500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=batches())
def test_rows_and_columns_accept_refuse_and_count_alike(env, events):
    by_rows = env.monitor(FakeClock())
    by_cols = env.monitor(FakeClock())
    a, b = by_rows.models["credit-risk"], by_cols.models["credit-risk"]
    accepted = _apply(a, "rows", events)
    assert _apply(b, "columns", events) == accepted, events
    OUTCOMES[accepted] += 1
    assert same_state(fingerprint(by_rows), fingerprint(by_cols)), events
    for x, y in zip(a.state.versions.values(), b.state.versions.values(), strict=True):
        assert np.allclose(x.ftotal, y.ftotal, equal_nan=True)
    assert a.group_names == b.group_names
    assert sorted(a.labels._items) == sorted(b.labels._items)


def test_the_property_saw_both_outcomes():
    """The comparison above is worth something only if both forms were accepted often."""
    assert OUTCOMES[True] > 200 and OUTCOMES[False] > 200, OUTCOMES


@pytest.mark.parametrize(
    ("field", "value"),
    [("id", "i" * 1_000_000), ("groups", "g" * 400_000), ("id", 2**80), ("groups", 2**80)],
)
def test_oversized_ids_and_groups_are_refused_in_both_forms(env, serve, tmp_path, field, value):
    """A 1M-character id or a 400 KB group value (or a huge integer for either) gets a
    400 in a row batch and in a columnar batch; /metrics and the snapshot keep their size."""
    from dataclasses import replace

    cfg = env.config
    cfg = replace(cfg, server=replace(cfg.server, snapshot_dir=tmp_path))
    mon, _, client = serve(cfg)
    rows = synthetic.without_labels(synthetic.events(env.spec, 50, seed=3, id_prefix="r"))
    for r in rows:
        r["groups"] = {ATTR: "f"}
    url = "/v1/models/credit-risk/predictions"
    assert client.post(url, json={"events": rows}).status_code == 200
    mon.write_snapshots()
    snapshot = next(tmp_path.glob("*.npz"))
    series = set(parse_metrics(client.get("/metrics").text))
    size = snapshot.stat().st_size
    bad = [dict(r) for r in rows[:3]]
    if field == "id":
        bad[1]["id"] = value
    else:
        bad[1]["groups"] = {ATTR: value}
    r = client.post(url, json={"events": bad})
    assert r.status_code == 400 and r.json["details"][0]["index"] == 1
    cols = {
        "features": {k: [e["features"].get(k) for e in bad] for k in ("age", "balance", "country")},
        "prediction": [e["prediction"] for e in bad],
        "id": [e["id"] for e in bad],
        "groups": {ATTR: [e["groups"][ATTR] for e in bad]},
    }
    r = client.post(url, json={"columns": cols})
    assert r.status_code == 400 and r.json["details"][0]["index"] == 1, r.json
    assert r.json["details"][0]["field"].startswith(field)
    mon.write_snapshots()
    metrics = client.get("/metrics").text
    assert set(parse_metrics(metrics)) == series and str(value)[:1000] not in metrics
    assert abs(snapshot.stat().st_size - size) < 512


def test_a_batch_of_no_events_is_accepted_as_nothing_in_both_forms(env, serve):
    """Zero events with a numeric field column: accepted as nothing, as zero rows are,
    not a crash on the empty column."""
    mon, _, client = serve(env.config)
    url = "/v1/models/credit-risk/predictions"
    empty = {"features": {}, "prediction": [], "latency_seconds": [], "timestamp": []}
    for body in ({"events": []}, {"columns": empty}):
        r = client.post(url, json=body)
        assert (r.status_code, r.json) == (200, {"accepted": 0, "rejected": 0}), body
    assert mon.models["credit-risk"].state.versions == {}
