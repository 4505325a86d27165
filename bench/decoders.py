"""Row JSON to a Batch, three ways, in process, on the same bodies (45 numeric + 5
categorical features, batches of 100 and 1,000), interleaved so that a slow phase of the
machine hits all three alike:

- ``row checks``: orjson to dicts, then `events.parse_events` (the path before the typed
  decoder, and still the path of every body the typed decoder does not take whole);
- ``typed``: `typedrows.RowDecoder` (msgspec decodes and validates into structs in C; the
  arrays are gathered with a few C-level calls) — what `mlmon serve` runs;
- ``orjson + numpy gather``: orjson to dicts, then one `np.array` per feature column with
  a type check per column (`set(map(type, column))`): numpy's own conversion cannot be the
  check, since it takes "1.5" and true as numbers.

And columnar JSON (batches of 1,000, the same events) two ways, interleaved likewise:

- ``orjson + parse_columns``: `decode_events` (orjson) then `columns.parse_columns`, the
  path of every columnar body the typed decoder does not take whole;
- ``typed columns``: `typedcolumns.ColumnDecoder` (msgspec decodes and validates the
  columns in C; one `np.fromiter` per numeric column, one vocabulary pass per
  categorical one) -- what `mlmon serve` runs.

    python bench/decoders.py            # medians of 300 batches each
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlmon.core.columns import parse_columns
from mlmon.core.config import load_config
from mlmon.core.decoding import decode_events
from mlmon.core.events import parse_events
from mlmon.core.monitor import Monitor
from mlmon.core.typedcolumns import ColumnDecoder
from mlmon.core.typedrows import RowDecoder
from mlmon.demo import synthetic

from bench.suite import MODEL, columnar_bodies, row_bodies, setup, spec

NUMBER = {int, float, type(None)}


def numpy_gather(body: bytes, schema: Any) -> tuple[np.ndarray, np.ndarray]:
    """The alternative design: per feature column, a type check and one conversion."""
    events = orjson.loads(body)["events"]
    feats = [e["features"] for e in events]
    num = []
    for name in schema.inputs_numeric:
        col = [f.get(name) for f in feats]
        if not set(map(type, col)) <= NUMBER:
            raise ValueError(name)
        num.append(np.array(col, dtype=np.float64))
    cats = []
    for name, vocab in zip(schema.categorical.names, schema.categorical.vocab, strict=True):
        col = [f.get(name) for f in feats]
        if not set(map(type, col)) <= {str, type(None)}:
            raise ValueError(name)
        cats.append([-1 if v is None else vocab.get(v, len(vocab)) for v in col])
    return np.column_stack(num), np.array(cats, dtype=np.int64).T


def measure(batch: int, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        cfg = setup(Path(d))
        m = Monitor(load_config(cfg)).models[MODEL]
        events = synthetic.without_labels(synthetic.events(spec(), 20_000, seed=5, version="v1"))
        bodies = row_bodies(events, batch)
        typed = RowDecoder(m.schema, m.limits)
        ways = {
            "row checks": lambda b: parse_events(
                decode_events(b, "application/json"), m.schema, m.limits
            ),
            "typed": typed.batch,
            "orjson + numpy gather": lambda b: numpy_gather(b, m.schema),
        }
        assert typed.batch(bodies[0]) is not None
        times = interleaved(ways, bodies, runs)
    return summary(times, batch, "row checks", "speedup_vs_row_checks")


def measure_columnar(batch: int, runs: int) -> dict[str, Any]:
    """The columnar body: the columnar checks against the typed columns decoder."""
    with tempfile.TemporaryDirectory() as d:
        cfg = setup(Path(d))
        m = Monitor(load_config(cfg)).models[MODEL]
        events = synthetic.without_labels(synthetic.events(spec(), 20_000, seed=5, version="v1"))
        bodies = columnar_bodies(events, batch)
        typed = ColumnDecoder(m.schema, m.limits)
        ways = {
            "orjson + parse_columns": lambda b: parse_columns(
                decode_events(b, "application/json")[0]["columns"], m.schema, m.limits
            ),
            "typed columns": typed.batch,
        }
        assert typed.batch(bodies[0]) is not None
        times = interleaved(ways, bodies, runs)
    return summary(times, batch, "orjson + parse_columns", "speedup_vs_parse_columns")


def interleaved(ways: dict[str, Any], bodies: list[bytes], runs: int) -> dict[str, list[float]]:
    """CPU seconds of each way on each body, the ways taking turns body by body."""
    times: dict[str, list[float]] = {k: [] for k in ways}
    for i in range(runs):
        body = bodies[i % len(bodies)]
        for name, way in ways.items():
            t0 = time.process_time()
            way(body)
            times[name].append(time.process_time() - t0)
    return times


def summary(
    times: dict[str, list[float]], batch: int, base_name: str, ratio: str
) -> dict[str, Any]:
    """Median, p99, events per CPU-second and the same-run ratio to ``base_name`` (under
    the key ``ratio``)."""
    base = statistics.median(times[base_name])
    out: dict[str, Any] = {"batch": batch, "runs": len(times[base_name]), "ratio": ratio}
    for name, t in times.items():
        med = statistics.median(t)
        out[name] = {
            "median_ms": med * 1e3,
            "p99_ms": float(np.percentile(t, 99)) * 1e3,
            "events_per_cpu_second": batch / med,
            ratio: base / med,
        }
    return out


def show(title: str, r: dict[str, Any]) -> None:
    print(f"\n{title} ({r['runs']} each, interleaved; CPU time)")
    for name, x in r.items():
        if isinstance(x, dict):
            print(
                f"  {name:<24} {x['median_ms']:7.3f} ms  p99 {x['p99_ms']:7.3f} ms  "
                f"{x['events_per_cpu_second']:>9,.0f} events/s  x{x[r['ratio']]:.2f}"
            )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=300)
    args = ap.parse_args()
    for batch in (100, 1000):
        r = measure(batch, args.runs if batch == 100 else max(args.runs // 5, 30))
        show(f"row JSON, batches of {batch}", r)
    show("columnar JSON, batches of 1000", measure_columnar(1000, max(args.runs // 3, 30)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
