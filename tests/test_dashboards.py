"""Grafana dashboards without a Grafana server: the committed JSON is what the generator
writes, it type-checks against @grafana/schema for the Grafana that docker-compose.yml
runs, its structure follows the conventions, every variable it uses is one it defines,
every query parses (promtool) and names only metrics that exist, links lead to dashboards
that draw what was clicked, colours and red lines come from the threshold series, and --
against the demo stack -- every panel query returns series."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tfserving
import yaml
from helpers import Exporter, require_binary, wait_until
from mlmon.capture.counters import ProxyStats
from mlmon.cli import build_registry
from mlmon.core.baseline import build_profile, read_training_data, write_profile
from mlmon.core.config import THRESHOLDS, load_config
from mlmon.demo import history, stack
from mlmon.demo import runner as demo
from test_docs import loaded_monitors
from test_tasks import _monitor, _rows

from bundle import dashboards
from bundle.params import Params

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "grafana/dashboards").glob("*.json"))
PROVISIONED_UID = yaml.safe_load((ROOT / "grafana/provisioning/datasources/mlmon.yml").read_text())[
    "datasources"
][0]["uid"]
# a value for each variable a dashboard may define, and for Grafana's own
VALUES = {
    "job": ".+",
    "model": "credit-risk",
    "version": ".+",
    "feature": ".+",
    "attribute": ".+",
}
BUILTIN = {"__rate_interval": "1m"}
VARIABLE = re.compile(r"\$\{?(\w+)")


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _panels(d: dict) -> list[dict]:
    return [p for p in d["panels"] if p["type"] != "row"]


def _exprs(d: dict) -> list[tuple[str, str]]:
    out = [(p["title"], t["expr"]) for p in _panels(d) for t in p["targets"]]
    return out


def _defined(d: dict) -> set[str]:
    return {v["name"] for v in d["templating"]["list"]}


def _substitute(expr: str, defined: set[str], model: str = VALUES["model"]) -> str:
    """``expr`` with the dashboard's own variables (and Grafana's) replaced; a variable the
    dashboard does not define fails, as Grafana would leave it in the query."""
    for name in sorted(set(VARIABLE.findall(expr)), key=len, reverse=True):
        assert name in defined or name in BUILTIN, f"${name} is not defined: {expr}"
        value = BUILTIN.get(name) or (model if name == "model" else VALUES[name])
        expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
    assert "$" not in expr, expr
    return expr


def _annotation_exprs(d: dict) -> list[tuple[str, str]]:
    return [(a["name"], a["target"]["expr"]) for a in d["annotations"]["list"]]


def test_every_variable_a_dashboard_uses_is_one_it_defines():
    """Queries, titles, links and annotations name only the dashboard's own variables
    (Grafana's start with two underscores); the substitution below fails on any other."""
    for path in DASHBOARDS:
        d = _load(path)
        text = path.read_text()
        used = {n for n in VARIABLE.findall(text) if not n.startswith("__")}
        assert used <= _defined(d), f"{path.name}: undefined {sorted(used - _defined(d))}"
        assert _defined(d) <= set(VALUES) | {"datasource"}, path.name
    with pytest.raises(AssertionError, match=r"\$model is not defined"):
        _substitute('ALERTS{model="$model"}', {"job"})


def test_committed_json_is_what_the_generator_writes():
    rendered = dashboards.render(Params())
    assert set(rendered) == {p.name for p in DASHBOARDS}
    for name, text in rendered.items():
        path = ROOT / "grafana/dashboards" / name
        assert path.read_text() == text, f"{name} is stale: run python -m bundle"


SCHEMA = ROOT / "tests/dashboards-schema"  # @grafana/schema and typescript, pinned (npm ci)

# Mistakes the type-check must report, one per copy of the fleet dashboard (tsc reports
# only the first unknown key of an object): (what is wrong, old text, new text)
MISTAKES = [
    ("empty current", '"name": "job",', '"name": "job", "current": {},'),
    ("misspelt panel key", '"description": "One row', '"descripton": "x", "description": "One row'),
    ("misspelt option", '"displayMode": "table"', '"displayMod": "table"'),
    ("wrong enum value", '"colorMode": "background"', '"colorMode": "backgroundd"'),
    ("misspelt query key", '"legendFormat": "up"', '"legendFormt": "up"'),
    ("top-level annotation expr", '"iconColor": "red",', '"iconColor": "red", "expr": "up",'),
    ("link without icon", '"icon": "external link",', ""),
]


def _grafana_version() -> str:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return compose["services"]["grafana"]["image"].rsplit(":", 1)[1]


@pytest.fixture(scope="module")
def type_check(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """tsc's errors for each generated dashboard and each broken copy of the fleet's, each
    written as ``const dashboard: DashboardJson = <the JSON>`` (a literal, so TypeScript
    checks every key and string value against the type, not a widened JSON import)."""
    node = require_binary("node")
    tsc = SCHEMA / "node_modules/typescript/bin/tsc"
    if not tsc.exists():
        pytest.fail(f"{tsc} is missing: run `make test` (npm ci in {SCHEMA.name})")
    work = tmp_path_factory.mktemp("schema")
    sources = {p.stem: p.read_text() for p in DASHBOARDS}
    fleet = sources["mlmon-fleet"]
    for i, (_what, old, new) in enumerate(MISTAKES):
        assert old in fleet, old
        sources[f"broken-{i}"] = fleet.replace(old, new, 1)
    for name, text in sources.items():
        (work / f"{name}.ts").write_text(
            f'import type {{ DashboardJson }} from "{SCHEMA}/dashboard";\n'
            f"export const dashboard: DashboardJson = {text};\n"
        )
    config = {"extends": str(SCHEMA / "tsconfig.json"), "files": [f"{n}.ts" for n in sources]}
    (work / "tsconfig.json").write_text(json.dumps(config))
    res = subprocess.run(
        [node, str(tsc), "-p", ".", "--pretty", "false"], cwd=work, capture_output=True, text=True
    )
    errors: dict[str, str] = {name: "" for name in sources}
    name = None
    for line in res.stdout.splitlines():
        m = re.match(r"([\w-]+)\.ts\(\d+,\d+\): error TS", line)
        assert m or (name and line.startswith(" ")), line  # tsc's own failure, not a file's
        name = m.group(1) if m else name
        errors[name] += line + "\n"
    assert res.returncode == (2 if any(errors.values()) else 0), res.stdout + res.stderr
    return errors


def test_schema_is_the_composed_grafanas():
    """The type-check uses @grafana/schema of the Grafana docker-compose.yml runs."""
    version = _grafana_version()
    pinned = json.loads((SCHEMA / "package.json").read_text())["devDependencies"]
    assert pinned["@grafana/schema"] == version
    lock = json.loads((SCHEMA / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/@grafana/schema"]["version"] == version
    installed = SCHEMA / "node_modules/@grafana/schema/package.json"
    assert installed.exists(), "run `make test` (npm ci in tests/dashboards-schema)"
    assert json.loads(installed.read_text())["version"] == version


def test_dashboards_type_check_against_grafana_schema(type_check):
    for path in DASHBOARDS:
        assert type_check[path.stem] == "", type_check[path.stem]


def test_type_check_reports_wrong_fields(type_check):
    for i, (what, _old, _new) in enumerate(MISTAKES):
        assert "error TS" in type_check[f"broken-{i}"], f"tsc missed: {what}"


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


# a threshold of the config, a reconstruction error's threshold for the window's size, or
# a seasonal band's edge
THRESHOLD_SERIES = re.compile(
    r"\bmodel:mlmon_threshold_(\w+):max\b|\bmlmon_threshold_(\w+)"
    r"|\bmlmon_(multivariate|embedding)_drift_threshold\b"
    r"|\bmodel(?:_output)?:(mlmon_\w+):(?:upper|lower)_\w+"
)


def _red_lines(p: dict) -> list[dict]:
    """The targets a panel draws as red lines: those its red overrides match by name or
    by regular expression (against the legend template)."""
    out = []
    for o in p["fieldConfig"]["overrides"]:
        props = {x["id"]: x["value"] for x in o["properties"]}
        if props.get("color", {}).get("fixedColor") != "red":
            continue
        m = o["matcher"]
        hits = [
            t
            for t in p["targets"]
            if (m["id"] == "byName" and t["legendFormat"] == m["options"])
            or (m["id"] == "byRegexp" and re.fullmatch(m["options"], t["legendFormat"]))
        ]
        assert hits, f"{p['title']}: red override {m} matches no target"
        out += hits
    return out


def test_red_threshold_lines_come_from_threshold_series():
    drawn = set()
    for path in DASHBOARDS:
        for p in _panels(_load(path)):
            for t in _red_lines(p):
                found = THRESHOLD_SERIES.findall(t["expr"])
                assert found, f"{path.name}: {p['title']}: {t['expr']}"
                drawn |= {next(g for g in groups if g) for groups in found}
    # every threshold an alert compares with has a red line somewhere
    alerting = set(re.findall(r"model:mlmon_threshold_(\w+):max", _alert_exprs()))
    assert len(alerting) >= 15 and alerting <= set(THRESHOLDS)
    assert drawn >= alerting, f"no red line for {sorted(alerting - drawn)}"


def _alert_exprs() -> str:
    doc = yaml.safe_load((ROOT / "prometheus/rules/mlmon.alerts.yml").read_text())
    return "\n".join(r["expr"] for g in doc["groups"] for r in g["rules"])


# stat tiles coloured by a model's threshold series: title -> (threshold, red above/below)
TILES = {
    ("mlmon-model.json", "Traffic"): ("request_rate_min", "below"),
    ("mlmon-model.json", "Error ratio"): ("error_ratio_max", "above"),
    ("mlmon-model.json", "p99 latency"): ("latency_p99_seconds_max", "above"),
    ("mlmon-performance.json", "Accuracy (1d)"): ("accuracy_min", "below"),
    ("mlmon-performance.json", "F1 (1d)"): ("f1_min", "below"),
    ("mlmon-performance.json", "Calibration error"): ("calibration_error_max", "above"),
}


def _limit_from_query(p: dict) -> tuple[str, str, str] | None:
    """(the config query, the base colour, the step colour) of a "Config from query
    results" that sets the panel's threshold, or None."""
    config = [t for t in p.get("transformations", []) if t["id"] == "configFromData"]
    if not config:
        return None
    (c,) = config
    opts = c["options"]
    (ref,) = [t for t in p["targets"] if t["refId"] == opts["configRefId"]]
    (mapping,) = opts["mappings"]
    assert mapping["handlerKey"] == "threshold1" and mapping["fieldName"] == ref["legendFormat"]
    assert opts["applyTo"] == {"id": "byFrameRefID", "options": p["targets"][0]["refId"]}
    steps = p["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert len(steps) == 1 and steps[0]["value"] is None, p["title"]
    return ref["expr"], steps[0]["color"], mapping["handlerArguments"]["threshold"]["color"]


def test_stat_tiles_take_their_limit_from_the_models_threshold_series():
    """A model with its own threshold is coloured against its own alert: the tile's step
    is the threshold series, through Grafana's "Config from query results", red on the
    alerting side; no tile holds a copy of a default threshold."""
    seen = {}
    defaults = set(Params().defaults.values())
    for path in DASHBOARDS:
        for p in _panels(_load(path)):
            if p["type"] != "stat":
                continue
            limit = _limit_from_query(p)
            if (path.name, p["title"]) in TILES:
                assert limit, f"{path.name}: {p['title']} has no limit from a query"
                name, direction = TILES[path.name, p["title"]]
                expr, base, step = limit
                assert f"model:mlmon_threshold_{name}:max" in expr, expr
                assert (base, step) == (
                    ("green", "red") if direction == "above" else ("red", "green")
                )
                seen[path.name, p["title"]] = expr
            elif limit is None:
                fixed = {s["value"] for s in p["fieldConfig"]["defaults"]["thresholds"]["steps"]}
                assert not (fixed - {None, 1, 0.5, Params().ingest_rejected_ratio_max}) & defaults
    assert set(seen) == set(TILES)


def _fleet_column(fleet: dict, column: str) -> tuple[dict, dict]:
    """The models table's target and override of ``column`` (its display name)."""
    table = next(p for p in fleet["panels"] if p["title"] == "Models")
    for o in table["fieldConfig"]["overrides"]:
        props = {x["id"]: x["value"] for x in o["properties"]}
        if props.get("displayName") == column:
            ref = o["matcher"]["options"].removeprefix("Value #")
            return next(t for t in table["targets"] if t["refId"] == ref), props
    raise AssertionError(column)


def test_fleet_cells_compare_each_model_with_its_own_limit():
    """A table colours a column with one set of steps; so a column that models limit
    differently holds the model's value divided by its own threshold series, red past 1."""
    fleet = _load(ROOT / "grafana/dashboards/mlmon-fleet.json")
    for column, threshold, direction in [
        ("Error ratio (% of budget)", "error_ratio_max", "above"),
        ("Drifted share (% of limit)", "drifted_features_ratio_max", "above"),
        ("Prediction drift (% of KS floor)", "drift_ks_min", "above"),
        ("Accuracy (% of minimum)", "accuracy_min", "below"),
        ("Disparate impact (% of minimum)", "disparate_impact_min", "below"),
    ]:
        t, props = _fleet_column(fleet, column)
        assert t["expr"].endswith(f" / on (model) model:mlmon_threshold_{threshold}:max")
        colours = [s["color"] for s in props["thresholds"]["steps"]]
        assert props["thresholds"]["steps"][1]["value"] == 1
        assert colours == (["green", "red"] if direction == "above" else ["red", "green"])


def _links(d: dict) -> list[tuple[str, str]]:
    """(panel title, URL) of every data link in a dashboard's panels."""
    out = []
    for p in _panels(d):
        for o in p["fieldConfig"]["overrides"]:
            for prop in o["properties"]:
                if prop["id"] == "links":
                    out += [(p["title"], link["url"]) for link in prop["value"]]
    return out


def test_links_open_dashboards_that_define_their_variables():
    by_uid = {_load(p)["uid"]: _load(p) for p in DASHBOARDS}
    checked = 0
    for path in DASHBOARDS:
        for title, url in _links(_load(path)):
            m = re.fullmatch(r"/d/([\w-]+)/[\w-]+\?(.*)", url)
            assert m and m.group(1) in by_uid, f"{path.name}: {title}: {url}"
            names = set(re.findall(r"var-(\w+)=", m.group(2)))
            assert names and names <= _defined(by_uid[m.group(1)]), f"{title}: {url}"
            checked += 1
    assert checked >= 10


def test_fleet_cells_open_a_dashboard_that_draws_the_signal():
    """A click on a cell opens a dashboard with a panel on the same series."""
    fleet = _load(ROOT / "grafana/dashboards/mlmon-fleet.json")
    by_uid = {_load(p)["uid"]: _load(p) for p in DASHBOARDS}
    table = next(p for p in fleet["panels"] if p["title"] == "Models")
    names = 0
    for o in table["fieldConfig"]["overrides"]:
        props = {x["id"]: x["value"] for x in o["properties"]}
        if o["matcher"]["options"] == "model":
            continue
        ref = o["matcher"]["options"].removeprefix("Value #")
        expr = next(t["expr"] for t in table["targets"] if t["refId"] == ref)
        signal = re.search(r"\b(model_version\w*:mlmon_\w+:\w+|ALERTS)\b", expr).group(1)
        (link,) = props["links"]
        target_board = by_uid[link["url"].split("/")[2]]
        drawn = " ".join(e for _, e in _exprs(target_board))
        assert signal in drawn, f"{props['displayName']}: {target_board['title']} lacks {signal}"
        names += 1
    assert names == len(table["targets"])


def test_every_query_parses(tmp_path):
    promtool = require_binary("promtool")
    rules = []
    for path in DASHBOARDS:
        d = _load(path)
        defined = _defined(d)
        for i, (_title, expr) in enumerate(_exprs(d) + _annotation_exprs(d)):
            rules.append(
                {"record": f"dashboard:check_{len(rules)}:{i}", "expr": _substitute(expr, defined)}
            )
        for v in d["templating"]["list"]:
            if v["type"] == "query":
                rules.append(
                    {
                        "record": f"dashboard:var_{len(rules)}:q",
                        "expr": _variable_query(v["query"]["query"], defined),
                    }
                )
    f = tmp_path / "dashboards.rules.yml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    res = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{len(rules)} rules found" in res.stdout


def _variable_query(q: str, defined: set[str]) -> str:
    m = re.fullmatch(r"label_values\((.+), (\w+)\)", q)
    assert m, q
    return _substitute(f"count by ({m.group(2)}) ({m.group(1)})", defined)


def _exporter_samples(tmp_path: Path) -> set[str]:
    """Every sample name an exporter with a proxy writes."""
    import os

    proxy = ProxyStats()
    proxy.pid = os.getpid()  # this process stands in for the proxy's, for its process metrics
    names = set()
    for m in loaded_monitors(tmp_path):
        for fam in build_registry(m, proxy).collect():
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
        exprs += [e for _, e in _annotation_exprs(d)]
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
    # three weeks and a day of past traffic, so the seasonal bands have their weeks
    end = (time.time() // 3600 - 1) * 3600
    blocks, _ = history.build(load_config(cfg), work / "history", 22, end)
    second, upstream = _second_exporter(work / "second")
    try:
        st = demo.start_stack(
            ROOT, cfg, work, *ports, interval="1s", alert_for="1s", group_wait="1s",
            extra_targets=(f"127.0.0.1:{second.port}",), history=blocks,
        )  # fmt: skip
    except BaseException:
        second.stop()
        upstream.shutdown()
        raise
    stop = threading.Event()
    sender = threading.Thread(
        target=demo.traffic, args=(st.exporter.url, 400.0, 4.0, 90.0, stop, 2.0), daemon=True
    )
    sender.start()
    regression = threading.Thread(target=_regression_traffic, args=(second, stop), daemon=True)
    regression.start()
    try:
        yield st
    finally:
        stop.set()
        sender.join(15)
        regression.join(15)
        st.stop()
        second.stop()
        upstream.shutdown()


# The demo has one binary model and no proxy; a second exporter beside it serves a
# regression model (REGRESSION) behind a proxy, and a model with an embedding feature
# (EMBEDDED), so their panels have data too.
REGRESSION = "m"
EMBEDDED = "e"


def _vectors(n: int, seed: int) -> np.ndarray:
    """8-d vectors from 3 latent factors plus noise, a low-rank shape like an embedding's."""
    loadings = np.random.default_rng(0).normal(size=(3, 8))
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)) @ loadings + 0.3 * rng.normal(size=(n, 8))


def _embedding_events(n: int, seed: int) -> list[dict]:
    return [
        {"features": {"emb": [round(float(x), 4) for x in v]}, "prediction": float(v[0])}
        for v in _vectors(n, seed)
    ]


def _add_embedded_model(work: Path) -> None:
    """EMBEDDED, in the config `_monitor` wrote, with its baseline built from JSONL."""
    data = work / "e.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in _embedding_events(2_000, 0)))
    doc = yaml.safe_load((work / "c.yml").read_text())
    feature = {"kind": "embedding", "dim": 8, "components": 3}
    doc["models"].append(
        {"name": EMBEDDED, "task": "regression", "baseline": "e.json", "features": {"emb": feature}}
    )
    (work / "c.yml").write_text(yaml.safe_dump(doc))
    model = load_config(work / "c.yml").models[1]
    write_profile(build_profile(model, read_training_data(data, ["emb"], False)), model.baseline)


def _second_exporter(work: Path) -> tuple[Exporter, object]:
    work.mkdir()
    _monitor(work, "regression")  # writes the config and the baseline
    _add_embedded_model(work)
    upstream = tfserving.serve(0)
    args = ["--upstream", f"http://127.0.0.1:{upstream.server_address[1]}",
            "--proxy.listen-address", "127.0.0.1:0"]  # fmt: skip
    exporter = Exporter(work / "c.yml", args)
    _regression_batch(exporter, 0, 2_000)
    return exporter, upstream


def _regression_batch(exporter: Exporter, seed: int, n: int) -> None:
    """``n`` labelled predictions of the regression model (sizes one spread higher)."""
    rows = _rows(n, seed=100 + seed, shift=1.0)
    for i, r in enumerate(rows):
        r["id"] = f"r{seed}-{i}"
        r["version"] = "v1"
    events = [{k: v for k, v in r.items() if k != "label"} for r in rows]
    labels = [{"id": r["id"], "label": r["label"]} for r in rows]
    for path, body in (("predictions", {"events": events}), ("labels", {"labels": labels})):
        reply = exporter.session.post(f"{exporter.url}/v1/models/{REGRESSION}/{path}", json=body)
        assert reply.status_code == 200, reply.text
    vectors = [{**e, "version": "v1"} for e in _embedding_events(n, 1_000 + seed)]
    assert exporter.post(EMBEDDED, vectors).status_code == 200


def _regression_traffic(exporter: Exporter, stop: threading.Event) -> None:
    """A batch a second while the stack runs: the day's error counters must grow."""
    seed = 1
    while not stop.wait(1.0):
        _regression_batch(exporter, seed, 50)
        seed += 1


def test_demo_drift_alert_fires_in_alertmanager(demo_stack):
    def firing() -> list:
        import requests

        alerts = requests.get(f"{demo_stack.alertmanager.url}/api/v2/alerts", timeout=5).json()
        return [
            a
            for a in alerts
            if a["labels"]["alertname"] == "MLModelFeatureDrift"
            and a["status"]["state"] == "active"
            and a["labels"]["model"] == "credit-risk"  # the second exporter's model drifts too
        ]

    alerts = wait_until(firing, 60, "MLModelFeatureDrift to be active in Alertmanager")
    assert {a["labels"]["feature"] for a in alerts} >= {"income", "debt_ratio"}


def _active(demo_stack, name: str) -> list:
    import requests

    alerts = requests.get(f"{demo_stack.alertmanager.url}/api/v2/alerts", timeout=5).json()
    return [
        a for a in alerts if a["labels"]["alertname"] == name and a["status"]["state"] == "active"
    ]


def test_demo_performance_fairness_and_canary_alerts_fire(demo_stack):
    """After the drift a quarter of the outcomes stop following the scores (accuracy falls
    below 0.7), group f is selected less often than m, and the canary v2 is worse."""
    # v1's day also holds the history's labelled predictions (accuracy about 0.75): its
    # alert may come after v2's
    wait_until(
        lambda: "v1" in {a["labels"]["version"] for a in _active(demo_stack, "MLModelAccuracyLow")},
        120,
        "MLModelAccuracyLow to be active for v1",
    )
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
        defined = _defined(d)
        queries += [
            (f"variable {v['name']}", _variable_query(v["query"]["query"], defined))
            for v in d["templating"]["list"]
            if v["type"] == "query"
        ]
        queries += [(f"annotation {name}", e) for name, e in _annotation_exprs(d)]
        for title, expr in queries:
            promql = _substitute(expr, defined)
            # a panel for another task or for embeddings has its data on the second
            # exporter's models
            others = [_substitute(expr, defined, model=m) for m in (REGRESSION, EMBEDDED)]

            def has_series(qs: tuple[str, ...] = (promql, *others)) -> bool:
                return any(len(stack.query(prom, x)) > 0 for x in dict.fromkeys(qs))

            try:
                wait_until(has_series, 20, f"{path.name}: {title}")
            except pytest.fail.Exception:
                empty.append(f"{path.name}: {title}: {promql}")
            checked += 1
    assert not empty, "panels without data:\n" + "\n".join(empty)
    assert checked > 60


def test_every_url_the_demo_prints_answers(demo_stack, tmp_path):
    """The banner of `mlmon demo` on this machine's Prometheus and Alertmanager (Debian's:
    the classic UI under /classic, no Alertmanager UI): every link it prints answers 200."""
    import argparse
    import urllib.request

    args = argparse.Namespace(rate=50.0, drift_after=120.0, alert_for="1m")
    banner = demo._banner(demo_stack, tmp_path, args)
    urls = re.findall(r"https?://\S+", banner)
    assert len(urls) >= 6, banner
    for url in urls:
        with urllib.request.urlopen(url, timeout=10) as reply:
            assert reply.status == 200, url
