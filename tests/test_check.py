"""`mlmon check`, run as a user runs it in CI: the real CLI in a subprocess, against a
baseline built by the real `mlmon baseline`. Its drift decisions are checked against
scipy on the raw events, its performance against the labels themselves, its --json
against what it printed, and its errors against the line that is wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import write_baseline_config
from mlmon.core.batchfile import FileError, read_events
from mlmon.core.config import load_config
from mlmon.core.monitor import Monitor
from mlmon.demo import synthetic
from scipy import stats as st

MODEL = "credit-risk"
SPEC = synthetic.wide_spec()  # 18 numeric features, 2 categorical; x04 and x13 weigh 0
BATCH = 1_000  # limits.max_batch_events: every file below spans several batches


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-model config (batches of 1,000 events) with its baseline built by
    `mlmon baseline` from 20,000 training rows; returns the config's path."""
    tmp = tmp_path_factory.mktemp("check")
    train = tmp / "training.csv"
    synthetic.write_csv(synthetic.events(SPEC, 20_000, seed=1), train)
    model = {
        "name": MODEL,
        "task": "binary",
        "positive_class": 1,
        "baseline": "credit-risk.json",
        "features": SPEC.config_features(),
    }
    config = write_baseline_config(tmp / "mlmon.yml", model, train)
    doc = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**doc, "limits": {"max_batch_events": BATCH}}))
    return config


def check(config: Path, data: Path, *extra: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "mlmon", "check", "--config", str(config), "--model", MODEL]
    return subprocess.run(
        [*argv, "--data", str(data), *extra], capture_output=True, text=True, timeout=300
    )


def conditions(out: str) -> list[str]:
    """The printed conditions that hold: `ALERT version=V [subject]`."""
    return [
        ln.split(":")[0].split(None, 1)[1] for ln in out.splitlines() if ln.startswith("  FAIL ")
    ]


def test_two_shifted_features_fail_naming_exactly_those_two(env, tmp_path):
    data = tmp_path / "current.jsonl"
    shift = {"x04": 1.0, "x13": 1.0}
    synthetic.write_jsonl(
        synthetic.without_labels(synthetic.events(SPEC, 5_000, seed=42, shift=shift)), data
    )
    done = check(env, data)
    assert done.returncode == 1, done.stdout + done.stderr
    features = [c for c in conditions(done.stdout) if " feature=" in c]
    assert features == [
        "MLModelFeatureDrift version=unversioned feature=x04",
        "MLModelFeatureDrift version=unversioned feature=x13",
    ]
    # nothing else about any single feature or the predictions holds
    assert not [c for c in conditions(done.stdout) if "feature=" in c and c not in features]
    assert "MLModelPredictionDrift" not in done.stdout.split("conditions that hold")[1]
    assert done.stdout.rstrip().endswith("result: FAIL (exit 1)")


def test_a_fresh_sample_of_the_baseline_passes(env, tmp_path):
    """5,000 new rows of the training distribution, with their true labels in the CSV's
    label column: nothing drifts, the model performs as in training, exit 0."""
    data = tmp_path / "current.csv"
    synthetic.write_csv(synthetic.events(SPEC, 5_000, seed=43), data)
    done = check(env, data)
    assert done.returncode == 0, done.stdout + done.stderr
    assert conditions(done.stdout) == []
    assert "labels: 5000 matched" in done.stdout
    assert done.stdout.rstrip().endswith("result: PASS (exit 0)")


def test_labels_that_drag_accuracy_below_its_minimum_fail(env, tmp_path):
    rows = synthetic.events(SPEC, 5_000, seed=44)
    data = tmp_path / "current.jsonl"
    synthetic.write_jsonl(synthetic.without_labels(rows), data)
    truth = tmp_path / "truth.jsonl"
    synthetic.write_jsonl([{"id": r["id"], "label": r["label"]} for r in rows], truth)
    done = check(env, data, "--labels", str(truth))
    assert done.returncode == 0, done.stdout + done.stderr
    # one label in four turned over: accuracy falls below accuracy_min (0.7)
    flipped = [
        {"id": r["id"], "label": 1 - r["label"] if i % 4 == 0 else r["label"]}
        for i, r in enumerate(rows)
    ]
    wrong = tmp_path / "labels.jsonl"
    synthetic.write_jsonl(flipped, wrong)
    out = tmp_path / "result.json"
    done = check(env, data, "--labels", str(wrong), "--json", str(out))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "MLModelAccuracyLow version=unversioned" in conditions(done.stdout)
    assert not [c for c in conditions(done.stdout) if "Drift" in c]
    accuracy = np.mean([r["prediction"] == y["label"] for r, y in zip(rows, flipped, strict=True)])
    assert accuracy < 0.7
    (held,) = [c for c in json.loads(out.read_text())["conditions"] if c["metric"] == "accuracy"]
    assert held["alert"] == "MLModelAccuracyLow"
    assert held["value"] == pytest.approx(accuracy, abs=1e-12)


