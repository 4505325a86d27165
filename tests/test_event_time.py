"""Event time, over real sockets to `mlmon serve`: an event's `timestamp` places it in its
window slice, events older than the window count in the totals only (and as late), events
stamped too far ahead count at now (and as future), and a label's delay runs from its
prediction's timestamp to its own. The placement rule itself is checked against a
one-event-at-a-time reference on arbitrary timestamps."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import yaml
from helpers import Exporter, make_env, parse_metrics, wait_until
from hypothesis import given, settings
from hypothesis import strategies as st
from mlmon.core.state import LATE, event_times
from mlmon.demo import synthetic

MODEL = "credit-risk"


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted({"model": MODEL, **labels}.items()))), 0.0)


@pytest.fixture()
def short_window(tmp_path):
    """The credit-risk model with a 60 s window of 6 slices of 10 s, drift tested from 100
    events, labels kept for a day."""
    extra = {
        "window": {"length": "60s", "slices": 6},
        "drift": {"min_samples": 100},
        "labels": {"ttl": "1d"},
    }
    return make_env(tmp_path, synthetic.credit_spec(), n_train=5_000, model_extra=extra)


def _stamped(n: int, seed: int, at: float, version: str, shift: dict | None = None) -> list:
    rows = synthetic.without_labels(
        synthetic.events(synthetic.credit_spec(), n, seed=seed, version=version, shift=shift)
    )
    return [{**r, "timestamp": at} for r in rows]


@pytest.mark.integration
def test_old_events_count_in_the_totals_only_and_raise_no_drift(short_window):
    """The report that opened the issue: 600 drifted events stamped two hours ago used to
    land in the window and raise drift."""
    exporter = Exporter(short_window.config_path)
    try:
        old = _stamped(600, 1, time.time() - 7_200, "v1", shift={"income": 3.0})
        assert exporter.post(MODEL, old).status_code == 200
        now = _stamped(300, 2, time.time(), "v2")
        assert exporter.post(MODEL, now).status_code == 200
        samples = parse_metrics(exporter.get("/metrics").text)
    finally:
        exporter.stop()
    assert _value(samples, "mlmon_late_events_total") == 600
    assert _value(samples, "mlmon_future_events_total") == 0
    # all-time: counted; windowed: absent
    assert _value(samples, "mlmon_inference_requests_total", version="v1") == 600
    assert _value(samples, "mlmon_window_events", version="v1") == 0
    assert _value(samples, "mlmon_drifted_features", version="v1") == 0
    assert _value(samples, "mlmon_window_events", version="v2") == 300


@pytest.mark.integration
def test_an_event_leaves_the_window_when_its_own_slice_does(short_window):
    """Events stamped 45 s ago sit in the slice of 45 s ago, and leave the 60 s window about
    15 s later, while events stamped now stay."""
    exporter = Exporter(short_window.config_path)
    try:
        t0 = time.time()
        assert exporter.post(MODEL, _stamped(200, 3, t0 - 45, "earlier")).status_code == 200
        assert exporter.post(MODEL, _stamped(200, 4, t0, "now")).status_code == 200

        def window() -> dict[str, float]:
            samples = parse_metrics(exporter.get("/metrics").text)
            return {
                v: _value(samples, "mlmon_window_events", version=v) for v in ("earlier", "now")
            }

        assert window() == {"earlier": 200, "now": 200}
        wait_until(lambda: window()["earlier"] == 0, 30, "the earlier slice to leave")
        left = time.time() - t0
        assert window()["now"] == 200
    finally:
        exporter.stop()
    # its slice began 45 to 55 s before t0 and leaves 60 s after it began
    assert 4 <= left <= 25, left


@pytest.mark.integration
def test_events_ahead_of_the_clock_count_at_now(short_window):
    exporter = Exporter(short_window.config_path)
    try:
        skew = _stamped(50, 5, time.time() + 30, "v1")  # within the 60 s tolerance
        ahead = _stamped(70, 6, time.time() + 3_600, "v1")
        assert exporter.post(MODEL, skew + ahead).status_code == 200
        samples = parse_metrics(exporter.get("/metrics").text)
    finally:
        exporter.stop()
    assert _value(samples, "mlmon_future_events_total") == 70
    assert _value(samples, "mlmon_window_events", version="v1") == 120


@pytest.mark.integration
def test_label_delay_runs_from_the_predictions_timestamp(short_window):
    exporter = Exporter(short_window.config_path)
    try:
        t0 = time.time()
        events = _stamped(4, 7, t0 - 3_000, "v1")
        for i, e in enumerate(events):
            e["id"] = f"p{i}"
        assert exporter.post(MODEL, events).status_code == 200
        labels = [
            {"id": "p0", "label": 1},  # no timestamp: now, about 3,000 s after
            {"id": "p1", "label": 0, "timestamp": t0 - 3_000 + 120},  # its own: 120 s
            {"id": "p2", "label": 0, "timestamp": t0 - 3_000 - 50},  # before: 0 s
        ]
        url = f"{exporter.url}/v1/models/{MODEL}/labels"
        r = exporter.session.post(url, json={"labels": labels}, timeout=30)
        assert r.status_code == 200, r.text
        bad = exporter.session.post(url, json={"id": "p3", "label": 1, "timestamp": "x"})
        assert bad.status_code == 400 and bad.json()["details"][0]["field"] == "timestamp"
        samples = parse_metrics(exporter.get("/metrics").text)
    finally:
        exporter.stop()

    def bucket(le: str) -> float:
        return _value(samples, "mlmon_label_delay_seconds_bucket", version="v1", le=le)

    assert _value(samples, "mlmon_label_delay_seconds_count", version="v1") == 3
    assert bucket("60.0") == 1  # the label stamped before its prediction: 0
    assert bucket("300.0") == 2  # + 120 s
    assert bucket("900.0") == 2 and bucket("3600.0") == 3  # + about 3,000 s
    delay_sum = _value(samples, "mlmon_label_delay_seconds_sum", version="v1")
    assert 120 + 3_000 <= delay_sum <= 120 + 3_000 + 60


# -- the placement rule against a reference -------------------------------------------------

SLICE, SLICES, TOLERANCE = 10.0, 6, 60.0
NOW = 1_800_000_005.0


def _reference(ts, now: float) -> tuple[list[int | None], int, int]:
    """One event at a time: (each event's slice number, None when late), late, future."""
    head = math.floor(now / SLICE)
    out, late, future = [], 0, 0
    for t in ts:
        t = now if t is None else float(t)
        if t > now + TOLERANCE:
            future += 1
        t = min(t, now)
        h = math.floor(t / SLICE)
        if h <= head - SLICES:
            late += 1
            out.append(None)
        else:
            out.append(h)
    return out, late, future


stamps = st.lists(
    st.one_of(
        st.none(),
        st.floats(NOW - 100, NOW + 100),
        st.floats(-1e300, 1e300),
        st.integers(-(2**80), 2**80),
        st.sampled_from([NOW - 50.0, NOW - 49.999, NOW - 60.0, NOW + 60.0, NOW + 60.001]),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=500, deadline=None)
@given(ts=stamps)
def test_each_event_gets_the_slice_a_one_by_one_reference_gives(ts):
    got = event_times(ts, NOW, SLICE, SLICES, TOLERANCE)
    heads, late, future = _reference(ts, NOW)
    assert (got.late, got.future) == (late, future)
    if got.heads is None:
        assert all(t is None for t in ts)
        return
    assert [None if h == LATE else h for h in got.heads.tolist()] == heads
    assert np.all(got.times <= NOW)


def test_a_window_of_six_slices_keeps_the_last_six():
    # the slice of NOW - 50 (1_799_999_955 // 10 = head - 5) is the oldest one kept
    got = event_times([NOW - 50.0, NOW - 55.0, NOW - 60.1], NOW, SLICE, SLICES, TOLERANCE)
    assert got.heads.tolist()[:2] == [179_999_995, 179_999_995]
    assert got.heads.tolist()[2] == LATE and got.late == 1


def test_the_window_settings_take_a_future_tolerance(tmp_path):
    from mlmon.core.config import load_config

    cfg = tmp_path / "c.yml"
    model = {"name": "m", "task": "regression", "baseline": "m.json"}
    cfg.write_text(
        yaml.safe_dump({"defaults": {"window": {"future_tolerance": "5m"}}, "models": [model]})
    )
    assert load_config(cfg).models[0].window.future_tolerance_seconds == 300
