"""The whole chain on 127.0.0.1 with real processes: three exporters (two replicas of job
"mlmon" fed halves of a stream, one of job "mlmon-single" fed all of it), Prometheus with
the repository's rules (1 s scrape and evaluation, `for:` shortened to 1 s), Alertmanager
with the repository's routes and templates, and local webhook and SMTP receivers."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from helpers import Env, Exporter, parse_metrics, require_binary, wait_until
from mlmon.demo import stack, synthetic
from mlmon.demo.sinks import SmtpSink, WebhookSink

ROOT = Path(__file__).resolve().parent.parent
MODEL = "credit-risk"
VERSION = "v1"
# 8 of 20 features shifted by one standard deviation: each drifts (KS ~0.38), and 40% of
# the features is above the 30% dataset-drift limit.
SHIFTED = ("x01", "x03", "x05", "x07", "x09", "x11", "x13", "x15")
N_EVENTS = 5_000

pytestmark = pytest.mark.integration


@dataclass
class Stack:
    replicas: list[Exporter]
    single: Exporter
    prometheus: stack.Server
    alertmanager: stack.Server
    webhooks: WebhookSink
    smtp: SmtpSink
    stream: list[dict]

    def query(self, promql: str) -> list[dict]:
        return stack.query(self.prometheus.url, promql)

    def value(self, promql: str) -> float | None:
        res = self.query(promql)
        return float(res[0]["value"][1]) if len(res) == 1 else None


@pytest.fixture(scope="session")
def running_stack(wide_env: Env, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    tmp = tmp_path_factory.mktemp("stack")
    webhooks, smtp = WebhookSink(), SmtpSink()
    exporters: list[Exporter] = []
    servers: list[stack.Server] = []
    try:
        replicas = [Exporter(wide_env.config_path) for _ in range(2)]
        single = Exporter(wide_env.config_path)
        exporters = [*replicas, single]
        am_cfg = stack.alertmanager_config(
            ROOT / "alertmanager/alertmanager.yml",
            tmp / "am",
            pager_url=webhooks.url + "/pager",
            chat_url=webhooks.url + "/chat",
            smtp=smtp.address,
        )
        am = stack.start_alertmanager(am_cfg, tmp / "am")
        servers.append(am)
        rules = stack.overlay_rules(ROOT / "prometheus/rules", tmp / "rules", for_duration="1s")
        prom = stack.start_prometheus(
            stack.prometheus_config(
                {
                    "mlmon": [f"127.0.0.1:{e.port}" for e in replicas],
                    "mlmon-single": [f"127.0.0.1:{single.port}"],
                },
                rules,
                alertmanager=am.url.removeprefix("http://"),
            ),
            tmp / "prom",
        )
        servers.append(prom)
        st = Stack(replicas, single, prom, am, webhooks, smtp, [])

        # One event each first, so every series exists before the stream: increase() only
        # counts what arrives after a series' first sample.
        warm = synthetic.without_labels(
            synthetic.events(
                wide_env.spec, 2, seed=99, shift=dict.fromkeys(SHIFTED, 1.0), version=VERSION
            )
        )
        for exp, ev in zip(replicas, warm, strict=True):
            assert exp.post(MODEL, [ev]).status_code == 200
        # the single exporter gets both: the fleet and it see the same stream
        assert single.post(MODEL, warm).status_code == 200
        wait_until(
            lambda: len(st.query('mlmon_inference_requests_total{model="credit-risk"}')) == 3,
            40,
            "Prometheus to scrape all three exporters",
        )
        time.sleep(2)  # a couple more scrapes with the warm-up values

        stream = synthetic.without_labels(
            synthetic.events(
                wide_env.spec, N_EVENTS, seed=7, shift=dict.fromkeys(SHIFTED, 1.0), version=VERSION
            )
        )
        st.stream = warm + stream
        half = N_EVENTS // 2
        for i in range(0, N_EVENTS, 500):
            batch = stream[i : i + 500]
            assert single.post(MODEL, batch).status_code == 200
            target = replicas[0] if i < half else replicas[1]
            assert target.post(MODEL, batch).status_code == 200
        total = N_EVENTS + 2
        # every recorded total of both jobs has caught up with the whole stream
        for what, promql, n in (
            ("requests", "model_version:mlmon_inference_requests_total:sum", 2),
            (
                "feature values",
                'model_version_feature_le:mlmon_feature_value_bucket:sum{le=~"[+]Inf"}',
                36,
            ),
            (
                "categories",
                "sum without (category) "
                "(model_version_feature_category:mlmon_feature_category_total:sum)",
                4,
            ),
            (
                "classes",
                "sum without (class) (model_version_class:mlmon_prediction_class_total:sum)",
                2,
            ),
        ):
            wait_until(
                lambda q=promql, k=n: len(st.query(f"{q} == {total}")) == k,
                30,
                f"Prometheus to record the whole stream ({what})",
            )
        # and the windowed rules have seen it: the hour's increase stops growing
        wait_until(
            lambda: (
                len(
                    st.query(
                        "model_version_feature:mlmon_feature_value_count:increase1h >= "
                        f"{N_EVENTS - 2}"
                    )
                )
                == 36
            ),
            30,
            "the drift rules to see the whole stream",
        )
        yield st
    finally:
        for s in servers:
            s.stop()
        for e in exporters:
            e.stop()
        webhooks.close()
        smtp.close()


def test_fleet_counts_equal_one_exporter_fed_the_whole_stream(running_stack: Stack):
    st = running_stack
    single = parse_metrics(st.single.get("/metrics").text)
    checked = 0
    for rec, family in (
        ("model_version:mlmon_inference_requests_total:sum", "mlmon_inference_requests_total"),
        ("model_version_feature_le:mlmon_feature_value_bucket:sum", "mlmon_feature_value_bucket"),
        (
            "model_version_feature_category:mlmon_feature_category_total:sum",
            "mlmon_feature_category_total",
        ),
        ("model_version_class:mlmon_prediction_class_total:sum", "mlmon_prediction_class_total"),
    ):
        fleet = st.query(f'{rec}{{job="mlmon"}}')
        assert fleet, rec
        for s in fleet:
            labels = {k: v for k, v in s["metric"].items() if k not in ("__name__", "job")}
            # Prometheus may normalise `le` (3.x): compare bucket bounds as numbers
            expected = [
                v
                for (name, lab), v in single.items()
                if name == family and _same_labels(dict(lab), labels)
            ]
            assert len(expected) == 1, (rec, labels)
            assert float(s["value"][1]) == expected[0], (rec, labels)
            checked += 1
    families = {
        "mlmon_inference_requests_total",
        "mlmon_feature_value_bucket",
        "mlmon_feature_category_total",
        "mlmon_prediction_class_total",
    }
    assert checked == sum(1 for name, _ in single if name in families)  # every series


def _same_labels(a: dict[str, str], b: dict[str, str]) -> bool:
    if a.keys() != b.keys():
        return False
    return all(float(a[k]) == float(b[k]) if k == "le" else a[k] == b[k] for k in a)


def test_fleet_drift_agrees_with_the_exporter_within_binning_error(running_stack: Stack):
    st = running_stack
    single = parse_metrics(st.single.get("/metrics").text)
    stats = st.single.get(f"/v1/models/{MODEL}/stats").json()["versions"][VERSION]["features"]
    # the rules settle within an evaluation or two of the last scrape
    wait_until(
        lambda: (
            st.value('model_version:mlmon_drifted_features:ratio_increase1h{job="mlmon"}')
            == len(SHIFTED) / 20
        ),
        60,
        "the fleet's drifted share to settle at 8 of 20",
    )

    def ks_by_feature(selector: str) -> dict[str, float]:
        q = f"model_version_feature:mlmon_feature_drift_ks:increase1h{{{selector}}}"
        return {s["metric"]["feature"]: float(s["value"][1]) for s in st.query(q)}

    def both_settled() -> bool:
        # the single Prometheus evaluates its KS rule on its own schedule: wait until its
        # last evaluation has seen the whole stream too
        a, b = ks_by_feature(f'job="mlmon",model="{MODEL}"'), ks_by_feature('job="mlmon-single"')
        return a.keys() == b.keys() and all(abs(a[f] - b[f]) <= 0.002 for f in a)

    wait_until(both_settled, 30, "the single Prometheus's KS rule to see the whole stream")
    fleet = ks_by_feature(f'job="mlmon",model="{MODEL}"')
    single_rule = ks_by_feature('job="mlmon-single"')
    assert len(fleet) == 18  # the numeric features
    for feature, ks_rule in fleet.items():
        live = _buckets(single, "mlmon_feature_value_bucket", feature)
        base = _buckets(single, "mlmon_feature_baseline_bucket", feature)
        # KS on the histogram's own buckets, from the exporter's cumulative counts
        ks_coarse = max(abs(live[le] / live[np.inf] - base[le] / base[np.inf]) for le in live)
        # The exporter's KS runs on the finer percentile grid. Inside one coarse bucket both
        # CDFs rise by at most that bucket's mass, so the two KS values differ by at most
        # the largest bucket mass on either side: that is the binning error.
        bound = max(_largest_mass(live), _largest_mass(base))
        ks_exporter = stats[feature]["scores"]["ks"]
        assert abs(ks_rule - ks_exporter) <= bound + 0.002, feature
        # against the same buckets the rule is exact, but for the warm-up events that
        # increase() cannot see
        assert ks_rule == pytest.approx(ks_coarse, abs=0.002), (feature, _diagnose(st, feature))
        assert ks_rule == pytest.approx(single_rule[feature], abs=0.002), feature
    for feature in SHIFTED:
        assert fleet[feature] > 0.3 and stats[feature]["drifted"]
    for feature in set(fleet) - set(SHIFTED):
        assert fleet[feature] < 0.1 and not stats[feature]["drifted"]
    ratio = st.value('model_version:mlmon_drifted_features:ratio_increase1h{job="mlmon"}')
    assert ratio == pytest.approx(len(SHIFTED) / 20)


def _diagnose(st: Stack, feature: str) -> str:
    out = []
    for q in (
        f'model_version_feature_le:mlmon_feature_value_cdf:ratio_increase1h{{feature="{feature}"}}',
        f'increase(mlmon_feature_value_bucket{{feature="{feature}"}}[1h])',
        f'count_over_time(mlmon_feature_value_bucket{{feature="{feature}",le="+Inf"}}[1h])',
        f'mlmon_feature_value_bucket{{feature="{feature}"}}[1h]',
    ):
        out.append(q)
        out += [
            f"  {r['metric']} {r.get('value') or [v[1] for v in r['values']][:8]}"
            for r in st.query(q)
        ]
    return "\n".join(out)


def _buckets(samples: dict, family: str, feature: str) -> dict[float, float]:
    out = {}
    for (name, labels), v in samples.items():
        lab = dict(labels)
        if name == family and lab.get("feature") == feature:
            out[float(lab["le"])] = v
    return out


def _largest_mass(cumulative: dict[float, float]) -> float:
    edges = sorted(cumulative)
    counts = np.diff([0.0] + [cumulative[e] for e in edges])
    return float(counts.max() / cumulative[np.inf])


def _alerts(posts: list[dict], name: str) -> list[dict]:
    return [
        a
        for p in posts
        for a in p.get("alerts", [])
        if a["labels"].get("alertname") == name and a["status"] == "firing"
    ]


def test_drift_alerts_reach_the_receivers(running_stack: Stack):
    st = running_stack
    # critical: the dataset drift pages (webhook JSON with the bearer token from its file)
    paged = wait_until(
        lambda: [
            a
            for a in _alerts(st.webhooks.posts("/pager"), "MLModelDatasetDrift")
            if a["labels"]["job"] == "mlmon"
        ],
        60,
        "MLModelDatasetDrift of job mlmon at the pager webhook",
    )
    alert = paged[-1]
    assert alert["labels"] == {
        "alertname": "MLModelDatasetDrift",
        "job": "mlmon",
        "model": MODEL,
        "version": VERSION,
        "severity": "critical",
    }
    assert alert["annotations"]["description"] == (
        f"40% of the tested features of model {MODEL} version {VERSION} have drifted over the "
        "last hour; the limit is 30%."
    )
    assert alert["annotations"]["runbook_url"].endswith("runbook.md#mlmodeldatasetdrift")
    assert f"var-model={MODEL}" in alert["annotations"]["dashboard_url"]
    assert all(
        h.get("Authorization") == "Bearer local-pager-token" for h in st.webhooks.headers("/pager")
    )

    # warning: each drifted feature goes to chat (and email), with its feature and value
    def chat_features() -> set[str]:
        texts = [p.get("attachments", [{}])[0].get("text", "") for p in st.webhooks.posts("/chat")]
        found = set()
        for t in texts:
            found |= set(
                re.findall(
                    r"Feature (x\d\d) of model credit-risk version v1 has "
                    r"drifted over the last hour: ks = (?:0\.[3-4]\d\d), "
                    r"threshold 0\.100\.",
                    t,
                )
            )
        return found if found >= set(SHIFTED) else set()

    found = wait_until(chat_features, 60, "a chat message for every drifted feature")
    assert found == set(SHIFTED)
    chat = next(
        p
        for p in st.webhooks.posts("/chat")
        if "MLModelFeatureDrift" in p["attachments"][0]["title"]
    )
    attachment = chat["attachments"][0]
    assert chat["channel"] == "#ml-alerts"
    assert attachment["title"].startswith("[FIRING:")
    assert "mlmon-feature-drift" in attachment["title_link"]
    assert "|Runbook>" in attachment["text"]

    def mails() -> list:
        return [m for m in st.smtp.messages if "MLModelDatasetDrift" in m["Subject"]]

    mail = wait_until(mails, 60, "the dataset-drift email")[0]
    assert mail["Subject"].startswith("[FIRING:") and MODEL in mail["Subject"]
    body = mail.get_body(("html",)).get_content()
    assert (
        "Many of a model&#39;s input features have drifted at once." in body
        or "Many of a model's input features have drifted at once." in body
    )
    assert "runbook.md#mlmodeldatasetdrift" in body
    # no alert for features that did not move
    for a in _alerts(st.webhooks.posts("/chat"), "MLModelFeatureDrift"):
        assert a["labels"]["feature"] in SHIFTED
