"""Regenerate the example baselines from the synthetic training data (deterministic):
python examples/build_baselines.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from mlmon.core.baseline import build_profile, dumps, read_training_data
from mlmon.core.config import load_config
from mlmon.demo import synthetic

HERE = Path(__file__).resolve().parent
TRAINING_ROWS = 20_000
SEED = 1


# a fixed build date, so the committed profile is what this script writes
CREATED_AT = "2026-11-30T00:00:00Z"


def example_profiles() -> dict[Path, str]:
    cfg = load_config(HERE / "mlmon.yml")
    model = cfg.model("credit-risk")
    assert model is not None
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "credit-risk.csv"
        rows = synthetic.events(synthetic.credit_spec(), TRAINING_ROWS, SEED, attributions=True)
        synthetic.write_csv(rows, data)
        names = [f.name for f in model.features or ()]
        data = read_training_data(data, names, progress=False)
        profile = build_profile(model, data, created_at=CREATED_AT)
    return {model.baseline: dumps(profile)}


if __name__ == "__main__":
    for path, text in example_profiles().items():
        path.write_text(text)
        print(f"wrote {path}", file=sys.stderr)
