"""The Prometheus and Alertmanager bundle, offline: promtool and amtool checks, the rule unit
tests, coverage of every alert and recording rule, and proof that the checks catch a broken
rule or route."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import require_binary
from mlmon.core.config import THRESHOLDS, DriftSettings

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "prometheus" / "rules"
RULE_TESTS = sorted((ROOT / "tests" / "rules").glob("*.test.yml"))
AM_CONFIG = ROOT / "alertmanager" / "alertmanager.yml"
RUNBOOK = (ROOT / "docs" / "runbook.md").read_text()


def _rules() -> list[dict]:
    out = []
    for f in sorted(RULES.glob("*.yml")):
        for group in yaml.safe_load(f.read_text())["groups"]:
            for rule in group["rules"]:
                out.append({**rule, "_group": group["name"], "_file": f.name})
    return out


ALERTS = [r for r in _rules() if "alert" in r]
RECORDS = [r for r in _rules() if "record" in r]


def run(*cmd: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def test_promtool_checks_config_and_rules():
    promtool = require_binary("promtool")
    res = run(promtool, "check", "config", "prometheus/prometheus.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 2 rule files found" in res.stdout


def test_promtool_rule_unit_tests_pass():
    promtool = require_binary("promtool")
    res = run(promtool, "test", "rules", *map(str, RULE_TESTS))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("SUCCESS") == len(RULE_TESTS)


def _parse_duration(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smhd])", text))


RANGE = re.compile(r"\[(\d+[smhd])\]")


def _left_open(rules: str) -> str:
    """Every range selector one millisecond shorter. Prometheus 2 selects [t - r, t],
    Prometheus 3 (t - r, t]; with samples on whole milliseconds, [r - 1ms] on Prometheus 2
    selects what [r] selects on Prometheus 3."""
    return RANGE.sub(lambda m: f"[{_parse_duration(m.group(1)) * 1000 - 1}ms]", rules)


def test_alert_tests_do_not_depend_on_the_sample_at_a_range_start(tmp_path):
    """The rule tests' samples and evaluations all fall on whole minutes (or half minutes),
    so a range's start often meets a sample exactly. No alert test may depend on whether
    that sample counts: they pass with Prometheus 2's closed ranges (the test above) and
    with Prometheus 3's left-open ones, emulated here. (The recording-rule tests compare
    exact values, which a millisecond shifts in the last decimals; their windows are
    reasoned about in tests/rules/mlmon.rules.test.yml. The anomaly tests' rates change only
    on whole hours, so their values survive the shift and the whole file runs here.)"""
    promtool = require_binary("promtool")
    root = _copy_bundle(tmp_path)
    for f in (root / "prometheus" / "rules").glob("*.yml"):
        text = f.read_text()
        assert RANGE.search(text), f.name
        f.write_text(_left_open(text))
    files = ["tests/rules/mlmon.alerts.test.yml", "tests/rules/mlmon.anomalies.test.yml"]
    res = run(promtool, "test", "rules", *files, cwd=root)
    assert res.returncode == 0, res.stdout + res.stderr


def _alert_tests() -> list[dict]:
    """Every alert test case, with its test group, file and the file's evaluation step (a
    file's `evaluation_interval`, one minute unless it says otherwise)."""
    out = []
    for f in RULE_TESTS:
        doc = yaml.safe_load(f.read_text())
        step = _parse_duration(doc.get("evaluation_interval", "1m"))
        for t in doc["tests"]:
            for case in t.get("alert_rule_test", []):
                out.append({**case, "_test": t.get("name", ""), "_file": f, "_step": step})
    return out


def test_every_alert_is_named_labelled_and_annotated():
    assert len({a["alert"] for a in ALERTS}) >= 12
    for a in ALERTS:
        name = a["alert"]
        assert re.fullmatch(r"(MLModel|Mlmon)[A-Z][A-Za-z0-9]+", name), name
        assert a["labels"]["severity"] in ("critical", "warning", "info"), name
        ann = a["annotations"]
        assert set(ann) >= {"summary", "description", "runbook_url", "dashboard_url"}, name
        assert "{{" not in ann["summary"], f"{name}: the summary is static"
        assert "$labels.model" in ann["description"] or name.startswith("Mlmon"), name
        # (the value of MLModelLabelsNotArriving is always 0: nothing to name)
        if name.startswith("MLModel") and name != "MLModelLabelsNotArriving":
            assert "$value" in ann["description"], f"{name}: the description names the value"
        anchor = ann["runbook_url"].split("#", 1)[1]
        assert anchor == name.lower(), name
        assert f"\n## {name}\n" in RUNBOOK, f"{name} has no runbook section"


