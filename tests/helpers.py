"""Shared test helpers: a fake clock, required binaries, a model with a built baseline."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from mlmon import synthetic
from mlmon.baseline import build_profile, read_training_data, write_profile
from mlmon.cli import build_registry
from mlmon.config import Config, load_config
from mlmon.monitor import Monitor
from mlmon.web import create_app


class FakeClock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def require_binary(name: str) -> str:
    """Tests that need a binary fail (not skip) without it: `make test` installs them."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; run `make test`, which installs it")
    return path


@dataclass
class Env:
    """A config with one model, its baseline built from synthetic training data."""

    dir: Path
    config_path: Path
    config: Config
    spec: synthetic.TableSpec
    training: list[dict]

    def monitor(self, clock: Callable[[], float] | None = None) -> Monitor:
        return Monitor(self.config, clock=clock) if clock else Monitor(self.config)

    def app(self, clock: Callable[[], float] | None = None):
        mon = self.monitor(clock)
        registry = build_registry(mon)
        return mon, registry, create_app(mon, registry)


def make_env(
    tmp: Path,
    spec: synthetic.TableSpec,
    n_train: int = 20_000,
    model_extra: dict | None = None,
    top: dict | None = None,
    name: str = "credit-risk",
) -> Env:
    training = synthetic.events(spec, n_train, seed=1)
    data = tmp / "train.csv"
    synthetic.write_csv(training, data)
    model = {
        "name": name,
        "task": "binary",
        "positive_class": 1,
        "baseline": f"baselines/{name}.json",
        "features": spec.config_features(),
        **(model_extra or {}),
    }
    cfg_path = tmp / "mlmon.yml"
    cfg_path.write_text(yaml.safe_dump({"models": [model], **(top or {})}))
    cfg = load_config(cfg_path)
    m = cfg.models[0]
    profile = build_profile(m, read_training_data(data, list(spec.config_features()), False))
    write_profile(profile, m.baseline)
    return Env(tmp, cfg_path, cfg, spec, training)
