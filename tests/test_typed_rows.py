"""The typed fast path of row batches (`core.typedrows`) against the row checks
(`decode_events` + `parse_events`): on generated bodies, valid and broken in every field,
whatever the fast path accepts the row checks accept too, as the same Batch; and over real
sockets, the same events sent as JSON (typed) and as NDJSON (row checks) leave two
`mlmon serve` processes with the same metrics."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import Exporter, make_env, parse_metrics
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlmon.core.baseline import build_profile, read_training_data, write_profile
from mlmon.core.config import load_config
from mlmon.core.decoding import BadRequest, decode_events
from mlmon.core.events import parse_events
from mlmon.core.monitor import Monitor
from mlmon.core.typedrows import RowDecoder
from mlmon.demo import synthetic

MAX_STR = 12
SPEC = synthetic.TableSpec(
    numeric={"age": (40.0, 10.0), "balance": (-200.0, 500.0), "score_x": (0.0, 1.0)},
    categorical={
        "country": {"DE": 0.5, "FR": 0.3, "ES": 0.2},
        # classes that booleans and integers name as JSON spells them
        "flag": {"true": 0.5, "false": 0.3, "1": 0.2},
    },
    weights={"age": 0.05},
    intercept=-2.0,
)
TOP = {"limits": {"max_string_length": MAX_STR}}


def model_env(tmp: Path, task: str) -> Monitor:
    """A model of ``task`` over SPEC's features, with a sensitive attribute; its baseline
    from 3,000 synthetic rows."""
    data = tmp / "train.csv"
    synthetic.write_csv(synthetic.events(SPEC, 3_000, seed=1), data)
    model = {
        "name": "m",
        "task": task,
        "baseline": "m.json",
        "features": SPEC.config_features(),
        "sensitive_attributes": ["sex"],
        **({"positive_class": 1} if task == "binary" else {}),
        **({"classes": [0, 1, 2]} if task == "multiclass" else {}),
    }
    path = tmp / "mlmon.yml"
    path.write_text(yaml.safe_dump({"models": [model], **TOP}))
    m = load_config(path).models[0]
    features = list(SPEC.config_features())
    write_profile(build_profile(m, read_training_data(data, features, False)), m.baseline)
    return Monitor(load_config(path))


@pytest.fixture(scope="module")
def schemas(tmp_path_factory):
    """The same features in a binary, a regression and a 3-class model."""
    return {
        task: model_env(tmp_path_factory.mktemp(task), task).models["m"]
        for task in ("binary", "regression", "multiclass")
    }


# -- values, valid and not, for every field ------------------------------------------------

BIG = [2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1, 2**64, 10**30, 2**1024]
NUMBERS = [0, 1, -7, 3.25, -0.0, 1e308, 5e-324, 123456.789, *BIG]
STRINGS = ["DE", "FR", "zz", "", "x" * MAX_STR, "x" * (MAX_STR + 1), "é", "\ud800", "Ω\udc00"]
STRINGS += ["__other__", "true", "1"]
ODD_TEXT = ["é", "\ud800", "x" * (MAX_STR + 1)]
NOT_NUMBERS = [None, True, False, "1.5", [1], {}, float("nan"), float("inf")]
NOT_LABELS = [None, 1.5, [1], {}, float("nan")]
OK = object()  # the field left out of the event


def field_values(task: str) -> dict[str, list]:
    classes = [0, 1, 2, "1", "0", True] if task != "regression" else [0.25, 3, -1e10]
    return {
        "numeric": NUMBERS + NOT_NUMBERS + [OK],
        "categorical": [*STRINGS, 0, 1, True, *BIG, *NOT_LABELS, OK],
        "prediction": classes + NUMBERS + STRINGS + NOT_NUMBERS + [OK],
        "scores": [
            {"1": 0.3},
            {"0": 0.2, "1": 0.8},
            {"1": 1},
            {"1": 0},
            {"1": 1.5},
            {"1": -0.1},
            {"1": True},
            {},
            0.4,
            1,
            True,
            "x",
            [0.3],
            None,
            OK,
        ],
        "version": ["v1", "v2", "", "v 1", "a" * 65, "v1\n", 5, None, OK],
        "id": [*("a1", 5, 2**64 - 1, 2**64, -(2**63) - 1, True, None), *ODD_TEXT, OK],
        "timestamp": [1.7e9, 1700000000, 2**70, 2**1100, -1, "x", True, None, OK],
        "latency_seconds": [0.1, 0, -0.0, -1, 2**70, True, "1", None, float("inf"), OK],
        "error": [None, "timeout: upstream", "", 5, "x" * (MAX_STR + 1), OK],
        "groups": [
            {"sex": "f"},
            {"sex": 1},
            {"sex": True},
            {"sex": None},
            {"sex": "__other__"},
            {"sex": 1.5},
            {"sex": "é"},
            {"sex": "x" * (MAX_STR + 1)},
            {"sex": "\ud800"},
            {"other": "x"},
            {},
            [],
            None,
            OK,
        ],
    }


def event(rng: random.Random, task: str, broken: float) -> object:
    """A valid event, with each field broken (a value drawn from all of them) with
    probability ``broken``; now and then no object at all, an unknown feature, an unknown
    field or attributions."""
    values = field_values(task)
    if rng.random() < broken / 20:
        return rng.choice([1, "event", [], None])
    feats: dict = {}
    for name in SPEC.numeric:
        v = rng.choice(values["numeric"]) if rng.random() < broken else rng.gauss(0, 100)
        if v is not OK:
            feats[name] = v
    for name, cats in SPEC.categorical.items():
        v = rng.choice(values["categorical"]) if rng.random() < broken else rng.choice(list(cats))
        if v is not OK:
            feats[name] = v
    if rng.random() < broken / 5:
        feats["unknown_feature"] = 1.0
    ev: dict = {"features": feats if rng.random() > broken / 5 else rng.choice([None, [], 3])}
    valid = {
        "prediction": rng.choice([0, 1]) if task != "regression" else rng.uniform(-5, 5),
        "scores": {"1": round(rng.random(), 6)} if task == "binary" else OK,
        "version": rng.choice(["v1", "v2", OK]),
        "id": rng.choice([f"r{rng.randrange(10**6)}", rng.randrange(10**6), OK]),
        "timestamp": OK,
        "latency_seconds": rng.choice([round(rng.random(), 4), OK]),
        "error": OK,
        "groups": {"sex": rng.choice(["f", "m"])} if rng.random() < 0.5 else OK,
    }
    for name, v in valid.items():
        if rng.random() < broken:
            v = rng.choice(values[name])
        if v is not OK:
            ev[name] = v
    if rng.random() < broken / 10:
        ev[rng.choice(["attributions", "extra"])] = {"age": 0.5}
    return ev


def body_of(events: list, rng: random.Random) -> bytes:
    doc: object = {"events": events}
    if rng.random() < 0.03:
        doc = {"events": events, "extra": 1}
    elif rng.random() < 0.03 and events:
        doc = events[0]
    try:
        return json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode()
    except UnicodeEncodeError:  # a lone surrogate: only as an escape
        return json.dumps(doc).encode()


# -- the comparison ------------------------------------------------------------------------


def row_checks(body: bytes, m) -> object:
    """What the row checks make of a body: a Batch with no error details, or the refusal."""
    try:
        events = decode_events(body, "application/json", max_items=m.limits["max_batch_events"])
        batch, details = parse_events(events, m.schema, m.limits)
    except BadRequest as e:
        return ("refused", e.status, e.reason, e.message)
    return batch if not details else ("details", details)


def same(a, b) -> None:
    """Two Batches equal field by field: arrays in shape, dtype and value (NaN equal to
    NaN), lists element by element with their types."""
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape, f.name
            assert np.array_equal(x, y, equal_nan=True), f.name
        elif isinstance(x, list):
            assert len(x) == len(y), f.name
            for u, v in zip(x, y, strict=True):
                assert type(u) is type(v) and u == v, (f.name, u, v)
        else:
            assert x == y, (f.name, x, y)


def check(body: bytes, m, seen: Counter) -> None:
    typed = RowDecoder(m.schema, m.limits).batch(body)
    old = row_checks(body, m)
    if typed is None:
        seen["row checks"] += 1
        return
    seen["typed"] += 1
    assert not isinstance(old, tuple), f"typed path accepted what the row checks refuse: {old}"
    same(typed, old)


@pytest.mark.parametrize("task", ["binary", "regression", "multiclass"])
def test_typed_rows_accept_only_what_the_row_checks_accept_and_decode_the_same(schemas, task):
    m = schemas[task]
    rng = random.Random(f"typed-{task}")
    seen: Counter = Counter()
    values = field_values(task)
    for _ in range(1_500):
        broken = rng.choice([0.0, 0.0, 0.02, 0.1, 0.3])
        events = [event(rng, task, broken) for _ in range(rng.choice([1, 2, 5, 40]))]
        check(body_of(events, rng), m, seen)
        # valid events but one, with one value drawn from all of its field's values
        events = [event(rng, task, 0.0) for _ in range(rng.choice([1, 5, 40]))]
        one = rng.choice(events)
        name = rng.choice(list(values))
        v = rng.choice(values[name])
        if name in ("numeric", "categorical"):
            feature = rng.choice(list(getattr(SPEC, name)))
            one["features"].pop(feature)
            if v is not OK:
                one["features"][feature] = v
        else:
            one.pop(name, None)
            if v is not OK:
                one[name] = v
        check(body_of(events, rng), m, seen)
    # both paths are exercised: a test whose fast path never ran would prove nothing
    assert seen["typed"] > 1000 and seen["row checks"] > 1000, seen


@pytest.mark.parametrize(
    "raw",
    [
        # tokens and texts the standard parser takes but no typed decoder should
        b'{"events": [{"features": {"age": NaN}, "prediction": 1}]}',
        b'{"events": [{"features": {"age": Infinity}, "prediction": 1}]}',
        b'{"events": [{"features": {"age": 1e400}, "prediction": 1}]}',
        b'{"events": [{"features": {"age": 1' + b"0" * 400 + b'}, "prediction": 1}]}',
        b'{"events": [{"features": {"country": "\\ud800"}, "prediction": 1}]}',
        b'{"events": [{"features": {"age": 1}, "prediction": 1, "id": "\\udc00x"}]}',
        b'{"events": [{"features": {"age": 1}, "prediction": 1}], "events": []}',
        b'{"events": [{"features": {"age": 1, "age": "x"}, "prediction": 1}]}',
        b'{"events": [{"features": {"age": "x", "age": 1}, "prediction": 1}]}',
        b'{"events": [{"features": {"age": 1}, "prediction": 1, "timestamp": 1e400}]}',
        b'{"events": [{"features": {"age": 1}, "prediction": 1}]} ',
        b'{"events": [{"features": {"age": 1}, "prediction": 1}]}x',
        b'\xef\xbb\xbf{"events": [{"features": {"age": 1}, "prediction": 1}]}',
        b'{"events": [{"features": {"age": 1}, "prediction": "\xff"}]}',
        b'{"events": []}',
        b"[]",
    ],
)
def test_typed_rows_on_edge_texts(schemas, raw):
    seen: Counter = Counter()
    for m in schemas.values():
        check(raw, m, seen)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), task=st.sampled_from(["binary", "regression", "multiclass"]))
def test_typed_rows_property(schemas, seed, task):
    rng = random.Random(seed)
    broken = rng.choice([0.0, 0.05, 0.2])
    events = [event(rng, task, broken) for _ in range(rng.randint(1, 30))]
    check(body_of(events, rng), schemas[task], Counter())


def test_over_http_typed_and_row_checked_batches_leave_the_same_metrics(tmp_path):
    """Two `mlmon serve` processes with one config: one gets the batches as JSON (the typed
    path), the other the same events as NDJSON (the row checks). Every mlmon series of the
    model ends equal."""
    env = make_env(tmp_path, SPEC, n_train=3_000, model_extra={"sensitive_attributes": ["sex"]})
    rng = random.Random(7)
    batches = []
    for b in range(20):
        events = synthetic.without_labels(synthetic.events(SPEC, 100, seed=b, version="v1"))
        for i, ev in enumerate(events):
            ev["groups"] = {"sex": rng.choice(["f", "m"])}
            ev["latency_seconds"] = round(rng.random(), 3)
            if i % 17 == 0:
                ev["features"]["age"] = None
            if i % 23 == 0:
                ev["error"] = "timeout: upstream"
        batches.append(events)
    typed, checked = Exporter(env.config_path), Exporter(env.config_path)
    try:
        for events in batches:
            r = typed.session.post(
                f"{typed.url}/v1/models/credit-risk/predictions",
                data=json.dumps({"events": events}),
                headers={"Content-Type": "application/json"},
            )
            assert r.json() == {"accepted": 100, "rejected": 0}
            r = checked.session.post(
                f"{checked.url}/v1/models/credit-risk/predictions",
                data="\n".join(json.dumps(e) for e in events),
                headers={"Content-Type": "application/x-ndjson"},
            )
            assert r.json() == {"accepted": 100, "rejected": 0}
        a, b = (mlmon_series(e.get("/metrics").text) for e in (typed, checked))
    finally:
        typed.stop()
        checked.stop()
    # equal counts; statistics equal to rounding (each process sums its window in its
    # own order of slices)
    assert a.keys() == b.keys()
    differ = {k: (a[k], b[k]) for k in a if not math.isclose(a[k], b[k], rel_tol=1e-9)}
    assert not differ
    assert a[("mlmon_ingest_events_total", (("model", "credit-risk"),))] == 2000
    failures = [v for k, v in a.items() if k[0] == "mlmon_inference_failures_total"]
    assert sum(failures) == sum(1 for events in batches for e in events if "error" in e) > 0


def mlmon_series(text: str) -> dict:
    """The model's own series: not the exporter's requests, timings or process."""
    skip = ("mlmon_ingest_requests", "mlmon_scrape", "mlmon_http", "mlmon_build", "mlmon_up")
    return {
        k: v
        for k, v in parse_metrics(text).items()
        if k[0].startswith("mlmon_") and not k[0].startswith(skip) and "seconds" not in k[0]
    }
