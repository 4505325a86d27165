"""History, end to end with real processes: a 4-hour prediction log (bursts of 200 events
every 10 minutes, labels 10 minutes after their predictions) whose `income` shifts by
3 standard deviations for one hour is replayed by `mlmon backfill` into OpenMetrics and
Prometheus blocks; a real Prometheus loads the blocks; `mlmon backtest` says when each
alert would have fired.

The known answers: with 30-minute windows of 1-minute slices, the first shifted burst
drifts the window at its own step (a third of the window is then 3 sigma off), and the
last one leaves the window 30 minutes after it arrived. The backfill's values at a step
equal those of a live `mlmon serve` fed the same events, shifted in time by whole slices.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import Exporter, make_env, parse_metrics, require_binary, wait_until
from mlmon.demo import stack, synthetic

ROOT = Path(__file__).resolve().parent.parent
MODEL = "credit-risk"
BURST, EVERY = 200, 600  # events per burst, seconds between bursts
HOURS = 4
LABEL_DELAY = 600.0


def _start() -> float:
    """Four whole hours ending at least an hour ago, so every burst is history."""
    return (time.time() // 3600 - HOURS - 1) * 3600


def _log(start: float) -> tuple[list[dict], list[dict], float, float]:
    """The bursts (the second and third hours shifted), their labels, and the times of the
    first and last shifted bursts."""
    events, labels = [], []
    onset, back = start + 3600, start + 7200
    for k in range(HOURS * 3600 // EVERY):
        at = start + k * EVERY
        shift = {"income": 3.0} if onset <= at < back else None
        rows = synthetic.events(
            synthetic.credit_spec(), BURST, seed=100 + k, shift=shift, version="v1"
        )
        for i, r in enumerate(rows):
            key = f"b{k}-{i}"
            labels.append({"id": key, "label": r.pop("label"), "timestamp": at + LABEL_DELAY})
            events.append({**r, "id": key, "timestamp": at})
    return events, labels, onset, back - EVERY


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("history")
    extra = {
        "window": {"length": "30m", "slices": 30},
        "drift": {"min_samples": 100},
        "labels": {"ttl": "1d"},
    }
    env = make_env(tmp, synthetic.credit_spec(), n_train=5_000, model_extra=extra)
    start = _start()
    events, labels, onset, last_shifted = _log(start)
    argv = [sys.executable, "-m", "mlmon", "backfill", "--config", str(env.config_path)]
    argv += ["--model", MODEL, "--data", str(_write_jsonl(tmp / "log.jsonl", events))]
    argv += ["--labels", str(_write_jsonl(tmp / "labels.jsonl", labels))]
    argv += ["--output", str(tmp / "out.om"), "--step", "1m", "--tsdb", str(tmp / "tsdb")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    print(done.stdout)
    return {
        "env": env, "tmp": tmp, "events": events, "labels": labels, "start": start,
        "onset": onset, "last_shifted": last_shifted, "om": tmp / "out.om",
    }  # fmt: skip


def _series(prom: str, name: str, end: float, **match: str) -> dict[float, float]:
    """One backfilled series as Prometheus serves it from the blocks, at every step."""
    sel = ",".join(
        f'{k}="{v}"' for k, v in {"job": "mlmon", "instance": "backfill", **match}.items()
    )
    return _query_range(prom, f"{name}{{{sel}}}", _start_of(end), end)


def _first(series: dict[float, float], value: float) -> float:
    return min(t for t, v in series.items() if v == value)


@pytest.fixture(scope="module")
def prometheus(history):
    """A real Prometheus on a copy of the blocks `mlmon backfill --tsdb` created (the
    default retention, 15 days, covers the hours replayed)."""
    require_binary("prometheus")
    work = history["tmp"] / "prometheus"
    shutil.copytree(history["tmp"] / "tsdb", work / "data")
    prom = stack.start_prometheus({"global": {"scrape_interval": "1m"}}, work)
    yield prom
    prom.stop()


@pytest.mark.integration
def test_the_drift_flag_first_appears_at_the_onset_step(history, prometheus):
    """Read back from a real Prometheus that loaded the blocks: the flag is 0 before the
    onset, 1 from the onset's own step until the last shifted burst leaves the window, 30
    minutes after it came, and there is one sample per 1-minute step."""
    end = history["start"] + HOURS * 3600
    flag = _series(prometheus.url, "mlmon_feature_drifted", end, feature="income", version="v1")
    onset, last = history["onset"], history["last_shifted"]
    print(f"onset {onset}, first flagged {_first(flag, 1.0)}")
    assert _first(flag, 1.0) == onset
    assert {v for t, v in flag.items() if t < onset} == {0.0}
    assert {v for t, v in flag.items() if onset <= t < last + 1800} == {1.0}
    assert {v for t, v in flag.items() if t >= last + 1800} == {0.0}
    steps = sorted(flag)
    assert steps[0] == history["start"] and steps[-1] == end
    assert all(b - a == 60 for a, b in itertools.pairwise(steps))
    # the file's layout: every family once, its metadata first, `# EOF` last
    text = history["om"].read_text()
    helps = [line.split(" ")[2] for line in text.splitlines() if line.startswith("# HELP ")]
    assert len(helps) == len(set(helps)) > 100 and text.endswith("\n# EOF\n")


def _start_of(end: float) -> float:
    return end - HOURS * 3600


def _query_range(url: str, expr: str, start: float, end: float, step: float = 60) -> dict:
    import requests

    r = requests.get(
        f"{url}/api/v1/query_range",
        params={"query": expr, "start": start, "end": end, "step": step},
        timeout=30,
    ).json()
    assert r["status"] == "success", r
    (series,) = r["data"]["result"]
    return {float(t): float(v) for t, v in series["values"]}


def _per_version(samples: dict) -> dict:
    """The samples of the model's per-version families (the ones a replay and a live
    exporter must agree on; the exporter's own request counters differ by design)."""
    return {
        (name, labels): v
        for (name, labels), v in samples.items()
        if ("version", "v1") in labels and name.startswith("mlmon_")
    }


