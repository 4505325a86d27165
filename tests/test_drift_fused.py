"""The fused drift evaluation (`mlmon.stats.drift.evaluate`: every test of every feature
and output as one row of one padded matrix) equals, field by field, the per-block
evaluation it replaced (frozen in bench/drift_reference.py), on thousands of seeded random
windows over schemas that cover the edge cases: binary, multiclass and regression models,
no categorical or no numeric features, a feature and a class the baseline never saw,
categories folded into the other bucket, a constant feature, a classifier without
reference scores, empty windows and windows below min_samples, each correction and both
KS p-values. The reference is checked against scipy by tests/test_drift.py and
tests/test_stats.py."""

from __future__ import annotations

import copy
import dataclasses
import gc
import json

import numpy as np
import pytest
import yaml
from mlmon.core.baseline import build_profile, read_training_data
from mlmon.core.config import load_config
from mlmon.core.schema import ModelSchema, resolve
from mlmon.core.state import Layout
from mlmon.stats import drift, drift_plan
from mlmon.stats.drift import DriftReport

from bench import drift_reference

# Equal to rounding: the fused code sums padded rows (a different order of the same
# terms) and builds Wasserstein's live CDF as cumulative counts over the total instead of
# cumulative proportions.
RTOL, ATOL = 1e-12, 1e-13

NUMERIC = ("n_norm", "n_int", "n_skew", "n_const")
CATEGORICAL = ("c_two", "c_many", "c_rare")
CLASSES = ("small", "medium", "large", "huge")  # "huge" is never predicted in training


def _training_rows(task: str, n: int, rng: np.random.Generator, scores: bool) -> list[dict]:
    rows = []
    for _ in range(n):
        x = float(rng.normal(10.0, 3.0))
        feats = {
            "n_norm": x,
            "n_int": int(rng.integers(1, 7)),
            "n_skew": float(rng.exponential(2.0)),
            "n_const": 3.0,
            "c_two": str(rng.choice(["y", "n"], p=[0.7, 0.3])),
            "c_many": f"k{int(rng.zipf(1.6)) % 15}",  # more than top_k: an other bucket
            "c_rare": str(rng.choice(["a", "b", "c"], p=[0.9, 0.08, 0.02])),
        }
        row: dict = {"features": feats}
        if task == "regression":
            row["prediction"] = round(2.0 * x + float(rng.normal(0, 1)), 3)
        elif task == "binary":
            p = 1.0 / (1.0 + np.exp(-(x - 10.0) / 3.0))
            row["prediction"] = int(p >= 0.5)
            if scores:
                row["scores"] = {"1": round(float(p), 6)}
        else:
            logits = np.array([-x / 4.0, 0.0, x / 4.0 - 2.0])
            p = np.exp(logits) / np.exp(logits).sum()
            row["prediction"] = CLASSES[int(p.argmax())]
            row["scores"] = {c: float(v) for c, v in zip(CLASSES, p, strict=False)}
        rows.append(row)
    return rows


MODELS = {
    # name: (task, numeric features, categorical features, reference scores)
    "binary": ("binary", NUMERIC, CATEGORICAL, True),
    "binary-no-scores": ("binary", NUMERIC[:2], CATEGORICAL[:1], False),
    "multiclass": ("multiclass", NUMERIC, CATEGORICAL, True),
    "regression": ("regression", NUMERIC, CATEGORICAL, False),
    "numeric-only": ("binary", NUMERIC, (), True),
    "categorical-only": ("binary", (), CATEGORICAL, True),
    # features on few distinct values: their rows are narrower than the output's
    "narrow-binary": ("binary", ("n_int", "n_const"), CATEGORICAL, True),
    "narrow-regression": ("regression", ("n_int",), ("c_two",), False),
}


@pytest.fixture(scope="module")
def schemas(tmp_path_factory) -> dict[str, ModelSchema]:
    tmp = tmp_path_factory.mktemp("fused")
    models = []
    for name, (task, num, cat, _) in MODELS.items():
        model = {
            "name": name,
            "task": task,
            "baseline": f"{name}.json",
            "features": {**dict.fromkeys(num, "numeric"), **dict.fromkeys(cat, "categorical")},
            "drift": {"top_k": 5, "min_samples": 100},
        }
        if task == "binary":
            model["positive_class"] = 1
        if task == "multiclass":
            model["classes"] = list(CLASSES)
        models.append(model)
    (tmp / "c.yml").write_text(yaml.safe_dump({"models": models}))
    cfg = load_config(tmp / "c.yml")
    out = {}
    for i, m in enumerate(cfg.models):
        task, num, cat, scores = MODELS[m.name]
        rows = _training_rows(task, 3_000, np.random.default_rng(i), scores)
        data = tmp / f"{m.name}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        out[m.name] = resolve(m, build_profile(m, read_training_data(data, num + cat, False)))
    out["empty-references"] = _with_empty_references(out["binary"])
    return out


