"""The typed fast path of columnar batches (`core.typedcolumns`) against the columnar checks
(`decode_events` + `parse_columns`, as `Api.predictions` routes a body): on generated
bodies, valid and broken in every field, whatever the fast path accepts the columnar checks
accept too, as the same Batch; and over real sockets, the same batches sent as one JSON
columnar body (typed) and as NDJSON rows (row checks) leave two `mlmon serve` processes
with the same metrics."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest
import yaml
from helpers import Exporter, make_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlmon.core.baseline import build_profile, read_training_data, write_profile
from mlmon.core.columns import parse_columns
from mlmon.core.config import load_config
from mlmon.core.decoding import BadRequest, decode_events
from mlmon.core.monitor import Monitor
from mlmon.core.typedcolumns import ColumnDecoder
from mlmon.core.typedrows import RowDecoder
from mlmon.demo import synthetic
from test_typed_rows import MAX_STR, SPEC, field_values, mlmon_series, same

MAX_EVENTS = 50
TOP = {"limits": {"max_string_length": MAX_STR, "max_batch_events": MAX_EVENTS}}
TASKS = ("binary", "regression", "multiclass")


def model_env(tmp: Path, task: str):
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
    return Monitor(load_config(path)).models["m"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The same features in a binary, a regression and a 3-class model, each with its
    typed decoders."""
    out = {}
    for task in TASKS:
        m = model_env(tmp_path_factory.mktemp(task), task)
        out[task] = (m, ColumnDecoder(m.schema, m.limits), RowDecoder(m.schema, m.limits))
    return out


# -- valid columns ---------------------------------------------------------------------------


def maybe_null(rng: random.Random, values: list, p: float = 0.05) -> list:
    return [None if rng.random() < p else v for v in values]


def valid_features(rng: random.Random, n: int) -> dict:
    feats: dict = {}
    for name in SPEC.numeric:
        kind = rng.choice(["float", "float", "int", "nulls", "null", "absent"])
        if kind == "absent":
            continue
        if kind == "null":
            feats[name] = None
            continue
        col = [rng.gauss(0, 100) for _ in range(n)]
        feats[name] = [round(v) for v in col] if kind == "int" else col
        if kind == "nulls":
            feats[name] = maybe_null(rng, feats[name], 0.3)
    for name, cats in SPEC.categorical.items():
        kind = rng.choice(["str", "str", "mixed", "absent", "null"])
        if kind in ("absent", "null"):
            if kind == "null":
                feats[name] = None
            continue
        pool = [*cats, "zz"] + ([None, 1, 0, True, False, 2**63 - 1] if kind == "mixed" else [])
        feats[name] = [rng.choice(pool) for _ in range(n)]
    return feats


def valid_outputs(rng: random.Random, task: str, n: int) -> dict:
    if task == "regression":
        pred = [
            rng.uniform(-5, 5) if rng.random() < 0.8 else rng.randrange(-9, 9) for _ in range(n)
        ]
        scores = rng.choice([None, [None] * n, "absent"])
    else:
        k = 2 if task == "binary" else 3
        kind = rng.choice(["int", "str", "mixed"])
        pool = {"int": list(range(k)), "str": [str(c) for c in range(k)] + ["9"]}.get(
            kind, [0, "1", True, 5]
        )
        pred = [rng.choice(pool) for _ in range(n)]
        probs = [[round(rng.random(), 6) for _ in range(n)] for _ in range(k)]
        scores = rng.choice(
            [
                "absent",
                None,
                maybe_null(rng, probs[1]),
                {"1": probs[1]},
                {str(c): maybe_null(rng, probs[c], 0.3) for c in range(k)},
                {"0": maybe_null(rng, probs[0], 0.5), "2": maybe_null(rng, probs[1], 0.5)},
                {},
                [None] * n,
            ]
        )
    out = {"prediction": pred}
    if scores != "absent":
        out["scores"] = scores
    return out


