"""What multivariate drift, feature attributions and embedding features cost, in process,
against the same model without them measured in the same run: ingest time per event (row
batches of 100, 50 features: 45 numeric, 5 categorical) and the drift work of one scrape.

    python bench/new_paths.py [--runs 15] [--json bench/results/new-paths.json]

Four variants of one model: plain (a baseline without the multivariate model, events
without attributions), multivariate (the baseline as `mlmon baseline` builds it now),
attributions (events and baseline carry them), both. Medians over runs; each ratio is
against the plain variant's median of the same run.

Then a model with one embedding feature (10 components) of dim 64 and 768, each with and
without its reconstruction score (the same projection with the score's statistics
removed from the profile): ingest per event, and the scrape's work for the score; each
ratio against the unscored variant of the same dim.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from mlmon.core.baseline import (
    build_profile,
    content_hash,
    load_profile,
    read_training_data,
    write_profile,
)
from mlmon.core.config import load_config
from mlmon.core.monitor import Monitor
from mlmon.demo import synthetic

from bench.suite import MODEL, setup, spec

BATCH = 100


def _monitor(tmp: Path, multivariate: bool, attributions: bool) -> Monitor:
    cfg = setup(tmp, attributions=attributions)
    if not multivariate:  # the same profile without its multivariate model
        path = load_config(cfg).models[0].baseline
        profile = load_profile(path)
        profile.pop("multivariate")
        profile["hash"] = content_hash(profile)
        write_profile(profile, path)
    return Monitor(load_config(cfg))


def _ingest_us(mon: Monitor, batches: list[list[dict]]) -> float:
    """Microseconds per event to ingest every batch once."""
    m = mon.models[MODEL]
    t0 = time.perf_counter()
    for b in batches:
        m.ingest(b)
    return (time.perf_counter() - t0) / sum(map(len, batches)) * 1e6


def _scrape_ms(mon: Monitor) -> dict[str, float]:
    """The drift work one scrape does per version: univariate tests, multivariate
    decision, attribution ranking (milliseconds)."""
    m = mon.models[MODEL]
    snap = m.state.snapshot()[0]
    out = {}
    for name, call in (
        ("univariate", lambda: m._drift(snap.window)),
        ("multivariate", lambda: m._joint(snap.fwindow)),
        ("attributions", lambda: m._attribution(snap.window, snap.fwindow)),
    ):
        t0 = time.perf_counter()
        call()
        out[name] = (time.perf_counter() - t0) * 1e3
    return out


def _embedded_monitor(tmp: Path, dim: int, scored: bool) -> Monitor:
    """A regression model with one embedding of ``dim`` (vectors from 20 latent factors
    plus noise), its baseline built from 2,000 vectors; unscored: the profile without the
    projection's error statistics."""
    rows = _embedding_rows(2_000, dim, seed=1)
    data = tmp / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    feature = {"kind": "embedding", "dim": dim, "components": 10}
    model = {"name": MODEL, "task": "regression", "baseline": "b.json"}
    model["features"] = {"emb": feature}
    (tmp / "c.yml").write_text(json.dumps({"models": [model]}))
    cfg = load_config(tmp / "c.yml")
    profile = build_profile(cfg.models[0], read_training_data(data, ["emb"], False))
    if not scored:
        profile["embeddings"]["emb"].pop("error")
        profile["hash"] = content_hash(profile)
    write_profile(profile, cfg.models[0].baseline)
    return Monitor(cfg)


def _embedding_rows(n: int, dim: int, seed: int) -> list[dict]:
    loadings = np.random.default_rng(0).normal(size=(20, dim))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 20)) @ loadings + 0.5 * rng.normal(size=(n, dim))
    return [{"features": {"emb": v.tolist()}, "prediction": float(v[0])} for v in x]


def _embeddings(runs: int) -> dict[str, dict]:
    variants = [(dim, scored) for dim in (64, 768) for scored in (False, True)]
    ingest: dict[tuple[int, bool], list[float]] = {v: [] for v in variants}
    scrape: dict[tuple[int, bool], list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as d:
        monitors, batches = {}, {}
        for dim, scored in variants:
            tmp = Path(d) / f"{dim}-{scored}"
            tmp.mkdir()
            monitors[dim, scored] = _embedded_monitor(tmp, dim, scored)
            rows = [{**r, "version": "v1"} for r in _embedding_rows(2_000, dim, seed=5)]
            batches[dim, scored] = [rows[i : i + BATCH] for i in range(0, len(rows), BATCH)]
        for _ in range(runs):
            for v in variants:
                ingest[v].append(_ingest_us(monitors[v], batches[v]))
                m = monitors[v].models[MODEL]
                snap = m.state.snapshot()[0]
                t0 = time.perf_counter()
                m._embedding_joint(snap.fwindow)
                scrape[v].append((time.perf_counter() - t0) * 1e3)
    out = {}
    print(f"\n{'embedding':<20}{'ingest µs/event':>17}{'vs unscored':>13}{'score ms/scrape':>17}")
    for dim, scored in variants:
        med = statistics.median(ingest[dim, scored])
        base = statistics.median(ingest[dim, False])
        ms = statistics.median(scrape[dim, scored])
        name = f"dim {dim} {'scored' if scored else 'unscored'}"
        out[name] = {"ingest_us_per_event": med, "ratio": med / base, "scrape_ms": ms}
        print(f"{name:<20}{med:>17.2f}{med / base:>12.2f}x{ms:>17.3f}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--json", default="bench/results/new-paths.json")
    args = ap.parse_args()
    variants = {
        "plain": (False, False),
        "multivariate": (True, False),
        "attributions": (False, True),
        "both": (True, True),
    }
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as d:
        monitors, batches = {}, {}
        for name, (multi, attr) in variants.items():
            (Path(d) / name).mkdir()
            monitors[name] = _monitor(Path(d) / name, multi, attr)
            rows = synthetic.without_labels(
                synthetic.events(spec(), 2_000, seed=5, version="v1", attributions=attr)
            )
            batches[name] = [rows[i : i + BATCH] for i in range(0, len(rows), BATCH)]
        ingest: dict[str, list[float]] = {n: [] for n in variants}
        scrape: dict[str, list[dict[str, float]]] = {n: [] for n in variants}
        for _ in range(args.runs):  # interleaved, so drift in machine speed hits all alike
            for name in variants:
                ingest[name].append(_ingest_us(monitors[name], batches[name]))
                scrape[name].append(_scrape_ms(monitors[name]))
    plain = statistics.median(ingest["plain"])
    print(f"{'variant':<14}{'ingest µs/event':>17}{'vs plain':>10}   drift per scrape (ms)")
    for name in variants:
        med = statistics.median(ingest[name])
        parts = {k: statistics.median(r[k] for r in scrape[name]) for k in scrape[name][0]}
        results[name] = {"ingest_us_per_event": med, "ratio": med / plain, "scrape_ms": parts}
        detail = ", ".join(f"{k} {v:.3f}" for k, v in parts.items())
        print(f"{name:<14}{med:>17.2f}{med / plain:>9.2f}x   {detail}")
    results["embeddings"] = _embeddings(args.runs)
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
