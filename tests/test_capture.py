"""Payload decoding of the proxy: each protocol's documented shapes become the same events."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from pathlib import Path

import pytest
from mlmon.capture.protocols import CaptureError, Capturer, Exchange, classify
from mlmon.core.config import GenericSettings, ProxySettings, RouteSettings, load_config
from mlmon.core.monitor import Monitor

ROOT = Path(__file__).resolve().parents[1]
NUMERIC = ["age", "income", "debt_ratio", "credit_lines", "months_employed"]
ROWS = [
    {"age": 30.5, "income": 41000, "debt_ratio": 0.31, "credit_lines": 3, "months_employed": 20,
     "country": "DE", "channel": "web"},
    {"age": 52, "income": 83000.25, "debt_ratio": 0.1, "credit_lines": 6, "months_employed": 140,
     "country": "FR", "channel": "branch"},
    {"age": 23, "income": None, "debt_ratio": 0.72, "credit_lines": 1, "months_employed": 2,
     "country": "XX", "channel": "partner"},
]  # fmt: skip
ORDER = [*NUMERIC, "country", "channel"]
PREDS = [0, 1, 1]


@pytest.fixture(scope="module")
def capturer() -> Capturer:
    mon = Monitor(load_config(ROOT / "examples" / "mlmon.yml"))
    settings = ProxySettings(upstream="http://127.0.0.1:1", model="credit-risk")
    return Capturer(settings, {n: m.schema for n, m in mon.models.items()})


def exchange(protocol, req, resp, model="credit-risk", status=200, **kw) -> Exchange:
    enc = lambda d: d if isinstance(d, bytes) else json.dumps(d).encode()  # noqa: E731
    return Exchange(
        protocol,
        model if protocol in ("kserve_v1", "oip_v2") else None,
        kw.pop("path_version", None),
        1_800_000_000.0,
        request_body=enc(req),
        status=status,
        response_body=enc(resp),
        latency=0.012,
        **kw,
    )


def features_of(events):
    return [e["features"] for e in events]


def expected_features(rows=ROWS):
    return [{k: r[k] for k in ORDER} for r in rows]


def test_paths_choose_the_protocol():
    s = ProxySettings(
        upstream="http://x:1", generic=GenericSettings("/score", "request.a", "response.b")
    )
    assert classify("POST", "/v1/models/m:predict", s) == ("kserve_v1", "m", None)
    assert classify("POST", "/v1/models/m/versions/3:predict", s) == ("kserve_v1", "m", "3")
    assert classify("POST", "/v2/models/m/infer", s) == ("oip_v2", "m", None)
    assert classify("POST", "/v2/models/m/versions/v7/infer?x=1", s) == ("oip_v2", "m", "v7")
    assert classify("POST", "/invocations", s) == ("mlflow", None, None)
    assert classify("POST", "/score", s) == ("generic", None, None)
    assert classify("GET", "/v1/models/m:predict", s)[0] == "none"
    assert classify("POST", "/v2/models/m/ready", s)[0] == "none"
    assert classify("POST", "/v1/models/m:explain", s)[0] == "none"


def test_kserve_v1_rows_positional_and_named(capturer):
    positional = {"instances": [[r[k] for k in ORDER] for r in ROWS]}
    named = {"instances": ROWS}
    for req in (positional, named):
        name, events = capturer.events(exchange("kserve_v1", req, {"predictions": PREDS}))
        assert name == "credit-risk"
        assert features_of(events) == expected_features()
        assert [e["prediction"] for e in events] == PREDS
        assert all(e["latency_seconds"] == 0.012 and "version" not in e for e in events)


def test_tf_serving_columnar_inputs_and_named_outputs(capturer):
    cols = {k: [r[k] for r in ROWS] for k in ORDER}
    resp = {"outputs": {"probabilities": [[0.9, 0.1], [0.3, 0.7], [0.45, 0.55]], "class": PREDS}}
    route = RouteSettings(model="credit-risk", output="class", scores="probabilities")
    cap = Capturer(replace(capturer.settings, routes={"credit-risk": route}), capturer.schemas)
    _, events = cap.events(exchange("kserve_v1", {"inputs": cols}, resp))
    assert features_of(events) == expected_features()
    assert [e["prediction"] for e in events] == PREDS
    assert [e["scores"] for e in events] == [
        {"0": 0.9, "1": 0.1},
        {"0": 0.3, "1": 0.7},
        {"0": 0.45, "1": 0.55},
    ]


def test_class_probabilities_give_the_most_probable_class(capturer):
    req = {"instances": ROWS}
    _, events = capturer.events(
        exchange("kserve_v1", req, {"predictions": [[0.8, 0.2], [0.4, 0.6], [0.1, 0.9]]})
    )
    assert [e["prediction"] for e in events] == ["0", "1", "1"]
    assert events[1]["scores"] == {"0": 0.4, "1": 0.6}
    # a binary model's single probability is the positive class's
    _, events = capturer.events(exchange("kserve_v1", req, {"predictions": [0.2, 0.6, 1.0]}))
    assert [e["prediction"] for e in events] == ["0", "1", 1]
    assert [e.get("scores") for e in events] == [0.2, 0.6, None]


def test_oip_v2_tensor_per_feature(capturer):
    nan = float("nan")
    inputs = [
        {"name": k, "shape": [3], "datatype": "FP64", "data": [nan if r[k] is None else r[k]
                                                               for r in ROWS]}
        for k in NUMERIC
    ] + [
        {"name": k, "shape": [3, 1], "datatype": "BYTES", "data": [[r[k]] for r in ROWS]}
        for k in ("country", "channel")
    ]  # fmt: skip
    resp = {
        "model_name": "credit-risk",
        "model_version": "v4",
        "id": "r-1",
        "outputs": [{"name": "label", "shape": [3], "datatype": "INT64", "data": PREDS}],
    }
    body = json.dumps({"id": "r-1", "inputs": inputs}).encode()  # NaN token: a missing value
    _, events = capturer.events(exchange("oip_v2", body, resp))
    got = features_of(events)
    assert got[2]["income"] != got[2]["income"]  # NaN
    got[2]["income"] = None
    assert got == expected_features()
    assert [e["prediction"] for e in events] == PREDS
    assert {e["version"] for e in events} == {"v4"}


def test_oip_v2_one_matrix_with_configured_input_names(capturer):
    route = RouteSettings(model="credit-risk", inputs=(*NUMERIC, None), output="probs")
    cap = Capturer(replace(capturer.settings, routes={"risk-v2": route}), capturer.schemas)
    rows = [[1.0, 2.0, 0.5, 3.0, 4.0, 99.0], [5.0, 6.0, 0.25, 7.0, 8.0, 99.0]]
    req = {
        "inputs": [{"name": "x", "shape": [2, 6], "datatype": "FP32", "data": rows[0] + rows[1]}]
    }
    resp = {
        "outputs": [
            {"name": "label", "shape": [2], "datatype": "INT64", "data": [1, 0]},
            {"name": "probs", "shape": [2, 2], "datatype": "FP32", "data": [0.3, 0.7, 0.6, 0.4]},
        ]
    }
    name, events = cap.events(exchange("oip_v2", req, resp, model="risk-v2", path_version="7"))
    assert name == "credit-risk"
    assert features_of(events) == [dict(zip(NUMERIC, r[:5], strict=True)) for r in rows]
    assert [e["prediction"] for e in events] == ["1", "0"]
    assert [e["version"] for e in events] == ["7", "7"]


def test_mlflow_every_input_format_gives_the_same_events(capturer):
    forms = [
        {"dataframe_split": {"columns": ORDER, "data": [[r[k] for k in ORDER] for r in ROWS]}},
        {"dataframe_records": ROWS},
        {"instances": ROWS},
        {"inputs": {k: [r[k] for r in ROWS] for k in ORDER}},
        {"inputs": [[r[k] for k in ORDER] for r in ROWS]},
    ]
    for req in forms:
        for resp in ({"predictions": PREDS}, PREDS, {"predictions": [{"label": p} for p in PREDS]}):
            _, events = capturer.events(exchange("mlflow", req, resp))
            assert features_of(events) == expected_features(), req
            assert [e["prediction"] for e in events] == PREDS


def test_generic_paths_ids_and_groups(capturer):
    g = GenericSettings(
        "/score",
        features="request.data.rows",
        predictions="response.result.labels",
        scores="response.result.p",
        ids="request.data.ids",
    )
    cap = Capturer(replace(capturer.settings, generic=g), capturer.schemas)
    rows = [dict(r, gender=gv) for r, gv in zip(ROWS, ["f", "m", "f"], strict=True)]
    req = {"data": {"rows": rows, "ids": ["a", "b", "c"]}}
    resp = {"result": {"labels": PREDS, "p": [0.1, 0.8, 0.7]}}
    _, events = cap.events(exchange("generic", req, resp))
    assert features_of(events) == expected_features()
    assert [e["id"] for e in events] == ["a", "b", "c"]
    assert [e["groups"] for e in events] == [{"gender": "f"}, {"gender": "m"}, {"gender": "f"}]
    assert [e["scores"] for e in events] == [0.1, 0.8, 0.7]


def test_ids_from_the_request_header_and_version_from_headers(capturer):
    ex = exchange(
        "kserve_v1",
        {"instances": ROWS},
        {"predictions": PREDS},
        request_headers={"x-request-id": "req-9", "x-model-version": "v2"},
    )
    _, events = capturer.events(ex)
    assert [e["id"] for e in events] == ["req-9:0", "req-9:1", "req-9:2"]
    assert {e["version"] for e in events} == {"v2"}
    ex = exchange(
        "kserve_v1",
        {"instances": ROWS[:1]},
        {"predictions": PREDS[:1]},
        request_headers={"x-request-id": "req-10"},
        response_headers={"x-model-version": "v3"},
    )
    _, events = capturer.events(ex)
    assert events[0]["id"] == "req-10" and events[0]["version"] == "v3"


def test_gzip_bodies_are_read(capturer):
    ex = exchange(
        "kserve_v1", b"", {"predictions": PREDS}, request_headers={"content-encoding": "gzip"}
    )
    ex.request_body = gzip.compress(json.dumps({"instances": ROWS}).encode())
    assert features_of(capturer.events(ex)[1]) == expected_features()


def test_failed_calls_become_error_events_one_per_row(capturer):
    req = {"instances": ROWS}
    for status, word in ((500, "model_error"), (400, "invalid_input"), (503, "overloaded")):
        _, events = capturer.events(exchange("kserve_v1", req, {"error": "x"}, status=status))
        assert len(events) == 3
        assert all(e["error"].startswith(word + ":") and "features" not in e for e in events)
    ex = exchange("kserve_v1", b"not json", b"", status=504, failure="timeout")
    _, events = capturer.events(ex)
    assert len(events) == 1 and events[0]["error"].startswith("timeout:")
    ex = exchange("kserve_v1", req, b"", status=502, failure="unreachable")
    assert capturer.events(ex)[1][0]["error"].startswith("upstream_unavailable:")


@pytest.mark.parametrize(
    ("protocol", "req", "resp", "reason"),
    [
        ("kserve_v1", b"{not json", {"predictions": [1]}, "malformed_json"),
        ("kserve_v1", {"instances": ROWS}, b"<html>", "malformed_json"),
        ("kserve_v1", {"rows": ROWS}, {"predictions": PREDS}, "unrecognised_payload"),
        ("kserve_v1", {"instances": ROWS}, {"predictions": PREDS[:2]}, "row_mismatch"),
        ("kserve_v1", {"instances": [[1, 2, 3]]}, {"predictions": [1]}, "row_mismatch"),
        ("oip_v2", {"inputs": [{"name": "x", "shape": [2, 2], "data": [1]}]}, {}, "unrecognised_payload"),  # noqa: E501
        ("oip_v2", {"inputs": []}, {}, "unrecognised_payload"),
        ("mlflow", {"dataframe_split": {"columns": "a"}}, [1], "unrecognised_payload"),
    ],
)  # fmt: skip
def test_unreadable_payloads_say_why(capturer, protocol, req, resp, reason):
    with pytest.raises(CaptureError) as e:
        capturer.events(exchange(protocol, req, resp))
    assert e.value.reason == reason


def test_unknown_models_and_oversized_bodies(capturer):
    with pytest.raises(CaptureError) as e:
        capturer.events(
            exchange("kserve_v1", {"instances": ROWS}, {"predictions": PREDS}, model="nope")
        )
    assert e.value.reason == "unknown_model"
    ex = exchange("kserve_v1", b"", {"predictions": PREDS}, too_large=True)
    with pytest.raises(CaptureError) as e:
        capturer.events(ex)
    assert e.value.reason == "too_large"


# -- fuzzing: any payload either becomes events the monitor accepts, or a counted reason --

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from test_fuzz import scalars as fuzz_scalars  # noqa: E402

_KEYS = [
    "instances", "inputs", "outputs", "predictions", "dataframe_split", "dataframe_records",
    "columns", "data", "name", "shape", "datatype", "model_version", "id", *ORDER,
]  # fmt: skip
_scalars = fuzz_scalars
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(_KEYS), st.text(max_size=4)), inner, max_size=5),
    ),
    max_leaves=20,
)
_tensor = st.fixed_dictionaries(
    {
        "name": st.sampled_from(ORDER),
        "shape": st.lists(st.integers(0, 4), min_size=1, max_size=2),
        "datatype": st.sampled_from(["FP64", "BYTES", "INT64"]),
        "data": st.lists(_scalars, max_size=8),
    }
)
_requests = st.one_of(
    _json,
    st.fixed_dictionaries({"instances": st.lists(st.lists(_scalars, max_size=8), max_size=4)}),
    st.fixed_dictionaries({"inputs": st.lists(_tensor, max_size=3)}),
    st.fixed_dictionaries(
        {
            "dataframe_records": st.lists(
                st.dictionaries(st.sampled_from(ORDER), _scalars), max_size=4
            )
        }
    ),
)
_responses = st.one_of(
    _json,
    st.fixed_dictionaries({"predictions": st.lists(_json, max_size=4)}),
    st.fixed_dictionaries({"outputs": st.lists(_tensor, max_size=2)}),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    protocol=st.sampled_from(["kserve_v1", "oip_v2", "mlflow"]),
    req=_requests,
    resp=_responses,
    status=st.sampled_from([200, 200, 200, 400, 500]),
)
def test_any_payload_gives_events_or_a_reason(capturer, protocol, req, resp, status):
    from mlmon.capture.protocols import CAPTURE_FAILURES

    mon = _fuzz_monitor()
    try:
        name, events = capturer.events(exchange(protocol, req, resp, status=status))
    except CaptureError as e:
        assert e.reason in CAPTURE_FAILURES
        return
    batch, details = mon.models[name].ingest(events, partial=True)  # never raises
    assert batch.n + len({d["index"] for d in details}) == len(events)


_FUZZ: list[Monitor] = []


def _fuzz_monitor() -> Monitor:
    if not _FUZZ:
        _FUZZ.append(Monitor(load_config(ROOT / "examples" / "mlmon.yml")))
    return _FUZZ[0]
