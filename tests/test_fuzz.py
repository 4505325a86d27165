"""Property-based fuzzing of the ingest, label and admin paths, over real sockets to
`mlmon serve`'s server (more than 5,000 generated requests): arbitrary JSON and bytes never
produce a 5xx or an exception, refused requests change nothing, and after every request each
feature's value bins plus its missing count equal the profiled events."""

from __future__ import annotations

import json

import numpy as np
from helpers import Served
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlmon.core.state import Layout
from mlmon.http.auth import Tokens
from test_ingest import fingerprint, same_state

URL = "/v1/models/credit-risk"
ADMIN = "fuzz-admin-token"
FIELDS = [
    "id",
    "version",
    "timestamp",
    "features",
    "prediction",
    "scores",
    "latency_seconds",
    "groups",
    "error",
    "label",
    "events",
    "labels",
    "columns",
]
FEATURES = ["age", "balance", "country", "unknown"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["DE", "FR", "1", "0", "v1"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(FIELDS + FEATURES), st.text(max_size=5)), inner, max_size=5
        ),
    ),
    max_leaves=12,
)
events = st.fixed_dictionaries(
    {"features": st.dictionaries(st.sampled_from(FEATURES), scalars, max_size=4)},
    optional={
        k: scalars
        for k in ("prediction", "version", "id", "scores", "latency_seconds", "error", "timestamp")
    }
    | {"groups": json_values},
)
bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.lists(events, max_size=5).map(lambda evs: json.dumps({"events": evs}).encode()),
    events.map(lambda e: json.dumps(e).encode()),
    st.binary(max_size=64),
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/x-ndjson",
        "text/plain",
        "",
        "application/json; charset=utf-8",
    ]
)

_apps: dict[str, tuple] = {}


def _app(env):
    """One served exporter per test's environment (hypothesis calls a test many times)."""
    key = str(env.dir)
    if key not in _apps:
        for served, _ in _apps.values():
            served.close()
        _apps.clear()
        served = Served(env.config, tokens=Tokens(admin=ADMIN))
        _apps[key] = (served, served.client)
    served, client = _apps[key]
    return served.monitor, client


def _invariants(mon) -> None:
    m = mon.models["credit-risk"]
    lay = m.layout
    for vs in m.state.versions.values():
        for vec in (vs.total, vs.window):
            ok = vec[lay.ok_events.start]
            num = Layout.view(vec, lay.num_bins).sum(axis=1) + Layout.view(vec, lay.num_missing)
            cat = Layout.view(vec, lay.cat_bins).sum(axis=1) + Layout.view(vec, lay.cat_missing)
            assert np.all(num == ok) and np.all(cat == ok)
            assert vec[lay.events.start] >= ok


def _check(mon, client, method: str, path: str, body: bytes, ctype: str) -> None:
    before = fingerprint(mon)
    headers = {"Authorization": f"Bearer {ADMIN}"} if "thresholds" in path else {}
    r = client.open(path, method=method, data=body, content_type=ctype or None, headers=headers)
    assert r.status_code < 500, (r.status_code, r.data[:300], body[:300])
    assert r.is_json
    if r.status_code >= 400:
        assert same_state(before, fingerprint(mon))
    _invariants(mon)


SETTINGS = settings(
    max_examples=1_500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(body=bodies, ctype=content_types)
def test_fuzz_predictions(small_env, body, ctype):
    mon, client = _app(small_env)
    _check(mon, client, "POST", f"{URL}/predictions", body, ctype)


@SETTINGS
@given(body=bodies, ctype=content_types, partial=st.booleans())
def test_fuzz_predictions_partial(small_env, body, ctype, partial):
    mon, client = _app(small_env)
    _check(mon, client, "POST", f"{URL}/predictions?partial={str(partial).lower()}", body, ctype)


@SETTINGS
@given(
    body=st.one_of(
        bodies,
        st.lists(st.fixed_dictionaries({"id": scalars, "label": scalars}), max_size=5).map(
            lambda ls: json.dumps({"labels": ls}).encode()
        ),
    ),
    ctype=content_types,
)
def test_fuzz_labels(small_env, body, ctype):
    mon, client = _app(small_env)
    _check(mon, client, "POST", f"{URL}/labels", body, ctype)


@settings(
    max_examples=800, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        bodies,
        st.dictionaries(
            st.sampled_from(["drift_ks_min", "error_ratio_max", "nope"]), scalars, max_size=3
        ).map(lambda d: json.dumps(d).encode()),
    ),
    ctype=content_types,
)
def test_fuzz_thresholds(small_env, body, ctype):
    mon, client = _app(small_env)
    _check(mon, client, "PUT", f"{URL}/thresholds", body, ctype)
    for v in mon.models["credit-risk"].thresholds.values():
        assert isinstance(v, float) and v >= 0 and np.isfinite(v)


config_docs = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(
                [
                    "models",
                    "name",
                    "task",
                    "baseline",
                    "features",
                    "drift",
                    "thresholds",
                    "window",
                    "limits",
                    "server",
                    "labels",
                    "fairness",
                    "performance",
                    "classes",
                    "positive_class",
                    "defaults",
                    "length",
                    "age",
                    "max_body_bytes",
                ]
            ),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=15,
)


@settings(max_examples=1_000, deadline=None)
@given(doc=config_docs)
def test_fuzz_config_only_raises_config_errors(doc):
    """Any document is either a valid config or a ConfigError listing its problems."""
    from pathlib import Path

    from mlmon.core.config import ConfigError, parse_config

    try:
        parse_config(doc, Path("/nonexistent"))
    except ConfigError as e:
        assert e.errors and all(isinstance(x, str) and ": " in x for x in e.errors)
