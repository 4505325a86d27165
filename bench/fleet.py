"""Fleet scale, simulated: many models on a few real exporters, one real Prometheus with the
bundle's rules, and the fleet and model dashboards' queries against it. Not a test, and not
run in CI.

    .venv/bin/python bench/fleet.py            # 1,000 models x 20 features on 4 exporters
    .venv/bin/python bench/fleet.py --models 250 --exporters 1 --duration 120

1. Writes the models' configs and baselines in a temporary directory: mostly binary
   classifiers with a sensitive attribute, every eighth a regression, every sixteenth a
   3-class classifier, about 29% with a second version, a fifth of the features
   categorical; each baseline built by `build_profile`, as `mlmon baseline` builds it.
2. Starts `--exporters` real `mlmon serve` processes on 127.0.0.1 (contiguous shares of the
   models) and Debian's Prometheus scraping them with the generated `prometheus/rules/*.yml`
   (the 5-minute trends group at the global interval, so it runs during the bench).
3. Sends every model version `--warmup-events` predictions, waits for a scrape, then one
   columnar batch of `--events` (ids, latencies, groups, 1% failures) and labels for
   `--label-share` of them, and waits for a scrape again.
4. Reads each exporter's /metrics itself (`--scrape-runs` times): series per model by family
   group, checked model by model against `expected_series` (docs/scale-out.md).
5. Watches Prometheus for `--duration` seconds: scrape durations, rule group evaluations,
   CPU, memory, head series, and then recording-rule series per rule.
6. Runs every panel query of the fleet dashboard, and of the model dashboard for one model,
   `--query-runs` times, as Grafana sends them.

Every time is a median. Prints Markdown tables and writes bench/results/fleet-<models>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import requests
import yaml
from mlmon.core.baseline import TrainingRows, build_profile, write_profile
from mlmon.core.config import THRESHOLDS, load_config
from mlmon.demo import stack, synthetic
from mlmon.stats.evaluation import CLASS_METRICS

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.suite import Exporter

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("low", "mid", "high")  # the multiclass models' classes
GROUP_ATTRIBUTE = "segment"
GROUP_SHARES = {"a": 0.4, "b": 0.3, "c": 0.3}  # every group reaches fairness.min_samples
FAILURE_SHARE = 0.01
# Grafana's step for a 6-hour panel about 1,000 pixels wide; its $__rate_interval is
# max(step + scrape interval, 4 x scrape interval).
DASHBOARD_RANGE_SECONDS = 6 * 3600
DASHBOARD_STEP_SECONDS = 20
DASHBOARDS = {"fleet": "mlmon-fleet.json", "model": "mlmon-model.json"}
# Every family of a model, by the part of the model it describes; the exporter's own
# families (no `model` label) are counted apart, per exporter.
FAMILY_GROUPS = (
    (
        "thresholds",
        r"mlmon_threshold_.+|mlmon_model_info|mlmon_baseline_rows|mlmon_window_seconds"
        r"|mlmon_(drift_min_samples|performance_min_labels|fairness_min_samples)",
    ),
    ("versions", r"mlmon_version_.+"),
    ("fairness", r"mlmon_(fairness|group)_.+"),
    (
        "drift",
        r"mlmon_(feature|prediction)_drift.*|mlmon_(tested|drifted)_features"
        r"|mlmon_multivariate_.+|mlmon_attribution_.+|mlmon_(baseline_)?feature_attribution.*",
    ),
    ("inputs", r"mlmon_feature_.+|mlmon_ingest_(refused_values|unknown_features)"),
    ("predictions", r"mlmon_prediction_.+"),
    (
        "service",
        r"mlmon_inference_.+|mlmon_profiled_events|mlmon_window_events"
        r"|mlmon_ingest_(events|rejected_events)",
    ),
    (
        "performance",
        r"mlmon_(labels|label_store_.+|labelled_predictions|label_delay_seconds|window_labels"
        r"|correct_predictions|classification_outcomes|confusion|regression_.+"
        r"|baseline_regression_error|estimated_.+|accuracy|roc_auc"
        r"|expected_calibration_error|brier_score|" + "|".join(CLASS_METRICS) + ")",
    ),
)
GROUP_NAMES = [g for g, _ in FAMILY_GROUPS]


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else math.nan


# ================================================================== the fleet's models


@dataclass(frozen=True)
class ModelPlan:
    name: str
    task: str  # binary, multiclass or regression
    versions: tuple[str, ...]
    numeric: int
    categorical: int
    seed: int

    @property
    def spec(self) -> synthetic.TableSpec:
        return synthetic.wide_spec(self.numeric, self.categorical)

    @property
    def groups(self) -> bool:
        # fairness is computed for binary models only
        return self.task == "binary"


def plan_models(n: int, features: int) -> list[ModelPlan]:
    """Every eighth model a regression, every sixteenth a 3-class classifier, the rest
    binary; every fourth model (and every fifth of the others) has a second version."""
    categorical = features // 5
    plans = []
    for i in range(n):
        task = "regression" if i % 8 == 7 else "multiclass" if i % 16 == 3 else "binary"
        two = i % 4 == 0 or (task != "binary" and i % 5 == 0)
        plans.append(
            ModelPlan(
                name=f"model-{i:04d}",
                task=task,
                versions=("v1", "v2") if two else ("v1",),
                numeric=features - categorical,
                categorical=categorical,
                seed=i,
            )
        )
    return plans


def model_doc(plan: ModelPlan) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": plan.name,
        "task": plan.task,
        "baseline": f"baselines/{plan.name}.json",
        "features": plan.spec.config_features(),
    }
    if plan.task == "binary":
        doc.update(classes=[0, 1], positive_class=1, sensitive_attributes=[GROUP_ATTRIBUTE])
    elif plan.task == "multiclass":
        doc["classes"] = list(CLASSES)
    return doc


def regression_outputs(rows: list[dict], rng: np.random.Generator) -> None:
    """The synthetic classifier's rows as a regression model's: the score scaled to a value
    is the prediction, the label is that value plus noise."""
    noise = rng.normal(0.0, 8.0, len(rows))
    for r, e in zip(rows, noise, strict=True):
        value = round(100.0 * r.pop("scores")["1"], 3)
        r["prediction"] = value
        r["label"] = round(value + float(e), 3)


def multiclass_outputs(rows: list[dict], rng: np.random.Generator) -> None:
    """The rows as a 3-class model's: with the score p, the classes' probabilities are
    (1-p)^2, 2p(1-p), p^2; the prediction is the likeliest class, the label drawn from them."""
    draws = rng.random(len(rows))
    for r, u in zip(rows, draws, strict=True):
        p = r["scores"]["1"]
        probs = [(1 - p) ** 2, 2 * p * (1 - p), p * p]
        r["scores"] = {c: round(x, 6) for c, x in zip(CLASSES, probs, strict=True)}
        r["prediction"] = CLASSES[int(np.argmax(probs))]
        r["label"] = CLASSES[min(int(np.searchsorted(np.cumsum(probs), u)), 2)]


def rows_for(plan: ModelPlan, n: int, seed: int, **kw: Any) -> list[dict]:
    rows = synthetic.events(plan.spec, n, seed=seed, **kw)
    rng = np.random.default_rng(seed + 1)
    if plan.task == "regression":
        regression_outputs(rows, rng)
    elif plan.task == "multiclass":
        multiclass_outputs(rows, rng)
    return rows


def training_rows(plan: ModelPlan, n: int) -> TrainingRows:
    """The rows `mlmon baseline` would read from a JSONL file of events, in memory."""
    rows = rows_for(plan, n, seed=10_000 + plan.seed)
    names = list(plan.spec.config_features())
    return TrainingRows(
        columns={name: [r["features"][name] for r in rows] for name in names},
        predictions=[r["prediction"] for r in rows],
        scores=[r.get("scores") for r in rows],
        labels=[r["label"] for r in rows],
        rows=n,
        from_text=False,
    )


def _build_baselines(args: tuple[Path, list[ModelPlan], int]) -> int:
    config, plans, n = args
    models = {m.name: m for m in load_config(config).models}
    for plan in plans:
        model = models[plan.name]
        write_profile(build_profile(model, training_rows(plan, n)), model.baseline)
    return len(plans)


def write_fleet(
    tmp: Path, plans: list[ModelPlan], exporters: int, train_rows: int
) -> list[tuple[Path, list[ModelPlan]]]:
    """One config per exporter with its share of the models, and every model's baseline."""
    # contiguous shares: every one gets the same mix of tasks and versions
    n = len(plans)
    shares = [plans[k * n // exporters : (k + 1) * n // exporters] for k in range(exporters)]
    out = []
    for k, share in enumerate(shares):
        d = tmp / f"exporter-{k}"
        d.mkdir(parents=True)
        cfg = d / "mlmon.yml"
        cfg.write_text(yaml.safe_dump({"models": [model_doc(p) for p in share]}, sort_keys=False))
        out.append((cfg, share))
    jobs = [
        (cfg, share[i : i + 50], train_rows) for cfg, share in out for i in range(0, len(share), 50)
    ]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        assert sum(pool.map(_build_baselines, jobs)) == len(plans)
    return out


# ================================================================== traffic


def columnar_body(plan: ModelPlan, version: int, rows: list[dict], seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    n = len(rows)
    names = list(plan.spec.config_features())
    cols: dict[str, Any] = {
        "version": plan.versions[version],
        "id": [r["id"] for r in rows],
        "features": {name: [r["features"][name] for r in rows] for name in names},
        "prediction": [r["prediction"] for r in rows],
        "latency_seconds": np.round(rng.lognormal(-4.0, 0.6, n), 5).tolist(),
        "error": [("timeout" if x < FAILURE_SHARE else None) for x in rng.random(n)],
    }
    if plan.task == "multiclass":
        cols["scores"] = {c: [r["scores"][c] for r in rows] for c in CLASSES}
    if plan.task == "binary":
        cols["scores"] = [r["scores"]["1"] for r in rows]
        groups = list(GROUP_SHARES)
        picks = rng.choice(len(groups), size=n, p=list(GROUP_SHARES.values()))
        cols["groups"] = {GROUP_ATTRIBUTE: [groups[g] for g in picks]}
    return orjson.dumps({"columns": cols})


def labels_body(rows: list[dict], share: float, seed: int) -> bytes:
    keep = np.random.default_rng(seed).random(len(rows)) < share
    return orjson.dumps(
        {
            "labels": [
                {"id": r["id"], "label": r["label"]} for r, k in zip(rows, keep, strict=True) if k
            ]
        }
    )


@dataclass(frozen=True)
class Round:
    """One batch of predictions for every version of every model, and labels for some."""

    name: str  # prefixes the ids, so every round's ids are new
    events: int
    label_share: float
    seed: int


def post(http: requests.Session, url: str, body: bytes) -> None:
    r = http.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=120)
    if r.status_code != 200:
        raise RuntimeError(f"{url}: {r.status_code} {r.text[:300]}")


def feed_exporter(url: str, plans: list[ModelPlan], rnd: Round) -> int:
    http = requests.Session()
    sent = 0
    for plan in plans:
        for v, version in enumerate(plan.versions):
            seed = rnd.seed + plan.seed * 10 + v
            shift = {"x00": 0.5 * v, "x03": 0.3 * v} if v else None
            prefix = f"{rnd.name}-{version}-"
            rows = rows_for(plan, rnd.events, seed=seed, shift=shift, id_prefix=prefix)
            base = f"{url}/v1/models/{plan.name}"
            post(http, f"{base}/predictions", columnar_body(plan, v, rows, seed))
            if rnd.label_share > 0:
                post(http, f"{base}/labels", labels_body(rows, rnd.label_share, seed))
            sent += rnd.events
    return sent


# ================================================================== exporters


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def client_scrapes(exporter: Exporter, runs: int) -> tuple[list[float], list[float], bytes]:
    """GET /metrics as Prometheus asks for it (gzip): wall times, the exporter's CPU seconds
    for each (steadier on a busy machine, but they include a Prometheus scrape that happens
    to overlap), and the last body."""
    http = requests.Session()
    url = f"http://127.0.0.1:{exporter.port}/metrics"
    times, cpu, body = [], [], b""
    for _ in range(runs):
        c0, t0 = exporter.cpu_seconds(), time.perf_counter()
        r = http.get(url, headers={"Accept-Encoding": "gzip"}, timeout=120)
        body = r.content
        times.append(time.perf_counter() - t0)
        cpu.append(exporter.cpu_seconds() - c0)
        r.raise_for_status()
    return times, cpu, body


def render_seconds_mean(text: bytes) -> float:
    """The exporter's own mean render time over every scrape so far."""
    values = dict(re.findall(rb"^mlmon_scrape_render_seconds_(sum|count) (\S+)$", text, flags=re.M))
    return float(values[b"sum"]) / max(float(values[b"count"]), 1.0)


SAMPLE = re.compile(rb"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^\n]*\})? ", re.M)
MODEL_LABEL = re.compile(rb'[{,]model="([^"]*)"')
TYPE_LINE = re.compile(rb"^# TYPE (\S+) (\S+)", re.M)
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created", "_gcount", "_gsum")


def family_of(sample: str, families: set[str]) -> str:
    if sample in families:
        return sample
    for suffix in SUFFIXES:
        if sample.endswith(suffix) and sample.removesuffix(suffix) in families:
            return sample.removesuffix(suffix)
    return sample


def group_of(family: str) -> str:
    for group, pattern in FAMILY_GROUPS:
        if re.fullmatch(pattern, family.removesuffix("_total")):
            return group
    return "other"


def count_series(text: bytes) -> dict[str, Counter]:
    """Series of one exposition per model by family group ("(exporter)": its own)."""
    families = {m.group(1).decode() for m in TYPE_LINE.finditer(text)}
    groups: dict[str, str] = {}
    per_model: dict[str, Counter] = defaultdict(Counter)
    for m in SAMPLE.finditer(text):
        family = family_of(m.group(1).decode(), families)
        model = MODEL_LABEL.search(m.group(2) or b"")
        if model is None:
            per_model["(exporter)"]["self"] += 1
            continue
        group = groups.get(family) or groups.setdefault(family, group_of(family))
        per_model[model.group(1).decode()][group] += 1
    return per_model


# ================================================================== the cardinality formula


def expected_series(plan: ModelPlan, profile: dict[str, Any]) -> dict[str, int]:
    """Series of one model by family group, from the formula in docs/scale-out.md, for a
    model whose every statistic is reported (drift tested, enough labels, every group seen).
    N numeric and K categorical features, P = N + K; H = sum of (edges + 3) over the numeric
    features (buckets, +Inf, _sum, _count), Q = sum of (categories + 1) over the categorical
    ones (__other__); V versions, C classes, A attributes with G groups each; T thresholds."""
    feats = profile["features"].values()
    n = sum(f["kind"] == "numeric" for f in feats)
    k = len(profile["features"]) - n
    p = n + k
    h = sum(len(f["edges"]) + 3 for f in feats if f["kind"] == "numeric")
    q = sum(len(f["categories"]) + 1 for f in feats if f["kind"] == "categorical")
    v = len(plan.versions)
    classifier = plan.task != "regression"
    c = len(profile["prediction"]["categories"]) if classifier else 0
    out_hist = 12 if classifier else len(profile["prediction"]["edges"]) + 3  # score or value
    outputs = 11 if classifier else 6  # class: 3 scores, p-value, flag; score/value: 4, 1, 1
    if plan.task == "binary":
        perf = 16 + 19
    elif plan.task == "multiclass":
        perf = 16 + (c + 1) ** 2 + 6 * (c + 1) + 5
    else:
        perf = 16 + 16
    ag = len(GROUP_SHARES) if plan.groups else 0
    return {
        "thresholds": len(THRESHOLDS) + 6,  # + model_info, baseline rows, window, 3 minimums
        "inputs": h + q + 3 * p + v * (h + n + p + q),
        "service": 2 + 25 * v,
        "predictions": ((c + 1) if classifier else 0)
        + out_hist
        + v * (1 + ((c + 1) if classifier else 0) + out_hist),
        # with a multivariate model in the baseline: its components and explained variance,
        # and per version a score, its threshold and the decision
        "drift": v * (2 + 4 * n + 3 * k + 3 * p + outputs)
        + (2 + 3 * v if profile.get("multivariate") else 0),
        "performance": 7 + (0 if classifier else 2) + v * perf,
        "fairness": v * 14 * ag,
        "versions": (v - 1) * (5 if classifier else 2),
    }


def cardinality(
    texts: list[bytes], plans: list[ModelPlan], profiles: dict[str, dict]
) -> dict[str, Any]:
    """Series per model by group, averaged per kind of model, and the formula's check."""
    measured: dict[str, Counter] = {}
    exporter_self = []
    for text in texts:
        per_model = count_series(text)
        exporter_self.append(per_model.pop("(exporter)", Counter())["self"])
        measured.update(per_model)
    kinds: dict[str, list[ModelPlan]] = defaultdict(list)
    for plan in plans:
        kinds[f"{plan.task}, {len(plan.versions)} version(s)"].append(plan)
    mismatches = []
    for plan in plans:
        want = expected_series(plan, profiles[plan.name])
        got = {g: measured.get(plan.name, Counter())[g] for g in GROUP_NAMES}
        if any(want[g] != got[g] for g in GROUP_NAMES) or set(measured[plan.name]) - set(want):
            mismatches.append({"model": plan.name, "expected": want, "measured": got})
    totals = [sum(measured[p.name].values()) for p in plans]
    return {
        "total_model_series": sum(totals),
        "exporter_self_series": exporter_self,
        "per_model": {
            "median": median(totals),
            "mean": sum(totals) / len(totals),
            "min": min(totals),
            "max": max(totals),
        },
        "by_kind": {
            kind: {
                "models": len(ps),
                "groups": {g: sum(measured[p.name][g] for p in ps) / len(ps) for g in GROUP_NAMES},
                "total": sum(sum(measured[p.name].values()) for p in ps) / len(ps),
                "formula": sum(expected_series(ps[0], profiles[ps[0].name]).values()),
            }
            for kind, ps in sorted(kinds.items())
        },
        "formula_matches": len(plans) - len(mismatches),
        "formula_mismatches": mismatches[:10],
    }


# ================================================================== exporters


def start_exporters(configs: list[Path]) -> list[Exporter]:
    """The exporters, started side by side (each loads its models' baselines)."""
    with ThreadPoolExecutor(max_workers=len(configs)) as pool:
        futures = [pool.submit(Exporter, cfg) for cfg in configs]
    started = [f.result() for f in futures if f.exception() is None]
    if len(started) < len(configs):
        for e in started:
            e.stop()
        raise next(f.exception() for f in futures if f.exception() is not None)
    return started


def feed(exporters: list[Exporter], shares: list[list[ModelPlan]], rnd: Round) -> int:
    """The round on every exporter at once, one connection each."""
    with ThreadPoolExecutor(max_workers=len(exporters)) as pool:
        urls = [f"http://127.0.0.1:{e.port}" for e in exporters]
        return sum(pool.map(lambda u, ps: feed_exporter(u, ps, rnd), urls, shares))


# ================================================================== Prometheus


def prometheus_config(exporters: list[Exporter], rules: list[Path], scrape: float) -> dict:
    """The bundle's set-up on loopback; the scrape timeout is the whole interval (10 s by
    default), so a slow scrape is measured rather than cut off."""
    targets = [f"127.0.0.1:{e.port}" for e in exporters]
    cfg = stack.prometheus_config({"mlmon": targets}, rules, None, interval=f"{scrape:g}s")
    cfg["global"]["scrape_timeout"] = f"{scrape:g}s"
    return cfg


def prom_get(prom: str, path: str, **params: Any) -> Any:
    r = requests.get(f"{prom}{path}", params=params, timeout=300)
    body = r.json()
    if body.get("status") != "success":
        raise RuntimeError(f"{path} {params}: {body}")
    return body["data"]


def instant(prom: str, promql: str) -> list[dict]:
    return prom_get(prom, "/api/v1/query", query=promql)["result"]


def by_instance(prom: str, promql: str) -> dict[str, float]:
    return {r["metric"].get("instance", ""): float(r["value"][1]) for r in instant(prom, promql)}


def wait_for(check: Callable[[], bool], timeout: float, what: str, fatal: bool = True) -> bool:
    """Poll ``check``; at the deadline raise (``fatal``) or report and return False."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            if fatal:
                raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
            print(f"  gave up after {timeout:g} s waiting for {what}", flush=True)
            return False
        time.sleep(1.0)
    return True


def own_metrics(prom: str) -> dict[tuple[str, str], float]:
    """Prometheus' own /metrics: (name, rule group or '') -> value, for the few we keep."""
    from prometheus_client.parser import text_string_to_metric_families

    keep = (
        "prometheus_rule_group_last_duration_seconds",
        "prometheus_rule_group_last_evaluation_timestamp_seconds",
        "prometheus_rule_group_iterations_missed_total",
        "prometheus_rule_evaluation_failures_total",
        "prometheus_rule_group_rules",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "go_memstats_heap_inuse_bytes",
        "go_memstats_alloc_bytes",
        "prometheus_tsdb_head_series",
        "prometheus_tsdb_head_chunks",
    )
    text = requests.get(f"{prom}/metrics", timeout=60).text
    out: dict[tuple[str, str], float] = defaultdict(float)
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name in keep:
                group = s.labels.get("rule_group", "").rsplit(";", 1)[-1]
                out[(s.name, group)] += s.value
    return out


class Watch:
    """Polls Prometheus' own metrics: each rule group's evaluations (by their timestamp),
    and the peak of its resident memory."""

    def __init__(self, prom: str) -> None:
        self.prom = prom
        self.evaluations: dict[str, dict[float, float]] = defaultdict(dict)
        self.peak_rss = 0.0
        self.last: dict[tuple[str, str], float] = {}

    def poll(self) -> None:
        m = own_metrics(self.prom)
        for (name, group), ts in m.items():
            if name == "prometheus_rule_group_last_evaluation_timestamp_seconds" and ts > 0:
                duration = m[("prometheus_rule_group_last_duration_seconds", group)]
                self.evaluations[group][ts] = duration
        self.peak_rss = max(self.peak_rss, m[("process_resident_memory_bytes", "")])
        self.last = m

    def run(self, seconds: float, every: float = 3.0) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.poll()
            time.sleep(min(every, max(end - time.monotonic(), 0)))
        self.poll()

    def rule_groups(self, since: float) -> dict[str, Any]:
        """Median and max evaluation time of each group, of the evaluations since ``since``."""
        out = {}
        for group, evals in sorted(self.evaluations.items()):
            times = [evals[ts] for ts in sorted(evals) if ts >= since]
            out[group] = {
                "rules": int(self.last.get(("prometheus_rule_group_rules", group), 0)),
                "evaluations": len(times),
                "median_seconds": median(times),
                "max_seconds": max(times, default=math.nan),
                "iterations_missed": self.last.get(
                    ("prometheus_rule_group_iterations_missed_total", group), 0.0
                ),
            }
        return out


def rule_names_by_group() -> dict[str, str]:
    out = {}
    for f in sorted((ROOT / "prometheus/rules").glob("*.yml")):
        for group in yaml.safe_load(f.read_text())["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    out[rule["record"]] = group["name"]
    return out


def rule_series(prom: str, models: int) -> dict[str, Any]:
    """Series of each recording rule, one count per rule: one query over every rule's
    output at once outlives Prometheus' 2-minute query timeout at a thousand models."""
    by_name: Counter = Counter()
    groups: Counter = Counter()
    for name, group in rule_names_by_group().items():
        result = instant(prom, f"count({name})")
        by_name[name] = int(float(result[0]["value"][1])) if result else 0
        groups[group] += by_name[name]
    total = sum(by_name.values())
    return {
        "total": total,
        "per_model": total / models,
        "by_group": dict(sorted(groups.items())),
        "largest_records": dict(by_name.most_common(8)),
    }


def scrape_stats(prom: str, seconds: float) -> dict[str, dict[str, float]]:
    window = f"[{int(seconds)}s]"
    sel = 'scrape_duration_seconds{job="mlmon"}'
    parts = {
        "median_seconds": by_instance(prom, f"quantile_over_time(0.5, {sel}{window})"),
        "max_seconds": by_instance(prom, f"max_over_time({sel}{window})"),
        "scrapes": by_instance(prom, f"count_over_time({sel}{window})"),
        "up_min": by_instance(prom, f'min_over_time(up{{job="mlmon"}}{window})'),
        "samples": by_instance(prom, 'scrape_samples_scraped{job="mlmon"}'),
    }
    return {instance: {k: v[instance] for k, v in parts.items()} for instance in parts["scrapes"]}


# ================================================================== dashboards


def dashboard_queries(name: str, values: dict[str, str], rate_interval: str) -> list[dict]:
    """Every panel target of a dashboard with its variables substituted (as
    tests/test_dashboards.py does), and its variable queries as Grafana sends them."""
    d = json.loads((ROOT / "grafana/dashboards" / DASHBOARDS[name]).read_text())
    subst = {**values, "__rate_interval": rate_interval}

    def fill(expr: str) -> str:
        for var in sorted(set(re.findall(r"\$\{?(\w+)", expr)), key=len, reverse=True):
            expr = expr.replace(f"${{{var}}}", subst[var]).replace(f"${var}", subst[var])
        return expr

    out = []
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((.+), (\w+)\)", v["query"]["query"])
            assert m, v["query"]["query"]
            out.append(
                {
                    "title": f"variable ${v['name']}",
                    "kind": "label_values",
                    "label": m.group(2),
                    "expr": fill(m.group(1)),
                }
            )
    for p in d["panels"]:
        if p["type"] == "row":
            continue
        for t in p["targets"]:
            kind = "instant" if t.get("instant") else "range"
            out.append(
                {"title": f"{p['title']} [{t['refId']}]", "kind": kind, "expr": fill(t["expr"])}
            )
    return out


def run_query(prom: str, q: dict, now: float) -> tuple[float, int]:
    """One query as Grafana sends it: wall time in seconds and the series it returned."""
    start = now - DASHBOARD_RANGE_SECONDS
    t0 = time.perf_counter()
    if q["kind"] == "label_values":
        data = prom_get(
            prom,
            f"/api/v1/label/{q['label']}/values",
            **{"match[]": q["expr"], "start": start, "end": now},
        )
        n = len(data)
    elif q["kind"] == "instant":
        n = len(prom_get(prom, "/api/v1/query", query=q["expr"], time=now)["result"])
    else:
        step = DASHBOARD_STEP_SECONDS
        data = prom_get(
            prom,
            "/api/v1/query_range",
            query=q["expr"],
            start=start // step * step,
            end=now // step * step,
            step=step,
        )
        n = len(data["result"])
    return time.perf_counter() - t0, n


def time_dashboard(prom: str, queries: list[dict], runs: int) -> dict[str, Any]:
    """Each query ``runs`` times, in turn; a query Prometheus refuses (a timeout) is kept
    with its error and the time it took to fail."""
    times: dict[int, list[float]] = defaultdict(list)
    series: dict[int, int] = {}
    errors: dict[int, str] = {}
    for _ in range(runs):
        now = time.time()
        for i, q in enumerate(queries):
            t0 = time.perf_counter()
            try:
                t, series[i] = run_query(prom, q, now)
            except (RuntimeError, requests.RequestException) as e:
                t, series[i], errors[i] = time.perf_counter() - t0, 0, str(e)[-300:]
            times[i].append(t)
    rows = [
        {
            **q,
            "median_ms": round(median(times[i]) * 1e3, 1),
            "max_ms": round(max(times[i]) * 1e3, 1),
            "series": series[i],
            **({"error": errors[i]} if i in errors else {}),
        }
        for i, q in enumerate(queries)
    ]
    slowest = max(rows, key=lambda r: r["median_ms"])
    return {
        "queries": rows,
        "sum_of_medians_ms": round(sum(r["median_ms"] for r in rows), 1),
        "slowest": {k: slowest[k] for k in ("title", "kind", "median_ms")},
        "empty": [r["title"] for r in rows if r["series"] == 0],
        "errors": [r["title"] for r in rows if "error" in r],
    }


# ================================================================== the run


class Phases:
    """Wall time of each step of the run."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.t0 = time.monotonic()

    def done(self, name: str, since: float) -> None:
        self.seconds[name] = round(time.monotonic() - since, 1)
        print(f"  {name}: {self.seconds[name]:.1f} s", flush=True)


def scrape_exporters(exporters: list[Exporter], runs: int) -> tuple[list[dict], list[bytes]]:
    rows, texts = [], []
    for e in exporters:
        times, cpu, text = client_scrapes(e, runs)
        texts.append(text)
        rows.append(
            {
                "instance": f"127.0.0.1:{e.port}",
                "client_get_metrics_median_seconds": median(times),
                "client_get_metrics_max_seconds": max(times),
                "exporter_cpu_per_get_median_seconds": median(cpu),
                "render_seconds_mean": render_seconds_mean(text),
                "metrics_bytes": len(text),
                "rss_bytes_after_traffic": rss_bytes(e.proc.pid),
            }
        )
    return rows, texts


def rate_interval(scrape: float) -> str:
    return f"{int(max(DASHBOARD_STEP_SECONDS + scrape, 4 * scrape))}s"


def scraped_after(prom: str, t: float, targets: int) -> Callable[[], bool]:
    """Whether every target has been scraped successfully since ``t`` (a scrape's samples
    carry the time it started; timestamp() of anything but a selector is the query's time)."""
    up = 'up{job="mlmon"}'
    query = f"timestamp({up}) > {t} and {up} == 1"
    return lambda: len(instant(prom, query)) == targets


def send_traffic(
    args: argparse.Namespace,
    prom: str,
    exporters: list[Exporter],
    shares: list[list[ModelPlan]],
    phases: Phases,
) -> dict[str, Any]:
    """A small first round, then the main one with labels, each scraped before going on:
    the rules' increase() counts only what a series gained after Prometheus first saw it,
    and the drift records need min_samples (500) new values per version. A machine too busy
    to scrape every exporter in time is reported (and the run goes on), not hidden."""
    out: dict[str, Any] = {"events": 0, "scraped_after": {}}
    for rnd in (
        Round("warm-up", args.warmup_events, 0.0, 1_000_000),
        Round("main", args.events, args.label_share, 2_000_000),
    ):
        t = time.monotonic()
        out["events"] += feed(exporters, shares, rnd)
        check = scraped_after(prom, time.time(), len(exporters))
        what = f"every exporter's scrape after the {rnd.name} round"
        out["scraped_after"][rnd.name] = wait_for(check, 180, what, fatal=False)
        phases.done(f"traffic_{rnd.name}", t)
    return out


def watch_prometheus(
    args: argparse.Namespace, prom: str, exporters: list[Exporter], phases: Phases
) -> dict[str, Any]:
    """Prometheus with every series in place and no more traffic: scrapes, rule evaluations,
    CPU and memory over --duration seconds."""
    watch = Watch(prom)
    watch.poll()
    cpu0 = [e.cpu_seconds() for e in exporters]
    prom_cpu0 = watch.last[("process_cpu_seconds_total", "")]
    t, since = time.monotonic(), time.time()
    watch.run(args.duration)
    elapsed = time.monotonic() - t
    phases.done("prometheus_watch", t)
    m = watch.last
    return {
        "scrapes": scrape_stats(prom, elapsed),
        "exporter_cpu_share": [
            (e.cpu_seconds() - c) / elapsed for e, c in zip(exporters, cpu0, strict=True)
        ],
        "rule_groups": watch.rule_groups(since),
        "rule_evaluation_failures": m[("prometheus_rule_evaluation_failures_total", "")],
        "cpu_share": (m[("process_cpu_seconds_total", "")] - prom_cpu0) / elapsed,
        "rss_bytes": m[("process_resident_memory_bytes", "")],
        "rss_bytes_peak": watch.peak_rss,
        "go_heap_inuse_bytes": m[("go_memstats_heap_inuse_bytes", "")],
        "go_alloc_bytes": m[("go_memstats_alloc_bytes", "")],
        "head_series": m[("prometheus_tsdb_head_series", "")],
        "head_chunks": m[("prometheus_tsdb_head_chunks", "")],
    }


def tsdb_status(prom: str) -> dict[str, Any]:
    data = prom_get(prom, "/api/v1/status/tsdb")
    return {
        "head": data["headStats"],
        "largest_metrics": {x["name"]: x["value"] for x in data["seriesCountByMetricName"]},
    }


def query_dashboards(args: argparse.Namespace, prom: str, model: str) -> dict[str, Any]:
    interval = rate_interval(args.scrape_interval)
    values = {"job": ".+", "model": model, "version": ".+"}
    out = {
        name: time_dashboard(prom, dashboard_queries(name, values, interval), args.query_runs)
        for name in DASHBOARDS
    }
    out["model"]["model"] = model
    return out


def start_prometheus(args: argparse.Namespace, tmp: Path, exporters: list[Exporter]):
    rules = stack.overlay_rules(
        ROOT / "prometheus/rules", tmp / "rules", group_interval=f"{args.scrape_interval:g}s"
    )
    return stack.start_prometheus(
        prometheus_config(exporters, rules, args.scrape_interval), tmp / "prometheus"
    )


def attempt(what: str, step: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A step after the watch: its failure is reported, not fatal to what was measured."""
    try:
        return step()
    except Exception as e:
        print(f"  {what} failed: {e}", flush=True)
        return {"error": str(e)[-500:]}


def observe(
    args: argparse.Namespace,
    prom: str,
    exporters: list[Exporter],
    fleet: list[tuple[Path, list[ModelPlan]]],
    phases: Phases,
) -> dict[str, Any]:
    """Traffic, the exporters' own /metrics, then Prometheus watched and queried."""
    plans = [p for _, share in fleet for p in share]
    t = time.monotonic()
    wait_for(scraped_after(prom, 0, len(exporters)), 180, "every exporter's first scrape")
    phases.done("prometheus_first_scrapes", t)
    traffic = send_traffic(args, prom, exporters, [share for _, share in fleet], phases)
    t = time.monotonic()
    per_exporter, texts = scrape_exporters(exporters, args.scrape_runs)
    phases.done("client_scrapes", t)
    series = cardinality(texts, plans, profiles_of(fleet))
    prometheus = watch_prometheus(args, prom, exporters, phases)
    prometheus["tsdb"] = attempt("TSDB status", lambda: tsdb_status(prom))
    prometheus["rule_series"] = attempt("rule series", lambda: rule_series(prom, len(plans)))
    t = time.monotonic()
    model = next(p.name for p in plans if p.task == "binary" and len(p.versions) > 1)
    prometheus["dashboards"] = attempt("dashboards", lambda: query_dashboards(args, prom, model))
    prometheus["dashboard_rate_interval"] = rate_interval(args.scrape_interval)
    phases.done("dashboard_queries", t)
    after = own_metrics(prom)
    prometheus["rss_bytes_after_queries"] = after[("process_resident_memory_bytes", "")]
    for row, e, (_, share) in zip(per_exporter, exporters, fleet, strict=True):
        row["models"] = len(share)
        row["rss_bytes_end"] = rss_bytes(e.proc.pid)
    return {
        "events_sent": traffic["events"],
        "scraped_after_traffic": traffic["scraped_after"],
        "series": series,
        "per_exporter": per_exporter,
        "prometheus": prometheus,
    }


def profiles_of(fleet: list[tuple[Path, list[ModelPlan]]]) -> dict[str, dict]:
    from mlmon.core.baseline import load_profile

    out = {}
    for cfg, _ in fleet:
        for m in load_config(cfg).models:
            out[m.name] = load_profile(m.baseline)
    return out


def measure(args: argparse.Namespace, tmp: Path, plans: list[ModelPlan]) -> dict[str, Any]:
    phases = Phases()
    t = time.monotonic()
    fleet = write_fleet(tmp, plans, args.exporters, args.train_rows)
    phases.done("configs_and_baselines", t)
    t = time.monotonic()
    exporters = start_exporters([cfg for cfg, _ in fleet])
    phases.done("exporters_start", t)
    try:
        server = start_prometheus(args, tmp, exporters)
        try:
            out = observe(args, server.url, exporters, fleet, phases)
        finally:
            server.stop()
    finally:
        for e in exporters:
            e.stop()
    out["phases_seconds"] = {**phases.seconds, "total": round(time.monotonic() - phases.t0, 1)}
    return out


# ================================================================== the report


def _mib(x: float) -> str:
    return f"{x / 2**20:,.0f} MiB"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*out, ""]


def cardinality_tables(r: dict[str, Any]) -> list[str]:
    s = r["series"]
    rows = [
        [
            kind,
            k["models"],
            *(f"{k['groups'][g]:,.0f}" for g in GROUP_NAMES),
            f"{k['total']:,.0f}",
            f"{k['formula']:,}",
        ]
        for kind, k in s["by_kind"].items()
    ]
    return [
        f"Series per model by family group (exporters' /metrics; formula matches "
        f"{s['formula_matches']} of {r['models']} models exactly):",
        "",
        *_table(["model", "models", *GROUP_NAMES, "total", "formula"], rows),
    ]


def exporter_table(r: dict[str, Any]) -> list[str]:
    p = r["prometheus"]
    rows = []
    for e, cpu in zip(r["per_exporter"], p["exporter_cpu_share"], strict=True):
        sc = p["scrapes"][e["instance"]]
        rows.append(
            [
                e["instance"],
                e["models"],
                f"{sc['samples']:,.0f}",
                f"{e['client_get_metrics_median_seconds']:.2f} s",
                f"{e['exporter_cpu_per_get_median_seconds']:.2f} s",
                f"{e['render_seconds_mean']:.2f} s",
                f"{sc['median_seconds']:.2f} s / {sc['max_seconds']:.2f} s",
                f"{sc['up_min']:.0f}",
                f"{cpu * 100:.0f}%, {cpu * r['settings']['duration'] / sc['scrapes']:.1f} s",
                _mib(e["rss_bytes_after_traffic"]),
                _mib(e["rss_bytes_end"]),
            ]
        )
    return _table(
        [
            "exporter",
            "models",
            "series",
            "GET /metrics (client, median)",
            "its CPU (median)",
            "render (exporter's mean)",
            "scrape_duration_seconds median / max",
            "up (min)",
            "CPU while scraped: share, per scrape",
            "RSS after traffic",
            "RSS at end",
        ],
        rows,
    )


def prometheus_table(r: dict[str, Any]) -> list[str]:
    p = r["prometheus"]
    rs = p["rule_series"]
    rows = [
        [
            "head series",
            f"{p['head_series']:,.0f} ({r['series']['total_model_series']:,} "
            f"scraped per-model series, {rs['total']:,} recording-rule series, "
            f"{rs['per_model']:,.0f} per model)",
        ],
        [
            "resident memory (end of watch / peak / after queries)",
            f"{_mib(p['rss_bytes'])} / {_mib(p['rss_bytes_peak'])} / "
            f"{_mib(p['rss_bytes_after_queries'])}",
        ],
        [
            "Go heap in use / allocated",
            f"{_mib(p['go_heap_inuse_bytes'])} / {_mib(p['go_alloc_bytes'])}",
        ],
        ["CPU while watched", f"{p['cpu_share'] * 100:.0f}% of a core"],
        ["rule evaluation failures", f"{p['rule_evaluation_failures']:.0f}"],
    ]
    groups = [
        [
            g,
            v["rules"],
            f"{rs['by_group'].get(g, 0):,}",
            v["evaluations"],
            f"{v['median_seconds']:.2f} s",
            f"{v['max_seconds']:.2f} s",
            f"{v['iterations_missed']:.0f}",
        ]
        for g, v in p["rule_groups"].items()
    ]
    return [
        *_table(["Prometheus", "value"], rows),
        *_table(
            [
                "rule group",
                "rules",
                "output series",
                "evaluations",
                "median",
                "max",
                "missed iterations",
            ],
            groups,
        ),
    ]


def dashboard_table(r: dict[str, Any]) -> list[str]:
    rows = []
    for name, d in r["prometheus"]["dashboards"].items():
        q = d["queries"]
        by_kind = defaultdict(list)
        for x in q:
            by_kind[x["kind"]].append(x["median_ms"])
        rows.append(
            [
                name + (f" (model={d['model']})" if "model" in d else ""),
                len(q),
                f"{d['sum_of_medians_ms']:,.0f} ms",
                ", ".join(f"{k} {median(v):,.0f} ms" for k, v in sorted(by_kind.items())),
                f"{d['slowest']['title']}: {d['slowest']['median_ms']:,.0f} ms",
                len(d["empty"]),
                len(d["errors"]),
            ]
        )
    return _table(
        [
            "dashboard",
            "queries",
            "sum of medians",
            "median query by kind",
            "slowest (median)",
            "empty",
            "failed",
        ],
        rows,
    )


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"## Fleet: {r['models']:,} models x {r['features']} features on "
        f"{r['exporters']} exporters ({r['machine']}, {r['date']})",
        "",
        f"{r['events_sent']:,} events; scrape and evaluation every "
        f"{r['settings']['scrape_interval']:g} s, watched {r['settings']['duration']:g} s; "
        f"phases {r['phases_seconds']}; every exporter scraped after each traffic round: "
        f"{r['scraped_after_traffic']}.",
        "",
    ]
    for section in (cardinality_tables, exporter_table, prometheus_table, dashboard_table):
        try:
            lines += section(r)
        except (KeyError, TypeError) as e:  # a step that failed: its error is in the JSON
            lines += [f"({section.__name__}: no data, {e!r})", ""]
    return "\n".join(lines)


def git_state() -> dict[str, Any]:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout

    return {"commit": git("rev-parse", "HEAD").strip()}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--exporters", type=int, default=4)
    ap.add_argument("--features", type=int, default=20, help="per model, a fifth categorical")
    ap.add_argument("--events", type=int, default=600, help="predictions per model version")
    ap.add_argument("--warmup-events", type=int, default=50, help="per version, scraped first")
    ap.add_argument("--label-share", type=float, default=0.8)
    ap.add_argument("--train-rows", type=int, default=1000, help="rows behind each baseline")
    ap.add_argument("--duration", type=float, default=180.0, help="seconds Prometheus is watched")
    ap.add_argument("--scrape-interval", type=float, default=15.0, help="and rule evaluation")
    ap.add_argument("--scrape-runs", type=int, default=3, help="client GET /metrics per exporter")
    ap.add_argument("--query-runs", type=int, default=5, help="runs of every dashboard query")
    ap.add_argument("--json", help="default: bench/results/fleet-<models>.json")
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    plans = plan_models(args.models, args.features)
    result: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "git": git_state(),
        "models": args.models,
        "exporters": args.exporters,
        "features": args.features,
        "tasks": dict(Counter(p.task for p in plans)),
        "versions": dict(Counter(len(p.versions) for p in plans)),
        "settings": vars(args),
    }
    print(f"fleet: {args.models} models on {args.exporters} exporters", flush=True)
    with tempfile.TemporaryDirectory(prefix="mlmon-fleet-") as d:
        result.update(measure(args, Path(d), plans))
    result["prometheus_version"] = prometheus_version()
    path = Path(args.json or ROOT / f"bench/results/fleet-{args.models}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print("\n" + markdown(result))
    print(f"wrote {path}")
    return 0


def prometheus_version() -> str:
    out = subprocess.run(
        [stack.find_binary(stack.PROMETHEUS_BINARIES), "--version"],
        capture_output=True,
        text=True,
    )
    return (out.stdout or out.stderr).splitlines()[0]


if __name__ == "__main__":
    raise SystemExit(main())
