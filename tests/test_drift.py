"""Drift end to end: the exporter's numbers against references computed independently from
the raw events, and the walk-through in docs/statistics.md against a real `mlmon serve` process."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from helpers import Exporter
from mlmon.demo import synthetic
from mlmon.stats.divergences import PSI_EPSILON
from prometheus_client.parser import text_string_to_metric_families
from scipy import special
from scipy import stats as st
from scipy.spatial.distance import jensenshannon

TOL = 1e-9
MODEL = "credit-risk"
SHIFTED = ("x03", "x11")


def _digitize(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Counts per bin (edge[i-1], edge[i]] with numpy's digitize, not the exporter's code."""
    return np.bincount(
        np.digitize(values, np.asarray(edges), right=True), minlength=len(edges) + 1
    ).astype(float)


def _psi(ref: np.ndarray, live: np.ndarray) -> float:
    keep = (ref > 0) | (live > 0)
    p = np.maximum(ref[keep] / ref.sum(), PSI_EPSILON)
    q = np.maximum(live[keep] / live.sum(), PSI_EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


def test_pipeline_statistics_equal_references_on_the_raw_events(wide_env):
    mon = wide_env.monitor()
    m = mon.models[MODEL]
    live = synthetic.without_labels(
        synthetic.events(wide_env.spec, 3_000, seed=5, shift={"x03": 0.3, "x07": -0.2})
    )
    m.ingest(live)
    stats = m.stats()["versions"]["unversioned"]["features"]
    profile = m.schema.profile["features"]
    for name in wide_env.spec.numeric:
        prof = profile[name]
        grid = prof["grid"]
        ref_raw = np.array([e["features"][name] for e in wide_env.training])
        live_raw = np.array([e["features"][name] for e in live])
        ref_c, live_c = _digitize(ref_raw, grid), _digitize(live_raw, grid)
        assert ref_c.tolist() == prof["grid_counts"]
        # the bins' representative points: midpoints of [min, grid..., max]
        ext = np.concatenate(([min(prof["min"], grid[0])], grid, [max(prof["max"], grid[-1])]))
        pts = (ext[:-1] + ext[1:]) / 2
        ks = st.ks_2samp(
            np.repeat(pts, ref_c.astype(int)), np.repeat(pts, live_c.astype(int)), method="asymp"
        )
        got = stats[name]
        assert got["scores"]["ks"] == pytest.approx(ks.statistic, abs=TOL), name
        n1, n2 = ref_c.sum(), live_c.sum()
        p_lim = special.kolmogorov(np.sqrt(n1 * n2 / (n1 + n2)) * ks.statistic)
        assert got["p_value"] == pytest.approx(p_lim, abs=TOL), name
        assert got["p_value"] == pytest.approx(ks.pvalue, abs=0.01), name
        w = st.wasserstein_distance(pts, pts, ref_c, live_c) / prof["std"]
        assert got["scores"]["wasserstein"] == pytest.approx(w, abs=TOL), name
        ref_d, live_d = _digitize(ref_raw, prof["edges"]), _digitize(live_raw, prof["edges"])
        assert got["scores"]["psi"] == pytest.approx(_psi(ref_d, live_d), abs=TOL), name
        assert got["scores"]["js"] == pytest.approx(
            jensenshannon(ref_d, live_d, base=2), abs=TOL
        ), name
        # binning costs little: the binned KS is close to the KS of the raw samples
        assert got["scores"]["ks"] == pytest.approx(
            st.ks_2samp(ref_raw, live_raw).statistic, abs=0.02
        )
    for name in wide_env.spec.categorical:
        cats = [c for c, _ in profile[name]["categories"]] + ["__other__"]
        ref_c = np.array(
            [sum(e["features"][name] == c for e in wide_env.training) for c in cats], dtype=float
        )
        live_c = np.array([sum(e["features"][name] == c for e in live) for c in cats], dtype=float)
        table = np.vstack([ref_c, live_c])
        res = st.chi2_contingency(table[:, table.sum(axis=0) > 0], correction=False)
        got = stats[name]
        assert got["scores"]["chi2"] == pytest.approx(res.statistic, rel=TOL)
        assert got["p_value"] == pytest.approx(res.pvalue, abs=TOL)
        assert got["scores"]["psi"] == pytest.approx(_psi(ref_c, live_c), abs=TOL)
        assert got["scores"]["js"] == pytest.approx(jensenshannon(ref_c, live_c, base=2), abs=TOL)
    # Benjamini-Hochberg across the model's 20 tests
    names = list(stats)
    p = np.array([stats[n]["p_value"] for n in names])
    adj = st.false_discovery_control(p, method="bh")
    for n, a in zip(names, adj, strict=True):
        assert stats[n]["p_value_adjusted"] == pytest.approx(a, abs=TOL)


def test_small_shift_is_significant_but_below_the_effect_floor(wide_env):
    """A tiny shift on a big window: p-value far below alpha, yet not called drift."""
    mon = wide_env.monitor()
    m = mon.models[MODEL]
    m.ingest(
        synthetic.without_labels(
            synthetic.events(wide_env.spec, 10_000, seed=8, shift={"x05": 0.12})
        )
    )
    f = m.stats()["versions"]["unversioned"]["features"]["x05"]
    assert f["p_value_adjusted"] < 1e-6
    assert f["scores"]["ks"] < 0.1
    assert f["drifted"] is False


def test_no_drift_value_before_min_samples(wide_env):
    mon = wide_env.monitor()
    m = mon.models[MODEL]
    m.ingest(
        synthetic.without_labels(synthetic.events(wide_env.spec, 499, seed=3, shift={"x03": 3.0}))
    )
    v = m.stats()["versions"]["unversioned"]
    assert v["features_tested"] == 0 and v["drifted_features"] == 0
    assert v["features"]["x03"]["scores"] == {} and v["features"]["x03"]["p_value"] is None
    m.ingest(
        synthetic.without_labels(synthetic.events(wide_env.spec, 1, seed=4, shift={"x03": 3.0}))
    )
    v = m.stats()["versions"]["unversioned"]
    assert v["features_tested"] == 20 and v["drifted_feature_names"] == ["x03"]


def _drifted_in_metrics(text: str, version: str) -> dict[str, float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        if fam.name == "mlmon_feature_drifted":
            for s in fam.samples:
                if s.labels["version"] == version:
                    out[s.labels["feature"]] = s.value
    return out


@pytest.mark.integration
def test_readme_walkthrough_two_shifted_features_of_twenty(tmp_path, wide_env):
    """Build a baseline from a 20-feature training file with the CLI, run `mlmon serve`,
    POST 5,000 events with two features shifted by one standard deviation: exactly those
    two are drifted; 5,000 events from the training distribution flag none."""
    data = tmp_path / "training.csv"
    synthetic.write_csv(wide_env.training, data)
    cfg = tmp_path / "mlmon.yml"
    cfg.write_text(
        wide_env.config_path.read_text().replace(
            "baselines/credit-risk.json", str(tmp_path / "credit-risk.json")
        )
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mlmon",
            "baseline",
            "--config",
            str(cfg),
            "--model",
            MODEL,
            "--data",
            str(data),
            "--no-progress",
        ],
        check=True,
        capture_output=True,
    )
    exporter = Exporter(cfg)
    try:
        shifted = synthetic.without_labels(
            synthetic.events(
                wide_env.spec, 5_000, seed=42, shift=dict.fromkeys(SHIFTED, 1.0), version="drifted"
            )
        )
        clean = synthetic.without_labels(
            synthetic.events(wide_env.spec, 5_000, seed=43, version="clean")
        )
        for batch in range(0, 5_000, 500):
            assert exporter.post(MODEL, shifted[batch : batch + 500]).status_code == 200
            assert exporter.post(MODEL, clean[batch : batch + 500]).status_code == 200
        text = exporter.get("/metrics").text
        drifted = _drifted_in_metrics(text, "drifted")
        assert len(drifted) == 20
        assert sorted(k for k, v in drifted.items() if v == 1.0) == list(SHIFTED)
        clean_flags = _drifted_in_metrics(text, "clean")
        assert len(clean_flags) == 20 and sum(clean_flags.values()) == 0
        stats = exporter.get(f"/v1/models/{MODEL}/stats").json()["versions"]
        assert stats["drifted"]["drifted_feature_names"] == list(SHIFTED)
        assert stats["drifted"]["drifted_features"] == 2
        assert stats["clean"]["drifted_features"] == 0
        assert stats["clean"]["window_events"] == 5_000
        for name in SHIFTED:  # one standard deviation: KS near 2*Phi(0.5) - 1 = 0.383
            assert stats["drifted"]["features"][name]["scores"]["ks"] == pytest.approx(
                0.383, abs=0.03
            )
    finally:
        exporter.stop()