def valid_fields(rng: random.Random, n: int) -> dict:
    """The optional columns, each given now and then."""
    options = {
        "version": rng.choice(["v1", ["v1", "v2", None] * n, None]),
        "id": [rng.choice([f"r{i}", i, None, -(2**63), "é"]) for i in range(n)],
        "timestamp": maybe_null(rng, [1.7e9 + rng.random() * 100 for _ in range(n)]),
        "latency_seconds": maybe_null(rng, [rng.choice([0, 0.25, 2, 1e-3]) for _ in range(n)]),
        "error": [
            None if rng.random() < 0.8 else rng.choice(["timeout: x", "oom", ""]) for _ in range(n)
        ],
        "groups": rng.choice([{"sex": [rng.choice(["f", "m", 1, True]) for _ in range(n)]}, {}]),
    }
    out = {k: v for k, v in options.items() if rng.random() < 0.6}
    if type(out.get("version")) is list:
        out["version"] = out["version"][:n]
    return out


def valid_columns(rng: random.Random, task: str, n: int) -> dict:
    cols = {"features": valid_features(rng, n), **valid_outputs(rng, task, n)}
    cols.update(valid_fields(rng, n))
    if cols.get("error") and rng.random() < 0.5:  # failed calls without a prediction
        cols["prediction"] = [
            p if e is None else None for p, e in zip(cols["prediction"], cols["error"], strict=True)
        ]
    return cols


# -- broken columns ----------------------------------------------------------------------------

SHAPES = ["null", "short", "long", "scalar", "object", "text", "empty", "absent"]
UNIT_VALUES = [0.3, 1, 0, -0.0, 1.5, -0.1, True, "x", None, [0.3], {}, 2**64]
GROUP_VALUES = ["f", 1, True, None, "__other__", 1.5, "é", "x" * (MAX_STR + 1), "\ud800", [], 2**64]


def element_values(task: str) -> dict[str, list]:
    """Values, valid and not, for one element of each column."""
    values = {  # the row tests' "left out" (a bare object) is a null here
        k: [None if type(v) is object else v for v in vs] for k, vs in field_values(task).items()
    }
    values["scores"] = UNIT_VALUES
    values["groups"] = GROUP_VALUES
    return values


def reshaped(col, shape: str, rng: random.Random):
    """A column replaced whole: null, too short or long, no list at all, ..."""
    if type(col) is dict:
        col = next(iter(col.values()), [])
    col = col if type(col) is list else [col]
    return {
        "null": None,
        "short": col[:-1],
        "long": col + col[:1],
        "scalar": rng.choice([1, 0.5, True]),
        "object": {"a": col},
        "text": rng.choice(["v1", "v 1", "", "a" * 65, "v1\n"]),
        "empty": [],
    }[shape]


def break_one(cols: dict, rng: random.Random, task: str) -> None:
    """One value of one column replaced by a value drawn from all of its field's values, or
    one column replaced whole."""
    values = element_values(task)
    name = rng.choice(list(values))
    if name in ("numeric", "categorical"):
        target = cols["features"]
        key = rng.choice(list(getattr(SPEC, name)))
    else:
        target, key = cols, name
    if key in target and name in ("scores", "groups") and type(target[key]) is dict and target[key]:
        target, key = target[key], rng.choice(list(target[key]))
    col = target.get(key)
    if type(col) is list and col and rng.random() < 0.7:
        col[rng.randrange(len(col))] = rng.choice(values[name])
        return
    shape = rng.choice(SHAPES)
    if shape == "absent":
        target.pop(key, None)
    else:
        target[key] = reshaped(col, shape, rng)


