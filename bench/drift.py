"""What all windowed drift tests of one model cost: 50 features (45 numeric, 5 categorical)
of a binary classifier, plus its predicted class and score, on the suite's data (a 20,000-row
baseline, a 10,000-event window with one feature shifted).

    python bench/drift.py [--runs 100] [--json bench/results/drift.json]

Three things are timed in the same run, interleaved, each call on its own:
- the exporter's evaluation, called as a scrape calls it (`ModelMonitor._drift`);
- the per-block evaluation it replaced (bench/drift_reference.py), on the same views;
- scipy's `ks_2samp` on the raw values of the 45 numeric features (10,000 each side).

Twice: *warm*, the two evaluations alternating back to back; and *interleaved*, each
evaluation right after a scipy run, as the suite alternates them (so on caches scipy has
just filled). Every figure is a median with p90 and p99 over the runs; each ratio is
between medians of the same run and mode.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from mlmon.core.config import load_config
from mlmon.core.monitor import ModelMonitor, Monitor
from mlmon.core.state import Layout
from mlmon.demo import synthetic
from scipy.stats import ks_2samp

from bench import drift_reference

FEATURES = 50


def summary(values: list[float]) -> dict[str, float]:
    v = np.asarray(values)
    return {
        "median": float(np.median(v)),
        "p90": float(np.percentile(v, 90)),
        "p99": float(np.percentile(v, 99)),
        "min": float(v.min()),
        "max": float(v.max()),
        "runs": len(values),
    }


def previous(m: ModelMonitor, window: np.ndarray) -> Any:
    """`ModelMonitor._drift` with the per-block evaluation it called before."""
    lay, v = m.layout, Layout.view
    return drift_reference.evaluate(
        m.schema,
        v(window, lay.num_bins),
        v(window, lay.cat_bins),
        v(window, lay.pred_bins),
        v(window, lay.score_bins),
        m.thresholds,
    )


def _ms(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def _check_equal(m: ModelMonitor, window: np.ndarray) -> None:
    """The two evaluations agree on this window (tests/test_drift_fused.py checks every
    field on many more)."""
    got, want = m._drift(window), previous(m, window)
    assert np.array_equal(got.drifted, want.drifted)
    assert np.allclose(got.p_adjusted, want.p_adjusted, rtol=1e-12, atol=1e-13, equal_nan=True)
    for k, arr in want.scores.items():
        assert np.allclose(got.scores[k], arr, rtol=1e-12, atol=1e-13, equal_nan=True), k


def _data(tmp: Path) -> tuple[ModelMonitor, np.ndarray, Callable[[], None], float]:
    """The suite's model, its window, scipy's run over the raw values, and the time of the
    first evaluation (which lays out the reference side)."""
    from bench.suite import MODEL, setup, spec

    cfg = setup(tmp)
    m = Monitor(load_config(cfg)).models[MODEL]
    live = synthetic.without_labels(synthetic.events(spec(), 10_000, seed=3, shift={"x03": 0.5}))
    m.ingest(live)
    window = m.state.snapshot()[0].window
    first = _ms(lambda: m._drift(window))
    train = synthetic.events(spec(), 10_000, seed=1)
    names = list(spec().numeric)
    raw_ref = [np.array([e["features"][n] for e in train]) for n in names]
    raw_live = [np.array([e["features"][n] for e in live]) for n in names]

    def scipy_ks() -> None:
        for a, b in zip(raw_ref, raw_live, strict=True):
            ks_2samp(a, b)

    return m, window, scipy_ks, first


def drift(runs: int) -> dict[str, Any]:
    """All windowed tests for 50 features: the exporter's evaluation against the previous
    one and scipy's ks_2samp per numeric feature, warm and interleaved (see the module
    docstring). Keeps the keys bench/suite.py reads (``all_tests_ms``: interleaved, as the
    suite measured it; ``scipy_ks_2samp_45_numeric_ms``)."""
    with tempfile.TemporaryDirectory() as d:
        m, w, scipy_ks, first = _data(Path(d))
        _check_equal(m, w)
        fused, old = (lambda: m._drift(w)), (lambda: previous(m, w))
        for _ in range(10):
            fused(), old()
        t: dict[str, list[float]] = {k: [] for k in ("fw", "ow", "fi", "oi", "scipy")}
        for i in range(runs):
            # warm: back to back, the order alternating so neither always goes first
            pair = (("fw", fused), ("ow", old)) if i % 2 == 0 else (("ow", old), ("fw", fused))
            for key, fn in pair:
                t[key].append(_ms(fn))
        for i in range(runs):
            # interleaved: each evaluation straight after a scipy run
            pair = (("fi", fused), ("oi", old)) if i % 2 == 0 else (("oi", old), ("fi", fused))
            for key, fn in pair:
                t["scipy"].append(_ms(scipy_ks))
                t[key].append(_ms(fn))
    s = {k: summary(v) for k, v in t.items()}
    return {
        "features": FEATURES,
        "all_tests_ms": s["fi"],
        "all_tests_warm_ms": s["fw"],
        "previous_all_tests_ms": s["oi"],
        "previous_all_tests_warm_ms": s["ow"],
        "scipy_ks_2samp_45_numeric_ms": s["scipy"],
        "first_call_ms": first,
        "speedup_vs_previous": s["oi"]["median"] / s["fi"]["median"],
        "speedup_vs_previous_warm": s["ow"]["median"] / s["fw"]["median"],
        "speedup_vs_scipy": s["scipy"]["median"] / s["fi"]["median"],
    }


def table(r: dict[str, Any]) -> str:
    rows = [
        ("exporter, warm", r["all_tests_warm_ms"]),
        ("previous, warm", r["previous_all_tests_warm_ms"]),
        ("exporter, after scipy", r["all_tests_ms"]),
        ("previous, after scipy", r["previous_all_tests_ms"]),
        ("scipy ks_2samp x 45", r["scipy_ks_2samp_45_numeric_ms"]),
    ]
    out = [f"drift, {r['features']} features, {rows[0][1]['runs']} runs each (ms)"]
    out.append(f"{'':24s} {'median':>8s} {'p90':>8s} {'p99':>8s} {'max':>8s}")
    for name, v in rows:
        out.append(f"{name:24s} {v['median']:8.3f} {v['p90']:8.3f} {v['p99']:8.3f} {v['max']:8.3f}")
    out.append(
        f"previous / exporter: {r['speedup_vs_previous_warm']:.2f}x warm, "
        f"{r['speedup_vs_previous']:.2f}x after scipy; scipy / exporter: "
        f"{r['speedup_vs_scipy']:.0f}x; first call (lays out the reference side): "
        f"{r['first_call_ms']:.2f} ms"
    )
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    r = drift(args.runs)
    print(table(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
