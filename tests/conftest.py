from __future__ import annotations

from pathlib import Path

import pytest
from helpers import Env, Served, make_env
from mlmon.demo import synthetic


@pytest.fixture(scope="session")
def wide_env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    """18 numeric and 2 categorical features; window min sample 500."""
    return make_env(tmp_path_factory.mktemp("wide"), synthetic.wide_spec())


@pytest.fixture()
def small_env(tmp_path: Path) -> Env:
    spec = synthetic.TableSpec(
        numeric={"age": (40.0, 10.0), "balance": (-200.0, 500.0)},
        categorical={"country": {"DE": 0.5, "FR": 0.3, "ES": 0.2}},
        weights={"age": 0.05},
        intercept=-2.0,
    )
    return make_env(tmp_path, spec, n_train=5_000, model_extra={"drift": {"min_samples": 100}})


@pytest.fixture()
def serve():
    """Start `mlmon serve`'s server in this process for a config (or an Env); returns
    (monitor, registry, client); every server started is stopped after the test."""
    started: list[Served] = []

    def start(config, clock=None, tokens=None):
        if isinstance(config, Env):
            config = config.config
        s = Served(config, clock=clock, tokens=tokens)
        started.append(s)
        return s.monitor, s.registry, s.client

    yield start
    for s in started:
        s.close()
