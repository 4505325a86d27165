"""Grafana dashboards without a Grafana server: the committed JSON is what the generator
writes, its structure follows the conventions, every query parses (promtool) and names only
metrics that exist, and -- against the demo stack -- every panel query returns series."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from pathlib import Path

import pytest
import yaml
from helpers import require_binary, wait_until
from mlmon.cli import build_registry
from mlmon.demo import runner as demo
from mlmon.demo import stack
from test_docs import loaded_monitors

from bundle import dashboards
from bundle.params import Params

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "grafana/dashboards").glob("*.json"))
PROVISIONED_UID = yaml.safe_load((ROOT / "grafana/provisioning/datasources/mlmon.yml").read_text())[
    "datasources"
][0]["uid"]
SUBSTITUTE = {
    "$__rate_interval": "1m",
    "$job": ".+",
    "$model": "credit-risk",
    "$version": ".+",
    "$feature": ".+",
    "$attribute": ".+",
}


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _panels(d: dict) -> list[dict]:
    return [p for p in d["panels"] if p["type"] != "row"]


def _exprs(d: dict) -> list[tuple[str, str]]:
    out = [(p["title"], t["expr"]) for p in _panels(d) for t in p["targets"]]
    return out


def _substitute(expr: str) -> str:
    for k, v in SUBSTITUTE.items():
        expr = expr.replace(k, v)
    assert "$" not in expr, expr
    return expr


def test_committed_json_is_what_the_generator_writes():
    rendered = dashboards.render(Params())
    assert set(rendered) == {p.name for p in DASHBOARDS}
    for name, text in rendered.items():
        path = ROOT / "grafana/dashboards" / name
        assert path.read_text() == text, f"{name} is stale: run python -m bundle"


def test_dashboard_structure():
    uids = set()
    for path in DASHBOARDS:
        d = _load(path)
        assert d["uid"].startswith("mlmon-") and d["uid"] not in uids
        uids.add(d["uid"])
        assert d["title"] and "mlmon" in d["tags"]
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        cells: set[tuple[int, int]] = set()
        for p in d["panels"]:
            g = p["gridPos"]
            assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"{path.name}: {p['title']} overlaps"
                    cells.add((x, y))
        for p in _panels(d):
            where = f"{path.name}: {p['title']}"
            assert p["title"] and len(p["description"]) > 30, where
            assert p["fieldConfig"]["defaults"].get("unit"), f"{where} has no unit"
            assert p["datasource"]["uid"] == "${datasource}", where
            assert p["targets"], where
            for t in p["targets"]:
                assert t["datasource"]["uid"] == "${datasource}" and t["expr"], where
                for m in re.finditer(r"\b(rate|increase|irate)\(([^()]*)\)", t["expr"]):
                    assert m.group(2).endswith("[$__rate_interval]"), f"{where}: {m.group(0)}"
            if p["type"] == "stat":
                steps = p["fieldConfig"]["defaults"]["thresholds"]["steps"]
                assert steps[0]["value"] is None
        variables = {v["name"]: v for v in d["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["current"]["value"] == PROVISIONED_UID
        assert "job" in variables
        if d["uid"] != "mlmon-fleet":
            assert {"model", "version"} <= set(variables)
            for name in ("job", "model", "version"):
                assert variables[name]["query"]["query"].startswith("label_values(")
    assert uids == {
        "mlmon-fleet",
        "mlmon-model",
        "mlmon-feature-drift",
        "mlmon-performance",
        "mlmon-fairness",
        "mlmon-versions",
    }


def test_red_threshold_lines_come_from_threshold_series():
    found = 0
    for path in DASHBOARDS:
        for p in _panels(_load(path)):
            for o in p["fieldConfig"]["overrides"]:
                props = {x["id"]: x["value"] for x in o["properties"]}
                if props.get("color", {}).get("fixedColor") != "red":
                    continue
                name = o["matcher"]["options"]
                t = next(t for t in p["targets"] if t["legendFormat"] == name)
                assert re.search(r"model:mlmon_threshold_\w+:max|mlmon_threshold_\w+", t["expr"])
                found += 1
    assert found >= 10


def test_every_query_parses(tmp_path):
    promtool = require_binary("promtool")
    rules = []
    for path in DASHBOARDS:
        d = _load(path)
        for i, (_title, expr) in enumerate(_exprs(d)):
            rules.append({"record": f"dashboard:check_{len(rules)}:{i}", "expr": _substitute(expr)})
        for v in d["templating"]["list"]:
            if v["type"] == "query":
                rules.append(
                    {
                        "record": f"dashboard:var_{len(rules)}:q",
                        "expr": _variable_query(v["query"]["query"]),
                    }
                )
    f = tmp_path / "dashboards.rules.yml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    res = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{len(rules)} rules found" in res.stdout


def _variable_query(q: str) -> str:
    m = re.fullmatch(r"label_values\((.+), (\w+)\)", q)
    assert m, q
    return _substitute(f"count by ({m.group(2)}) ({m.group(1)})")


def _exporter_samples(tmp_path: Path) -> set[str]:
    names = set()
    for m in loaded_monitors(tmp_path):
        for fam in build_registry(m).collect():
            names |= {s.name for s in fam.samples}
    return names


def test_dashboards_only_name_metrics_that_exist(tmp_path):
    samples = _exporter_samples(tmp_path)
    records = {
        r["record"]
        for f in (ROOT / "prometheus/rules").glob("*.yml")
        for g in yaml.safe_load(f.read_text())["groups"]
        for r in g["rules"]
        if "record" in r
    }
    seen = set()
    for path in DASHBOARDS:
        d = _load(path)
        exprs = [e for _, e in _exprs(d)]
        exprs += [v["query"]["query"] for v in d["templating"]["list"] if v["type"] == "query"]
        exprs += [a["expr"] for a in d["annotations"]["list"]]
        for expr in exprs:
            for name in re.findall(r"(?<![\w:])([a-zA-Z_][\w:]*)\s*(?=\{|\[|\)|$| )", expr):
                if ":" in name:
                    assert name in records, f"{path.name}: unknown recording rule {name}"
                    seen.add(name)
                elif name.startswith("mlmon_"):
                    assert name in samples, f"{path.name}: unknown metric {name}"
                    seen.add(name)
    assert len(seen) > 40


# ------------------------------------------------------------------ against real servers


@pytest.fixture(scope="module")
def demo_stack(tmp_path_factory: pytest.TempPathFactory):
    """`mlmon demo`'s own stack, with 1 s intervals, fed its workload fast: 400 events per
    second, drifting after 4 s, for long enough that every signal has data."""
    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    work = tmp_path_factory.mktemp("demo")
    cfg = work / "mlmon.yml"
    doc = yaml.safe_load((ROOT / "examples/mlmon.yml").read_text())
    doc["models"][0]["baseline"] = str(ROOT / "examples" / doc["models"][0]["baseline"])
    cfg.write_text(yaml.safe_dump(doc))
    ports = [stack.free_port() for _ in range(3)]
    st = demo.start_stack(ROOT, cfg, work, *ports, interval="1s", alert_for="1s", group_wait="1s")
    stop = threading.Event()
    sender = threading.Thread(
        target=demo.traffic, args=(st.exporter.url, 400.0, 4.0, 90.0, stop, 2.0), daemon=True
    )
    sender.start()
    try:
        yield st
    finally:
        stop.set()
        sender.join(15)
        st.stop()


def test_demo_drift_alert_fires_in_alertmanager(demo_stack):
    def firing() -> list:
        import requests

        alerts = requests.get(f"{demo_stack.alertmanager.url}/api/v2/alerts", timeout=5).json()
        return [
            a
            for a in alerts
            if a["labels"]["alertname"] == "MLModelFeatureDrift"
            and a["status"]["state"] == "active"
        ]

    alerts = wait_until(firing, 60, "MLModelFeatureDrift to be active in Alertmanager")
    assert {a["labels"]["feature"] for a in alerts} >= {"income", "debt_ratio"}
    assert all(a["labels"]["model"] == "credit-risk" for a in alerts)


def _active(demo_stack, name: str) -> list:
    import requests

    alerts = requests.get(f"{demo_stack.alertmanager.url}/api/v2/alerts", timeout=5).json()
    return [
        a for a in alerts if a["labels"]["alertname"] == name and a["status"]["state"] == "active"
    ]


def test_demo_performance_fairness_and_canary_alerts_fire(demo_stack):
    """After the drift a quarter of the outcomes stop following the scores (accuracy falls
    below 0.7), group f is selected less often than m, and the canary v2 is worse."""
    acc = wait_until(
        lambda: _active(demo_stack, "MLModelAccuracyLow"), 90, "MLModelAccuracyLow to be active"
    )
    assert {a["labels"]["version"] for a in acc} >= {"v1"}
    fair = wait_until(
        lambda: _active(demo_stack, "MLModelDisparateImpact"),
        90,
        "MLModelDisparateImpact to be active",
    )
    assert {(a["labels"]["attribute"], a["labels"]["group"]) for a in fair} == {("gender", "f")}
    canary = wait_until(
        lambda: _active(demo_stack, "MLModelChallengerWorse"),
        90,
        "MLModelChallengerWorse to be active",
    )
    assert {(a["labels"]["version"], a["labels"]["champion"]) for a in canary} == {("v2", "v1")}


def test_every_panel_query_returns_series(demo_stack):
    # by then the drift alerts fire (the annotations query needs one) and every rule,
    # including the trend averages, has been evaluated with the drifted data
    test_demo_drift_alert_fires_in_alertmanager(demo_stack)
    prom = demo_stack.prometheus.url
    empty = []
    checked = 0
    for path in DASHBOARDS:
        d = _load(path)
        queries = [
            (f"{p['title']} [{t['refId']}]", t["expr"]) for p in _panels(d) for t in p["targets"]
        ]
        queries += [
            (f"variable {v['name']}", _variable_query(v["query"]["query"]))
            for v in d["templating"]["list"]
            if v["type"] == "query"
        ]
        queries += [(f"annotation {a['name']}", a["expr"]) for a in d["annotations"]["list"]]
        for title, expr in queries:
            promql = _substitute(expr)

            def has_series(q: str = promql) -> bool:
                return len(stack.query(prom, q)) > 0

            try:
                wait_until(has_series, 20, f"{path.name}: {title}")
            except pytest.fail.Exception:
                empty.append(f"{path.name}: {title}: {promql}")
            checked += 1
    assert not empty, "panels without data:\n" + "\n".join(empty)
    assert checked > 60
