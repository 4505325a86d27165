"""The README documents every metric family, threshold, limit and refusal reason."""

from __future__ import annotations

import re
from pathlib import Path

from mlmon.capture.counters import UPSTREAM_FAILURES, ProxyStats
from mlmon.capture.protocols import CAPTURE_FAILURES, PROTOCOLS
from mlmon.cli import build_registry
from mlmon.core.config import LIMIT_DEFAULTS, THRESHOLDS, ProxySettings, load_config
from mlmon.core.decoding import REJECT_REASONS
from mlmon.core.monitor import Monitor
from mlmon.demo import synthetic
from test_tasks import _monitor, _rows

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _families(mon: Monitor) -> set[str]:
    registry = build_registry(mon, ProxyStats())
    return {f.name for f in registry.collect() if not f.name.startswith("process_")}


def loaded_monitors(tmp_path: Path) -> list[Monitor]:
    """A binary (versions, groups, labels), a multiclass and a regression model, each with
    labelled traffic: every metric family has samples."""
    mon = Monitor(load_config(ROOT / "examples/mlmon.yml"))
    rows = synthetic.events(synthetic.credit_spec(), 1_200, seed=1)
    m = mon.models["credit-risk"]
    for i, r in enumerate(rows):  # two versions and two groups, all labelled
        r["version"] = "v2" if i % 2 else "v1"
        r["groups"] = {"gender": "f" if i % 3 else "m"}
        r["latency_seconds"] = 0.01 * (1 + i % 5)
    m.ingest(synthetic.without_labels(rows))
    m.ingest_labels([{"id": r["id"], "label": r["label"]} for r in rows])
    (tmp_path / "mc").mkdir()
    multiclass = _monitor(tmp_path / "mc", "multiclass")
    mc_rows = _rows(200, seed=3, task="multiclass")
    for i, r in enumerate(mc_rows):
        r["id"] = i
    multiclass.models["m"].ingest(mc_rows)
    multiclass.models["m"].ingest_labels([{"id": r["id"], "label": r["label"]} for r in mc_rows])
    regression = _monitor(tmp_path, "regression")
    reg_rows = _rows(200, seed=2)
    for i, r in enumerate(reg_rows):
        r["id"] = i
    regression.models["m"].ingest(reg_rows)
    regression.models["m"].ingest_labels([{"id": r["id"], "label": r["label"]} for r in reg_rows])
    return [mon, multiclass, regression]


def test_every_metric_family_is_in_the_readme(tmp_path):
    names = set().union(*(_families(m) for m in loaded_monitors(tmp_path)))
    assert len(names) > 30
    documented = set(re.findall(r"`(mlmon_[a-z_0-9<>]+)`", README))
    missing = []
    for name in sorted(names):
        if name.startswith("mlmon_threshold_"):
            continue
        # counters are documented with their _total suffix
        if name not in documented and f"{name}_total" not in documented:
            missing.append(name)
    assert not missing, f"undocumented metric families: {missing}"
    stale = [
        d
        for d in documented
        if "<" not in d
        and d not in names
        and d.removesuffix("_total") not in names
        and not d.startswith("mlmon_threshold_")
    ]
    assert not stale, f"README documents metrics that do not exist: {stale}"


def test_every_threshold_limit_and_reason_is_in_the_readme():
    for key in THRESHOLDS:
        assert f"| `{key}` |" in README, key
    for key in LIMIT_DEFAULTS:
        assert f"`limits.{key}`" in README, key
    for reason in REJECT_REASONS:
        if reason != "internal_error":
            assert f"`{reason}`" in README, reason
    for word in (*CAPTURE_FAILURES, *UPSTREAM_FAILURES, *PROTOCOLS):
        assert f"`{word}`" in README, word


def test_every_proxy_setting_is_in_the_readme():
    import dataclasses

    keys = {"routes": "models.<name>"}
    for f in dataclasses.fields(ProxySettings):
        key = keys.get(f.name, f.name.removesuffix("_seconds"))
        assert f"`proxy.{key}`" in README or f"`proxy.{key}`," in README, key


def test_every_server_setting_is_in_the_readme():
    import dataclasses

    from mlmon.core.config import ServerSettings

    for f in dataclasses.fields(ServerSettings):
        key = f.name.removesuffix("_seconds")
        assert f"`server.{key}`" in README, key


def test_dockerfile_copies_files_that_exist():
    text = (ROOT / "exporter/Dockerfile").read_text()
    for src in re.findall(r"^COPY (.+) \S+$", text, flags=re.M):
        for part in src.split():
            assert (ROOT / part).exists(), part