@pytest.mark.parametrize(
    ("suffix", "error"),
    [
        (".jsonl", "current.jsonl line {line}: features.x02: expected a number, got string"),
        (".csv", "current.csv line {line}: features.x02: expected a number, got 'n/a?'"),
    ],
)
@pytest.mark.parametrize("line", [7, 2_345])  # in the first batch, and in the third
def test_a_bad_row_is_an_error_naming_its_line(env, tmp_path, suffix, error, line):
    rows = synthetic.events(SPEC, 3_000, seed=45)
    data = tmp_path / f"current{suffix}"
    if suffix == ".csv":
        rows[line - 2]["features"]["x02"] = "n/a?"  # line 1 is the header
        synthetic.write_csv(rows, data)
    else:
        rows[line - 1]["features"]["x02"] = "41"
        synthetic.write_jsonl(rows, data)
    done = check(env, data)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines()[0] == "mlmon: error: " + error.format(line=line)
    assert done.stdout == ""


def test_too_few_rows_to_test_is_exit_2(env, tmp_path):
    """Fewer rows than drift.min_samples: nothing can be tested, and a CI gate that tested
    nothing must not pass."""
    data = tmp_path / "current.jsonl"
    synthetic.write_jsonl(synthetic.without_labels(synthetic.events(SPEC, 300, seed=46)), data)
    out = tmp_path / "result.json"
    done = check(env, data, "--json", str(out))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "UNTESTED too few rows to test drift: 300 event(s)" in done.stdout
    doc = json.loads(out.read_text())
    assert (doc["result"], doc["exit_code"], doc["conditions"]) == ("untested", 2, [])
    assert all(f["p_value"] is None and not f["drifted"] for f in doc["features"])


def _cell(x) -> str:
    """A JSON value as the table prints it (written here, not imported)."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _printed_tables(out: str) -> tuple[list[list[str]], list[list[str]]]:
    """The feature rows and the metric rows of the printed report, split in cells."""
    features, metrics, current = [], [], None
    for ln in out.splitlines():
        cells = ln.split()
        if ln.startswith("  feature "):
            current = features
        elif ln.startswith("  metric "):
            current = metrics
        elif not ln.startswith("  ") or not cells or ln.startswith("  FAIL"):
            current = None
        elif current is not None:
            current.append(cells)
    return features, metrics


def test_json_holds_what_was_printed(env, tmp_path):
    rows = synthetic.events(SPEC, 4_000, seed=47, shift={"x05": 0.7})
    for i, r in enumerate(rows):
        r["version"] = "v2" if i % 2 else "v1"
    data, out = tmp_path / "current.jsonl", tmp_path / "result.json"
    synthetic.write_jsonl(rows, data)  # with labels in the rows
    done = check(env, data, "--json", str(out))
    assert done.returncode == 1, done.stdout + done.stderr
    doc = json.loads(out.read_text())
    features, metrics = _printed_tables(done.stdout)
    keys = ("feature", "kind", "present", "test", "p_value", "p_value_adjusted", "score")
    keys += ("drifted", "missing_ratio", "outside_ratio")
    assert features == [[_cell(f[k]) for k in keys] for f in doc["features"]]
    assert len(features) == 2 * 20
    assert [m[:4] for m in metrics] == [
        [m["metric"], m["subject"] or "-", _cell(m["value"]), m["status"]] for m in doc["metrics"]
    ]
    assert {m["metric"] for m in doc["metrics"]} >= {"accuracy", "f1", "prediction_drift"}
    printed = [ln.strip() for ln in done.stdout.splitlines() if ln.startswith("  FAIL ")]
    assert len(printed) == len(doc["conditions"]) >= 2
    for line, c in zip(printed, doc["conditions"], strict=True):
        assert line.startswith(f"FAIL {c['alert']} version={c['version']}")
        assert line.endswith(c["detail"])
    assert ("MLModelFeatureDrift", "v1", "x05") in {
        (c["alert"], c["version"], c["subject"]) for c in doc["conditions"]
    }
    assert doc["exit_code"] == 1 and doc["result"] == "fail"


def _shifted_in_many_ways(n: int, seed: int) -> list[dict]:
    """Shifts a check must tell apart: significant yet below the effect floor (x02, x05),
    a mean shift (x11, x14), a doubled spread with the same mean (x09), 30% missing values
    (x16), a category's share moving to another (c1)."""
    shift = {"x02": 0.08, "x05": 0.15, "x11": 0.6, "x14": -1.0}
    rows = synthetic.without_labels(synthetic.events(SPEC, n, seed=seed, shift=shift))
    rng = np.random.default_rng(seed)
    mu = SPEC.numeric["x09"][0]
    for r in rows:
        f = r["features"]
        f["x09"] = round(mu + 2.0 * (f["x09"] - mu), 4)
        if rng.random() < 0.3:
            f["x16"] = None
        if f["c1"] == "a" and rng.random() < 0.4:
            f["c1"] = "d"
    return rows