def _with_empty_references(schema: ModelSchema) -> ModelSchema:
    """A baseline in which one numeric and one categorical feature have no values at all
    (their reference side is empty: no test, as with an empty window)."""
    profile = copy.deepcopy(schema.profile)
    num, cat = profile["features"]["n_int"], profile["features"]["c_rare"]
    num["grid_counts"] = [0] * len(num["grid_counts"])
    cat["categories"] = [[c, 0] for c, _ in cat["categories"]]
    cat["other"] = 0
    return resolve(schema.config, profile)


def _variant(schema: ModelSchema, **drift_settings: object) -> ModelSchema:
    """The same baseline under other drift settings (a new schema: a new plan)."""
    cfg = schema.config
    new = dataclasses.replace(cfg, drift=dataclasses.replace(cfg.drift, **drift_settings))
    return dataclasses.replace(schema, config=new)


# ------------------------------------------------------------------ random windows
def _row_counts(
    rng: np.random.Generator, ref: np.ndarray, real: int, min_samples: int
) -> np.ndarray:
    """One row of live counts over ``real`` bins (the row's width beyond them is padding a
    window never fills): empty, below or at min_samples, the reference itself scaled,
    one spike, mass where the reference has none, or the reference reshuffled."""
    out = np.zeros(ref.size, dtype=np.int64)
    kind = rng.integers(0, 8)
    size = int(
        (0, 1, max(min_samples - 1, 0), min_samples, *rng.integers(1, 40_000, 4))[
            rng.integers(0, 8)
        ]
    )
    base = ref[:real].astype(float)
    if kind == 0 or size == 0:
        return out
    if kind == 1 and base.sum() > 0:
        out[:real] = ref[:real].astype(np.int64) * int(rng.integers(1, 4))
        return out
    if kind == 2:
        out[rng.integers(0, real)] = size
        return out
    if kind == 3 and (base == 0).any():  # only where the reference is empty
        where = np.flatnonzero(base == 0)
        out[where] = rng.multinomial(size, np.full(where.size, 1.0 / where.size))
        return out
    p = base / base.sum() if base.sum() > 0 else np.full(real, 1.0 / real)
    shift = rng.dirichlet(np.ones(real)) if kind >= 6 else p
    mix = (1 - 0.3 * (kind >= 5)) * p + 0.3 * (kind >= 5) * shift
    out[:real] = rng.multinomial(size, mix / mix.sum())
    return out


def _block_counts(rng: np.random.Generator, block, min_samples: int) -> np.ndarray:
    if block is None:
        return np.zeros((1, 1), dtype=np.int64)
    widths = getattr(block, "n_bins", None)
    if widths is None:  # categorical: the vocabulary and the other bucket
        widths = [len(c) for c in block.categories]
    rows = [
        _row_counts(rng, block.ref_counts[i], int(widths[i]), min_samples)
        for i in range(len(block))
    ]
    return np.array(rows, dtype=np.int64).reshape(len(block), block.width)


def _window(rng: np.random.Generator, schema: ModelSchema, empty: bool) -> tuple[np.ndarray, ...]:
    """The four count blocks as the monitor passes them: views of one window vector."""
    lay = Layout(schema)
    w = np.zeros(lay.size, dtype=np.int64)
    if not empty:
        need = schema.config.drift.min_samples
        pred = schema.prediction_numeric
        if pred is None:
            pred = schema.prediction_classes
        for part, block in (
            (lay.num_bins, schema.numeric),
            (lay.cat_bins, schema.categorical),
            (lay.pred_bins, pred),
            (lay.score_bins, schema.score),
        ):
            Layout.view(w, part)[...] = _block_counts(rng, block, need)
    v = Layout.view
    return v(w, lay.num_bins), v(w, lay.cat_bins), v(w, lay.pred_bins), v(w, lay.score_bins)


def _thresholds(rng: np.random.Generator) -> dict[str, float]:
    """From strict to "everything drifts", so both values of every flag occur."""
    return {
        "drift_alpha": float(rng.choice([0.01, 0.05, 0.5, 1.0])),
        "drift_ks_min": float(rng.choice([0.0, 0.02, 0.1, 1.0])),
        "drift_psi_min": float(rng.choice([0.0, 0.02, 0.1, 1.0])),
    }


