"""What validating the configuration costs at start-up, per validation library.

    .venv/bin/python bench/config_startup.py [--runs 15]

Each case runs in a fresh interpreter (imports are most of the cost) and validates the same
small document: a model with a window, drift settings and two thresholds, one of them
wrong. Reported: the median wall time of the whole process, and the difference to a
process that only imports PyYAML (the floor every case pays). Libraries that are not
installed are listed as such. The last case is mlmon's own `load_config` on
examples/mlmon.yml, its baselines unread.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

DOC = (
    "doc = {'models': [{'name': 'm', 'task': 'binary', 'window': {'length': 3600, 'slices': 60},"
    " 'drift': {'correction': 'holm', 'bins': 10}, 'thresholds': {'f1_min': 'x', 'a': 1}}]}\n"
)

CASES = {
    "pyyaml only (floor)": "import yaml\n",
    "pydantic v2": """import yaml
from typing import Literal
from pydantic import BaseModel, ConfigDict, Field, ValidationError
class S(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
class Window(S):
    length: float | None = Field(None, gt=0)
    slices: int | None = Field(None, ge=1, le=1440)
class Drift(S):
    correction: Literal["benjamini-hochberg", "bonferroni", "none"] | None = None
    bins: int | None = Field(None, ge=2, le=100)
class Thresholds(S):
    f1_min: float | None = None
    accuracy_min: float | None = None
class Model(S):
    name: str
    task: Literal["binary", "multiclass", "regression"]
    window: Window | None = None
    drift: Drift | None = None
    thresholds: Thresholds | None = None
class Doc(S):
    models: list[Model]
"""
    + DOC
    + """try:
    Doc.model_validate(doc)
except ValidationError as e:
    assert len(e.errors()) == 3, e.errors()
""",
    "jsonschema (Draft 2020-12)": """import yaml
import jsonschema
def obj(props, required=()):
    return {"type": "object", "properties": props, "required": list(required),
            "additionalProperties": False}
num = {"type": "number"}
schema = obj({"models": {"type": "array", "items": obj({
    "name": {"type": "string"},
    "task": {"enum": ["binary", "multiclass", "regression"]},
    "window": obj({"length": {"type": "number", "exclusiveMinimum": 0},
                   "slices": {"type": "integer", "minimum": 1, "maximum": 1440}}),
    "drift": obj({"correction": {"enum": ["benjamini-hochberg", "bonferroni", "none"]},
                  "bins": {"type": "integer", "minimum": 2, "maximum": 100}}),
    "thresholds": obj({"f1_min": num, "accuracy_min": num}),
}, ["name", "task"])}}, ["models"])
"""
    + DOC
    + """errors = list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
assert len(errors) == 3, errors
""",
    "msgspec (stops at the first error)": """import yaml
import msgspec
from typing import Annotated, Literal
class S(msgspec.Struct, forbid_unknown_fields=True):
    pass
class Window(S):
    length: Annotated[float, msgspec.Meta(gt=0)] | None = None
    slices: Annotated[int, msgspec.Meta(ge=1, le=1440)] | None = None
class Drift(S):
    correction: Literal["benjamini-hochberg", "bonferroni", "none"] | None = None
    bins: Annotated[int, msgspec.Meta(ge=2, le=100)] | None = None
class Thresholds(S):
    f1_min: float | None = None
    accuracy_min: float | None = None
class Model(S):
    name: str
    task: Literal["binary", "multiclass", "regression"]
    window: Window | None = None
    drift: Drift | None = None
    thresholds: Thresholds | None = None
class Doc(S):
    models: list[Model]
"""
    + DOC
    + """try:
    msgspec.convert(doc, Doc)
except msgspec.ValidationError:
    pass
""",
    "mlmon load_config (pydantic, examples/mlmon.yml)": (
        "from mlmon.core.config import load_config\n"
        f"load_config({str(ROOT / 'examples/mlmon.yml')!r})\n"
    ),
}


def run(code: str, runs: int) -> float | None:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if done.returncode != 0:
            if "ModuleNotFoundError" in done.stderr:
                return None
            raise SystemExit(done.stderr)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    floor = None
    print(f"{'case':52} {'median ms':>10} {'over floor':>11}")
    for name, code in CASES.items():
        median = run(code, args.runs)
        if median is None:
            print(f"{name:52} {'not installed':>10}")
            continue
        floor = median if floor is None else floor
        print(f"{name:52} {median * 1000:10.1f} {(median - floor) * 1000:+10.1f}")


if __name__ == "__main__":
    main()