def break_structure(doc: dict, rng: random.Random, n: int) -> dict:
    """The envelope or the columns' frame broken: unknown fields and features,
    attributions, another envelope, no object where one is due."""
    cols = doc["columns"]
    what = rng.randrange(11)
    if what == 0:
        cols["features"]["unknown_feature"] = [1.0] * n
    elif what == 1:
        cols["attributions"] = rng.choice([None, {"age": [0.5] * n}, {}])
    elif what == 2:
        cols["extra"] = 1
    elif what == 3:
        doc["extra"] = 1
    elif what == 4:
        doc["events"] = []
    elif what == 5:
        doc["columns"] = rng.choice([None, [], "x", 1])
    elif what == 6:
        cols["features"] = rng.choice([None, [], {}, 1])
    elif what == 7:
        cols.pop(rng.choice(["prediction", "features"]), None)
    elif what == 8:
        cols["prediction"] = [1] * (MAX_EVENTS + 1)
    elif what == 9:
        return {"columns": cols, "version": "v1"}
    else:
        return {"events": [{"features": {"age": 1.0}, "prediction": 1}], "columns": cols}
    return doc


def body_of(doc: object, rng: random.Random) -> bytes:
    try:
        return json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode()
    except UnicodeEncodeError:  # a lone surrogate: only as an escape
        return json.dumps(doc).encode()


# -- the comparison ----------------------------------------------------------------------------


def columnar_checks(body: bytes, m) -> object:
    """What `Api.predictions` makes of a body without the typed paths: a Batch from
    `parse_columns`, its refusal, or a note that the body is no columnar one."""
    try:
        events = decode_events(body, "application/json", max_items=m.limits["max_batch_events"])
        if not (len(events) == 1 and type(events[0]) is dict and "columns" in events[0]):
            return ("not columnar",)
        return parse_columns(events[0]["columns"], m.schema, m.limits)
    except BadRequest as e:
        return ("refused", e.status, e.reason, e.message)
    except ValueError as e:  # no events and an empty latency column: min() of nothing
        return ("failed", str(e))


def check(body: bytes, model, seen: Counter) -> None:
    m, columns, rows = model
    assert rows.batch(body) is None  # a columnar body never passes as rows
    typed = columns.batch(body)
    old = columnar_checks(body, m)
    if typed is None:
        seen["columnar checks"] += 1
        return
    seen["typed"] += 1
    assert not isinstance(old, tuple), f"typed path accepted what the columnar checks refuse: {old}"
    assert not old.unknown_features
    same(typed, old)


@pytest.mark.parametrize("task", TASKS)
def test_typed_columns_accept_only_what_the_columnar_checks_accept_and_decode_the_same(
    models, task
):
    rng = random.Random(f"typed-columns-{task}")
    seen: Counter = Counter()
    for _ in range(700):
        n = rng.choice([1, 2, 7, 40])
        check(body_of({"columns": valid_columns(rng, task, n)}, rng), models[task], seen)
        # valid columns but one, broken in one value or whole
        cols = valid_columns(rng, task, n)
        break_one(cols, rng, task)
        check(body_of({"columns": cols}, rng), models[task], seen)
        # broken at random: several columns, or the frame
        cols = valid_columns(rng, task, n)
        for _ in range(rng.choice([1, 2, 4])):
            break_one(cols, rng, task)
        doc = {"columns": cols}
        if rng.random() < 0.3:
            doc = break_structure(doc, rng, n)
        check(body_of(doc, rng), models[task], seen)
    # both paths are exercised: a test whose fast path never ran would prove nothing
    assert seen["typed"] > 700 and seen["columnar checks"] > 700, seen