def _reference_decisions(train: list[dict], live: list[dict], names: list[str], th: dict):
    """Per feature, from the raw values: KS (scipy.stats.ks_2samp) or chi-squared with PSI,
    Benjamini-Hochberg over all the model's features, then the same two conditions."""
    p, effect = [], []
    for name in names:
        ref = [r["features"][name] for r in train]
        cur = [r["features"].get(name) for r in live if r["features"].get(name) is not None]
        if name in SPEC.numeric:
            res = st.ks_2samp(np.asarray(ref), np.asarray(cur))
            p.append(res.pvalue)
            effect.append((res.statistic, th["drift_ks_min"]))
            continue
        cats = sorted(set(ref) | set(cur))
        table = np.array([[ref.count(c) for c in cats], [cur.count(c) for c in cats]], float)
        p.append(st.chi2_contingency(table, correction=False).pvalue)
        a, b = table[0] / table[0].sum(), table[1] / table[1].sum()
        effect.append((float(np.sum((b - a) * np.log(b / a))), th["drift_psi_min"]))
    adjusted = st.false_discovery_control(p, method="bh")
    return {
        n: bool(q < th["drift_alpha"] and e >= floor)
        for n, q, (e, floor) in zip(names, adjusted, effect, strict=True)
    }


def test_drift_decisions_equal_scipy_on_the_raw_values(env, tmp_path):
    live = _shifted_in_many_ways(4_000, seed=48)
    data, out = tmp_path / "current.jsonl", tmp_path / "result.json"
    synthetic.write_jsonl(live, data)
    done = check(env, data, "--json", str(out))
    assert done.returncode == 1, done.stdout + done.stderr
    doc = json.loads(out.read_text())
    rows = {f["feature"]: f for f in doc["features"]}
    assert doc["correction"] == "benjamini-hochberg"
    train = synthetic.events(SPEC, 20_000, seed=1)  # the rows the baseline was built from
    expected = _reference_decisions(train, live, list(rows), doc["thresholds"])
    assert {n: f["drifted"] for n, f in rows.items()} == expected
    assert sorted(n for n, d in expected.items() if d) == ["c1", "x09", "x11", "x14"]
    # the correction as printed: Benjamini-Hochberg of the check's own p-values
    raw = [f["p_value"] for f in rows.values()]
    bh = st.false_discovery_control(raw, method="bh")
    assert [f["p_value_adjusted"] for f in rows.values()] == pytest.approx(bh, rel=1e-9)
    for name in ("x02", "x05"):  # significant, yet below the floor: no drift
        assert rows[name]["p_value_adjusted"] < 0.05 and rows[name]["score"] < 0.1
    for name in SPEC.numeric:  # the binned KS is close to scipy's on the raw values
        cur = [r["features"][name] for r in live if r["features"].get(name) is not None]
        ref = [r["features"][name] for r in train]
        assert rows[name]["score"] == pytest.approx(st.ks_2samp(ref, cur).statistic, abs=0.02)
    assert rows["x16"]["missing_ratio"] == pytest.approx(
        sum(r["features"]["x16"] is None for r in live) / len(live), abs=1e-12
    )


def test_the_file_is_read_one_batch_at_a_time(env, tmp_path):
    """Batches of limits.max_batch_events come out before the rest of the file is read: a
    broken line 2,500 is reached only after two whole batches were handed over."""
    rows = synthetic.without_labels(synthetic.events(SPEC, 3_000, seed=49))
    rows[0]["timestamp"] = 1_700_000_000.0  # removed: the file is one window
    data = tmp_path / "current.jsonl"
    synthetic.write_jsonl(rows, data)
    lines = data.read_text().splitlines()
    lines[2_499] = lines[2_499][:-5]  # cut short: not JSON
    data.write_text("\n".join(lines) + "\n")
    mm = Monitor(load_config(env)).models[MODEL]
    chunks = read_events(data, mm.schema, mm.limits["max_batch_events"])
    first, second = next(chunks), next(chunks)
    assert [len(first.events), first.lines[0], first.lines[-1]] == [BATCH, 1, BATCH]
    assert [len(second.events), second.lines[0], second.lines[-1]] == [BATCH, 1_001, 2_000]
    assert "timestamp" not in first.events[0] and "id" in first.events[0]
    with pytest.raises(FileError, match=r"^current\.jsonl line 2500: malformed JSON at column "):
        next(chunks)