@pytest.mark.integration
def test_a_step_of_the_backfill_equals_a_live_exporter_fed_the_same_events(history, prometheus):
    """The events and labels up to one step (5 minutes after the onset), shifted by whole
    1-minute slices so that step falls in the live exporter's current slice, sent to a
    real `mlmon serve`: every per-version sample equals the backfill's at that step."""
    at = history["onset"] + 300
    events = [e for e in history["events"] if e["timestamp"] <= at]
    labels = [x for x in history["labels"] if x["timestamp"] <= at]
    want = _per_version(_instant(prometheus.url, '{__name__=~"mlmon_.+",instance="backfill"}', at))

    exporter = Exporter(history["env"].config_path)
    try:
        wait_until(lambda: time.time() % 60 < 5, 70, "the start of a slice", interval=0.2)
        delta = (time.time() // 60 - at // 60) * 60
        by_time: dict[tuple[float, bool], list[dict]] = {}
        for e in events:
            by_time.setdefault((e["timestamp"], False), []).append(e)
        for x in labels:
            by_time.setdefault((x["timestamp"], True), []).append(x)
        url = f"{exporter.url}/v1/models/{MODEL}"
        for (_t, is_label), rows in sorted(by_time.items()):
            moved = [{**r, "timestamp": r["timestamp"] + delta} for r in rows]
            body = {"labels": moved} if is_label else {"events": moved}
            path = "labels" if is_label else "predictions"
            r = exporter.session.post(f"{url}/{path}", json=body, timeout=30)
            assert r.status_code == 200, r.text
        got = _per_version(parse_metrics(exporter.get("/metrics").text))
        assert time.time() // 60 == (at + delta) // 60, "the slice moved on: rerun"
    finally:
        exporter.stop()
    assert len(want) > 150
    assert set(got) == set(want), sorted(set(got) ^ set(want))[:10]
    differ = {
        k: (got[k], want[k])
        for k in want
        if got[k] != pytest.approx(want[k], rel=1e-9, nan_ok=True)
    }
    assert not differ, list(differ.items())[:10]
    assert (
        want[
            ("mlmon_feature_drifted", (("feature", "income"), ("model", MODEL), ("version", "v1")))
        ]
        == 1
    )


# A rule chain with a known answer: a recording rule, a second one that reads the first
# (promtool alone cannot backfill it), and an alert on the second with `for: 10m`.
KNOWN = {
    "groups": [
        {
            "name": "known",
            "rules": [
                {
                    "record": "model_version_feature:known_drifted:max",
                    "expr": "max without (instance, pod) (mlmon_feature_drifted)",
                },
                {
                    "record": "model_version_feature:known_drifted:twice",
                    "expr": "2 * model_version_feature:known_drifted:max",
                },
                {
                    "alert": "KnownIncomeDrift",
                    "expr": 'model_version_feature:known_drifted:twice{feature="income"} == 2',
                    "for": "10m",
                    "labels": {"severity": "info"},
                },
            ],
        }
    ]
}


@pytest.mark.integration
def test_the_backtest_fires_when_the_replayed_flags_say(history, prometheus, tmp_path):
    """Over the backfilled hours, with the bundled rules and KNOWN: KnownIncomeDrift is
    pending from the first step the backfilled `income` flag reads 1, fires 10 minutes
    later and resolves at the first step it reads 0 again; MLModelFeatureDrift fires for
    `income`, for no other feature; no alert about the exporter itself fires."""
    start, end = history["start"], history["start"] + HOURS * 3600
    known = tmp_path / "known.yml"
    known.write_text(yaml.safe_dump(KNOWN))
    out = tmp_path / "backtest.json"
    argv = [sys.executable, "-m", "mlmon", "backtest", "--prometheus", prometheus.url]
    argv += ["--rules", str(ROOT / "prometheus/rules"), str(known)]
    argv += ["--from", str(int(start)), "--to", str(int(end)), "--json", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    print(done.stdout, done.stderr[-3000:])
    assert done.returncode == 0, done.stderr
    firings = json.loads(out.read_text())["firings"]

    flag = _series(prometheus.url, "mlmon_feature_drifted", end, feature="income", version="v1")
    on = _first(flag, 1.0)
    off = min(t for t, v in flag.items() if t > on and v == 0.0)
    (k,) = [f for f in firings if f["alert"] == "KnownIncomeDrift"]
    assert (k["pending_at"], k["fired_at"], k["resolved_at"]) == (on, on + 600, off)
    assert k["labels"] == {
        "alertname": "KnownIncomeDrift", "feature": "income", "job": "mlmon",
        "model": MODEL, "version": "v1", "severity": "info",
    }  # fmt: skip
    drift = [f for f in firings if f["alert"] == "MLModelFeatureDrift"]
    assert {f["labels"]["feature"] for f in drift} == {"income"}
    assert all(on <= f["fired_at"] <= on + 3600 for f in drift)
    assert not [f for f in firings if f["alert"].startswith("Mlmon")]


def _instant(url: str, expr: str, at: float) -> dict:
    """Every series of ``expr`` at time ``at``, keyed as `parse_metrics` keys a scrape
    (without the target labels), histograms' `le` written as the exporter writes it."""
    import requests

    r = requests.get(f"{url}/api/v1/query", params={"query": expr, "time": at}, timeout=30).json()
    assert r["status"] == "success", r
    out = {}
    for series in r["data"]["result"]:
        labels = dict(series["metric"])
        name = labels.pop("__name__")
        labels.pop("job"), labels.pop("instance")
        out[(name, tuple(sorted(labels.items())))] = float(series["value"][1])
    return out


# -- the pieces, without processes ---------------------------------------------------------


def _alert(hold: float):
    from mlmon.history.rules import Alerting

    return Alerting("A", "up", hold, {"severity": "info"}, None, "g")


def test_for_holds_resets_on_a_gap_and_resolves_at_the_first_miss():
    from mlmon.history.backtest import firings

    grid = [60.0 * i for i in range(20)]
    # returned at 0-6 (a gap at 7), 8-13, 16-19 (until the end)
    present = {(("x", "1"),): {t: 1.0 for t in grid if t / 60 not in (7, 14, 15)}}
    got = firings(_alert(300), present, grid)
    assert [(f.pending_at, f.fired_at, f.resolved_at) for f in got] == [
        (0.0, 300.0, 420.0),
        (480.0, 780.0, 840.0),
    ]  # 16-19 is 3 minutes: pending, never fired
    now = firings(_alert(0), present, grid)
    assert [(f.fired_at, f.resolved_at) for f in now] == [(0, 420), (480, 840), (960, None)]
    assert now[0].labels == {"x": "1", "severity": "info", "alertname": "A"}


def test_rules_fall_into_dependency_levels_and_a_cycle_is_refused(tmp_path):
    from mlmon.history import rules

    f = tmp_path / "r.yml"
    f.write_text(yaml.safe_dump(KNOWN))
    levels = rules.load([f]).levels()
    assert [[r.record for r in level] for level in levels] == [
        ["model_version_feature:known_drifted:max"],
        ["model_version_feature:known_drifted:twice"],
    ]
    # a name inside a string or a comment is no dependency
    assert rules.names_in('label_replace(a:b, "x", "c:d", "", "") # e:f') == {
        "label_replace",
        "a:b",
    }
    cyc = {"groups": [{"name": "c", "rules": [
        {"record": "a:x:y", "expr": "b:x:y"}, {"record": "b:x:y", "expr": "a:x:y"}]}]}  # fmt: skip
    f.write_text(yaml.safe_dump(cyc))
    with pytest.raises(rules.RulesError, match="depend on each other: a:x:y, b:x:y"):
        rules.load([f]).levels()
    assert rules.duration("1h30m") == 5400 and rules.duration("0s") == 0
    with pytest.raises(rules.RulesError):
        rules.duration("90")


def test_a_log_row_without_a_timestamp_is_named_and_nothing_is_written(history, tmp_path):
    rows = [dict(e) for e in history["events"][:3]]
    del rows[2]["timestamp"]
    log = _write_jsonl(tmp_path / "log.jsonl", rows)
    out = tmp_path / "out.om"
    argv = [sys.executable, "-m", "mlmon", "backfill", "--config", str(history["env"].config_path)]
    argv += ["--model", MODEL, "--data", str(log), "--output", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "log.jsonl line 3: timestamp: required in a history" in done.stderr
    assert not out.exists()
    rows[2]["timestamp"] = rows[1]["timestamp"]
    rows[1]["features"] = {"age": "old"}
    _write_jsonl(log, rows)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "log.jsonl line 2: features.age:" in done.stderr, done.stderr


def test_recorded_series_are_written_as_a_strict_parser_reads_them():
    """Names with colons kept (prometheus_client's own writer would rewrite them), label
    values escaped, NaN and infinities spelled as OpenMetrics spells them."""
    from mlmon.history.openmetrics import gauge_lines
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    odd = 'a "quoted" \\ back\nslash'
    series = [({"model": odd, "v": "1"}, [(60.0, 1.5), (120.0, float("nan"))]),
              ({"model": "m"}, [(60.0, float("inf")), (120.0, -2.0)])]  # fmt: skip
    text = "\n".join(gauge_lines("model:mlmon_x:ratio", series)) + "\n# EOF\n"
    (fam,) = text_string_to_metric_families(text)
    assert fam.name == "model:mlmon_x:ratio" and fam.type == "gauge"
    got = [(s.labels, s.value, float(s.timestamp)) for s in fam.samples]
    assert got[0] == ({"model": odd, "v": "1"}, 1.5, 60.0)
    assert got[1][0] == {"model": odd, "v": "1"} and got[1][1] != got[1][1]  # NaN
    assert got[2:] == [({"model": "m"}, float("inf"), 60.0), ({"model": "m"}, -2.0, 120.0)]
    with pytest.raises(ValueError, match="not a label name"):
        list(gauge_lines("x", [({"__name__": "y"}, [(1.0, 1.0)])]))


def test_the_demo_history_keeps_time_order_and_its_daily_cycle():
    from mlmon.demo import history

    start = 1_796_000_400.0 // 86_400 * 86_400  # a midnight (UTC)
    items = list(history.items(start, start + 2 * 86_400, 0.1))
    assert [it.at for it in items] == sorted(it.at for it in items)
    predicted = {it.body["id"]: it.at for it in items if not it.label and "id" in it.body}
    labels = [it for it in items if it.label]
    assert labels and all(predicted[x.body["id"]] + 600 == x.at for x in labels)
    seen: set[str] = set()
    for it in items:  # every label after its prediction
        if it.label:
            assert it.body["id"] in seen
        elif "id" in it.body:
            seen.add(it.body["id"])

    def hour(h: int) -> int:
        return sum(1 for it in items if not it.label and (it.at - start) // 3_600 == h)

    # 0.1/s at 15:00, a third of it at 03:00: about 360 and 120 inferences an hour (the
    # four bursts of an hour follow the cosine from its start)
    assert hour(15) == pytest.approx(360, abs=2) and hour(3) == pytest.approx(120, abs=2)
    failed = sum(1 for it in items if "error" in it.body)
    assert 0.005 < failed / len(predicted) < 0.02