EDGE = [
    # tokens and texts the standard parser takes but no typed decoder should
    b'{"columns": {"features": {"age": [NaN]}, "prediction": [1]}}',
    b'{"columns": {"features": {"age": [Infinity]}, "prediction": [1]}}',
    b'{"columns": {"features": {"age": [-Infinity, 1]}, "prediction": [1, 0]}}',
    b'{"columns": {"features": {"age": [1e400]}, "prediction": [1]}}',
    b'{"columns": {"features": {"age": [1' + b"0" * 400 + b"]}, " + b'"prediction": [1]}}',
    b'{"columns": {"features": {"age": [1]}, "prediction": [1], "timestamp": [1e400]}}',
    b'{"columns": {"features": {"age": [1]}, "prediction": [1], "id": [18446744073709551615]}}',
    b'{"columns": {"features": {"age": [1]}, "prediction": [1], "latency_seconds": [-0.0]}}',
    b'{"columns": {"features": {"country": ["\\ud800"]}, "prediction": [1]}}',
    b'{"columns": {"features": {"age": [1]}, "prediction": [1], "id": ["\\udc00x"]}}',
    b'{"columns": {"features": {"age": [1]}, "prediction": [1], "error": ["\\ud800"]}}',
    b'{"columns": {"features": {"age": [1]}, "prediction": [1]}, "columns": {}}',
    b'{"columns": {}, "columns": {"features": {"age": [1]}, "prediction": [1]}}',
    b'{"columns": {"features": {"age": [1], "age": ["x"]}, "prediction": [1]}}',
    b'{"columns": {"features": {"age": ["x"], "age": [2]}, "prediction": [1]}}',
    b'{"columns": {"features": {"age": [1]}, "prediction": [1], "prediction": [0, 1]}}',
    b'{"columns": {"features": {}, "prediction": [1], "scores": {"1": [0.2], "1": [0.7]}}}',
    b'{"columns": {"features": {}, "prediction": [1], "groups": {"sex": ["f"], "sex": [1]}}}',
    b'{"columns": {"features": {"age": [1]}, "prediction": [1]}} ',
    b'{"columns": {"features": {"age": [1]}, "prediction": [1]}}x',
    b'{"columns": {"features": {"age": [1]}, "prediction": [1]}}{}',
    b'\xef\xbb\xbf{"columns": {"features": {"age": [1]}, "prediction": [1]}}',
    b'{"columns": {"features": {"country": ["\xff"]}, "prediction": [1]}}',
    b'{"columns": {"features": {"age": [1]}, "prediction": ["\xc3"]}}',
    b'{"columns": {"features": {"age": [1]}, "prediction": []}}',
    b'{"columns": {"features": {}, "prediction": [1]}}',
    b'{"columns": {"features": {"age": null}, "prediction": [1], "attributions": null}}',
    b'{"columns": {"features": {"age": [1]}, "prediction": [null], "error": ["oom"]}}',
    b'{"columns": {"features": {"age": [1]}, "prediction": [null]}}',
    b'{"columns": {"features": {"age": [1]}, "prediction": [1], "version": "v1\\n"}}',
    b'{"columns": {"features": {"age": [true]}, "prediction": [1]}}',
    b'{"columns": {"features": {"age": [1]}, "prediction": [1], "version": "v 1"}}',
    b'{"columns": {"features": {"country": [1.0]}, "prediction": [1]}}',
    b'{"columns": {"features": {"age": [1]}, "prediction": [1.0]}}',
    b'{"columns": null}',
    b"[]",
]


@pytest.mark.parametrize("raw", EDGE)
def test_typed_columns_on_edge_texts(models, raw):
    seen: Counter = Counter()
    for model in models.values():
        check(raw, model, seen)


def test_typed_columns_take_the_common_edges(models):
    """Texts on the edge that are valid all the same go the fast way: a test of the test."""
    _, columns, _ = models["binary"]
    for raw in (EDGE[7], EDGE[16], EDGE[18], EDGE[25], EDGE[26], EDGE[27], EDGE[29]):
        assert columns.batch(raw) is not None, raw
    for raw in (EDGE[0], EDGE[3], EDGE[8], EDGE[11], EDGE[19], EDGE[21], EDGE[28]):
        assert columns.batch(raw) is None, raw


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), task=st.sampled_from(TASKS))
def test_typed_columns_property(models, seed, task):
    rng = random.Random(seed)
    cols = valid_columns(rng, task, rng.randint(1, 30))
    for _ in range(rng.choice([0, 0, 1, 3])):
        break_one(cols, rng, task)
    check(body_of({"columns": cols}, rng), models[task], Counter())


def test_a_row_body_does_not_pass_as_columns(models):
    m, columns, rows = models["binary"]
    body = json.dumps({"events": [{"features": {"age": 1.0}, "prediction": 1}]}).encode()
    assert rows.batch(body) is not None and columns.batch(body) is None
    assert m.ingest_typed_columns(body) is None