def test_every_alert_has_a_boundary_pair_and_a_negative_case():
    cases = _alert_tests()
    by_name: dict[str, list[dict]] = {}
    for c in cases:
        by_name.setdefault(c["alertname"], []).append(c)
    texts = {f: f.read_text() for f in RULE_TESTS}
    for a in ALERTS:
        name = a["alert"]
        assert name in by_name, f"{name} has no unit test"
        firing = [
            c
            for c in by_name[name]
            if c.get("exp_alerts")
            and any(e["exp_labels"]["severity"] == a["labels"]["severity"] for e in c["exp_alerts"])
        ]
        assert firing, f"{name} ({a['labels']['severity']}) never fires in a test"
        for c in firing:
            at = _parse_duration(c["eval_time"])
            before = [
                x
                for x in by_name[name]
                if x["_test"] == c["_test"]
                and _parse_duration(x["eval_time"]) == at - c["_step"]
                and not x.get("exp_alerts")
            ]
            assert before, f"{name}: no empty evaluation one step before {c['eval_time']}"
            for e in c["exp_alerts"]:
                assert e["exp_labels"]["severity"] in ("critical", "warning", "info")
                assert set(e["exp_annotations"]) == {
                    "summary",
                    "description",
                    "runbook_url",
                    "dashboard_url",
                }
        negatives = [
            x
            for x in by_name[name]
            if not x.get("exp_alerts")
            and not any(
                _parse_duration(x["eval_time"]) == _parse_duration(c["eval_time"]) - c["_step"]
                and x["_test"] == c["_test"]
                for c in firing
            )
        ]
        assert negatives, f"{name} has no negative case"
        # a negative case carries a comment saying why nothing fires
        assert any(
            re.search(
                r"#[^\n]*\n\s+- eval_time: "
                + re.escape(str(x["eval_time"]))
                + r"\n\s+alertname: "
                + name
                + r"\n",
                texts[x["_file"]],
            )
            for x in negatives
        ), f"{name}: negative case without a comment"


def test_every_recording_rule_has_an_expression_test():
    tested = set()
    for f in RULE_TESTS:
        for t in yaml.safe_load(f.read_text())["tests"]:
            for case in t.get("promql_expr_test", []):
                if case.get("exp_samples"):
                    tested.add(re.search(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", case["expr"]).group(0))
    missing = [r["record"] for r in RECORDS if r["record"] not in tested]
    assert not missing, f"recording rules without a promql_expr_test: {missing}"
    for r in RECORDS:
        assert r["record"].count(":") == 2, f"{r['record']} is not level:metric:operations"


def test_threshold_rules_match_the_exporter_defaults():
    defaults = {r["record"]: r["expr"] for r in RECORDS if r["_group"] == "mlmon-thresholds"}
    used = {k for k in THRESHOLDS if k != "drift_alpha"}  # alpha only drives the exporter
    for key in used:
        rec = f"model:mlmon_threshold_{key}:max"
        assert rec in defaults, f"no threshold rule for {key}"
        default = float(defaults[rec].rsplit("+", 1)[1])
        assert default == THRESHOLDS[key][0], key
    ms = defaults["model:mlmon_drift_min_samples:max"]
    assert float(ms.rsplit("+", 1)[1]) == DriftSettings().min_samples


def test_every_rule_aggregates_replicas():
    for r in RECORDS:
        expr = r["expr"]
        raw = re.findall(r"(?<![:\w])mlmon_[a-z_]+", expr)
        if r["_group"] in ("mlmon-trends",) or not raw:
            continue
        assert "without (instance, pod" in expr or "max by (model" in expr or "max by (" in expr, (
            f"{r['record']} does not aggregate replicas"
        )


def test_amtool_checks_the_config():
    amtool = require_binary("amtool")
    res = run(amtool, "check-config", str(AM_CONFIG))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "4 receivers" in res.stdout and "2 inhibit rules" in res.stdout


ROUTES = [
    # labels, receivers that must get the alert
    (["severity=critical", "alertname=MLModelDatasetDrift", "model=m"], "pager,email"),
    (["severity=critical", "alertname=MlmonExporterDown"], "pager,email"),
    (["severity=warning", "alertname=MLModelFeatureDrift", "model=m"], "email,chat"),
    (["severity=info", "alertname=MlmonLimitReached"], "blackhole"),
    (["alertname=SomethingElse"], "blackhole"),
]


@pytest.mark.parametrize(("labels", "receivers"), ROUTES)
def test_amtool_routes(labels, receivers):
    amtool = require_binary("amtool")
    res = run(
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={AM_CONFIG}",
        f"--verify.receivers={receivers}",
        *labels,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == receivers


def _copy_bundle(tmp: Path) -> Path:
    shutil.copytree(ROOT / "prometheus", tmp / "prometheus")
    shutil.copytree(ROOT / "tests" / "rules", tmp / "tests" / "rules")
    shutil.copytree(ROOT / "alertmanager", tmp / "alertmanager")
    return tmp


def test_a_broken_rule_fails_the_unit_tests(tmp_path):
    """The rule tests can fail: weaken the feature-drift comparison and they do."""
    promtool = require_binary("promtool")
    root = _copy_bundle(tmp_path)
    alerts = root / "prometheus/rules/mlmon.alerts.yml"
    text = alerts.read_text()
    broken = text.replace(
        "model_version_feature:mlmon_feature_drift_ks:increase1h\n                  >= on",
        "model_version_feature:mlmon_feature_drift_ks:increase1h\n                  < on",
        1,
    )
    assert broken != text
    alerts.write_text(broken)
    res = run(promtool, "test", "rules", "tests/rules/mlmon.alerts.test.yml", cwd=root)
    assert res.returncode != 0
    assert "MLModelFeatureDrift" in res.stderr


def test_a_broken_route_fails_the_route_tests(tmp_path):
    amtool = require_binary("amtool")
    root = _copy_bundle(tmp_path)
    cfg = root / "alertmanager/alertmanager.yml"
    doc = yaml.safe_load(cfg.read_text())
    doc["route"]["routes"][0]["continue"] = False  # critical would no longer reach email
    cfg.write_text(yaml.safe_dump(doc))
    res = run(
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={cfg}",
        "--verify.receivers=pager,email",
        "severity=critical",
    )
    assert res.returncode != 0