# ------------------------------------------------------------------ comparison
def _close(got, want, what: str) -> None:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, what
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan), f"{what}: NaN at {got} vs {want}"
    assert np.allclose(got[~nan], want[~nan], rtol=RTOL, atol=ATOL), f"{what}: {got} vs {want}"


def assert_reports_equal(got: DriftReport, want: DriftReport) -> None:
    assert got.features == want.features
    assert got.kinds == want.kinds and got.test == want.test
    assert got.n.dtype == want.n.dtype and np.array_equal(got.n, want.n)
    assert list(got.scores) == list(want.scores)
    for method in want.scores:
        _close(got.scores[method], want.scores[method], method)
    for name in ("p_value", "p_adjusted", "effect"):
        _close(getattr(got, name), getattr(want, name), name)
    for name in ("drifted", "reported"):
        g, w = getattr(got, name), getattr(want, name)
        assert g.dtype == w.dtype and np.array_equal(g, w), f"{name}: {g} vs {w}"
    assert [o.output for o in got.outputs] == [o.output for o in want.outputs]
    for g, w in zip(got.outputs, want.outputs, strict=True):
        assert g.n == w.n and type(g.n) is type(w.n), g.output
        assert list(g.scores) == list(w.scores), g.output
        _close(list(g.scores.values()), list(w.scores.values()), f"{g.output} scores")
        _close(g.p_value, w.p_value, f"{g.output} p-value")
        assert g.drifted is w.drifted, g.output


def _compare(schema: ModelSchema, seed: int, windows: int) -> None:
    rng = np.random.default_rng(seed)
    for i in range(windows):
        live = _window(rng, schema, empty=i == 0)
        th = _thresholds(rng)
        assert_reports_equal(
            drift.evaluate(schema, *live, th), drift_reference.evaluate(schema, *live, th)
        )


# ------------------------------------------------------------------ the tests
@pytest.mark.parametrize("name", [*MODELS, "empty-references"])
@pytest.mark.parametrize(
    ("correction", "min_samples"),
    [("benjamini-hochberg", 100), ("bonferroni", 1), ("none", 500)],
)
def test_fused_equals_per_block_reference(schemas, name, correction, min_samples):
    schema = _variant(schemas[name], correction=correction, min_samples=min_samples)
    _compare(schema, seed=sum(map(ord, name + correction)), windows=150)


@pytest.mark.parametrize("name", ["binary", "multiclass", "regression", "empty-references"])
def test_fused_equals_reference_with_kstwo_p_values(schemas, name):
    _compare(_variant(schemas[name], ks_p_value="kstwo"), seed=7, windows=15)


def test_the_edge_cases_occur(schemas):
    """The random windows do reach what the comparison is meant to cover."""
    schema = _variant(schemas["empty-references"], min_samples=100)
    rng = np.random.default_rng(3)
    seen = {"unreported": 0, "reported": 0, "drifted": 0, "not drifted": 0, "no outputs": 0}
    for i in range(200):
        r = drift.evaluate(schema, *_window(rng, schema, empty=i == 0), _thresholds(rng))
        seen["unreported"] += int((~r.reported).sum())
        seen["reported"] += r.tested_count
        seen["drifted"] += r.drifted_count
        seen["not drifted"] += int((r.reported & ~r.drifted).sum())
        seen["no outputs"] += sum(np.isnan(o.p_value) for o in r.outputs)
    assert all(v > 20 for v in seen.values()), seen
    # the empty reference rows are never tested
    f_num = len(schema.numeric)
    empty = [schema.numeric.names.index("n_int"), f_num + schema.categorical.names.index("c_rare")]
    assert (
        not drift.evaluate(schema, *_window(rng, schema, False), _thresholds(rng))
        .reported[empty]
        .any()
    )


def test_plan_is_built_once_per_schema_and_forgotten_with_it(schemas):
    schema = _variant(schemas["binary"])
    live = _window(np.random.default_rng(1), schema, empty=False)
    plan = drift_plan.plan_for(schema, live)
    assert drift_plan.plan_for(schema, live) is plan
    other = _variant(schemas["binary"])
    assert drift_plan.plan_for(other, live) is not plan
    key = id(schema)
    del schema, plan
    gc.collect()
    assert key not in drift_plan._plans


def test_window_of_another_shape_is_refused(schemas):
    schema = schemas["binary"]
    num, cat, pred, score = _window(np.random.default_rng(1), schema, empty=False)
    th = _thresholds(np.random.default_rng(1))
    with pytest.raises(ValueError, match="shaped"):
        drift.evaluate(schema, num[:, :-1], cat, pred, score, th)