# -- over real sockets -------------------------------------------------------------------------


def http_batches(rng: random.Random) -> list[list[dict]]:
    """20 batches of 100 valid events: groups, latencies, missing features, failed calls
    (some without a prediction)."""
    batches = []
    for b in range(20):
        events = synthetic.without_labels(synthetic.events(SPEC, 100, seed=b, version="v1"))
        for i, ev in enumerate(events):
            ev["groups"] = {"sex": rng.choice(["f", "m", 1])}
            ev["latency_seconds"] = round(rng.random(), 3)
            if i % 17 == 0:
                ev["features"]["age"] = None
            if i % 13 == 0:
                ev["features"]["country"] = rng.choice(["DE", None, "zz", True])
            if i % 23 == 0:
                ev["error"] = "timeout: upstream"
                if i % 46 == 0:
                    ev["prediction"] = None
        batches.append(events)
    return batches


def as_columns(events: list[dict], b: int) -> dict:
    """The events as one columnar body; scores as a list or by class, every other batch."""
    names = [*SPEC.numeric, *SPEC.categorical]
    scores = [e["scores"]["1"] for e in events]
    return {
        "columns": {
            "features": {n: [e["features"][n] for e in events] for n in names},
            "prediction": [e["prediction"] for e in events],
            "scores": scores if b % 2 else {"1": scores},
            "version": "v1" if b % 3 else [e["version"] for e in events],
            "id": [e["id"] for e in events],
            "latency_seconds": [e["latency_seconds"] for e in events],
            "error": [e.get("error") for e in events],
            "groups": {"sex": [e["groups"]["sex"] for e in events]},
        }
    }


def test_over_http_typed_columns_and_row_checked_batches_leave_the_same_metrics(tmp_path):
    """Two `mlmon serve` processes with one config: one gets each batch as a JSON columnar
    body (the typed path: checked in process to take every one of them), the other the
    same events as NDJSON rows (the row checks). Every mlmon series of the model ends
    equal."""
    env = make_env(tmp_path, SPEC, n_train=3_000, model_extra={"sensitive_attributes": ["sex"]})
    batches = http_batches(random.Random(7))
    bodies = [json.dumps(as_columns(events, b)).encode() for b, events in enumerate(batches)]
    local = Monitor(load_config(env.config_path)).models["credit-risk"]
    decoder = ColumnDecoder(local.schema, local.limits)
    assert all(decoder.batch(body) is not None for body in bodies)
    typed, checked = Exporter(env.config_path), Exporter(env.config_path)
    try:
        for events, body in zip(batches, bodies, strict=True):
            r = typed.session.post(
                f"{typed.url}/v1/models/credit-risk/predictions",
                data=body,
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


def test_decoders_are_freed_safely(tmp_path):
    """Decoders built and freed again and again (a schema reloaded), in a process of their
    own: some msgspec types crash the collector when freed (a union of a pattern-checked
    string and a list did), and a crash must show here, not in a serving exporter."""
    import subprocess
    import sys

    model_env(tmp_path, "binary")  # writes the config and the baseline
    script = f"""
import gc
from mlmon.core.config import load_config
from mlmon.core.monitor import Monitor
from mlmon.core.typedcolumns import ColumnDecoder
from mlmon.core.typedrows import RowDecoder
m = Monitor(load_config({str(tmp_path / "mlmon.yml")!r})).models["m"]
body = b'{{"columns": {{"features": {{"age": [1]}}, "prediction": [1], "version": ["v1"]}}}}'
rows = b'{{"events": [{{"features": {{"age": 1}}, "prediction": 1, "version": "v1"}}]}}'
for i in range(1500):
    assert ColumnDecoder(m.schema, m.limits).batch(body) is not None
    assert RowDecoder(m.schema, m.limits).batch(rows) is not None
    if i % 50 == 0:
        gc.collect()
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
