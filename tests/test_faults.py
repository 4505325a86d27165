"""Faults with real processes: the monitoring stack around the exporter goes away, the
exporter does not notice."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import Exporter, parse_metrics, require_binary, wait_until
from mlmon.demo import stack, synthetic
from mlmon.demo.sinks import SmtpSink, WebhookSink

ROOT = Path(__file__).resolve().parent.parent
MODEL = "credit-risk"

pytestmark = pytest.mark.integration


def test_prometheus_and_alertmanager_down_leave_the_exporter_unaffected(small_env, tmp_path):
    require_binary("prometheus")
    require_binary("prometheus-alertmanager")
    exporter = Exporter(small_env.config_path)
    hooks, smtp = WebhookSink(), SmtpSink()
    am = prom = None
    try:
        am = stack.start_alertmanager(
            stack.alertmanager_config(
                ROOT / "alertmanager/alertmanager.yml",
                tmp_path / "am",
                hooks.url + "/pager",
                hooks.url + "/chat",
                smtp.address,
            ),
            tmp_path / "am",
        )
        rules = stack.overlay_rules(ROOT / "prometheus/rules", tmp_path / "rules", "1s", "1s")
        prom = stack.start_prometheus(
            stack.prometheus_config(
                {"mlmon": [f"127.0.0.1:{exporter.port}"]}, rules, am.url.removeprefix("http://")
            ),
            tmp_path / "prom",
        )
        ev = synthetic.without_labels(synthetic.events(small_env.spec, 300, seed=5))
        assert exporter.post(MODEL, ev[:100]).status_code == 200
        wait_until(
            lambda: stack.query(prom.url, "mlmon_ingest_events_total > 0"),
            30,
            "Prometheus to scrape the exporter",
        )
        am.stop()
        prom.stop()
        am = prom = None
        assert exporter.post(MODEL, ev[100:]).status_code == 200
        samples = parse_metrics(exporter.get("/metrics").text)
        assert samples[("mlmon_ingest_events_total", (("model", MODEL),))] == 300
        assert exporter.get("/readyz").status_code == 200
        assert exporter.proc.poll() is None
    finally:
        for s in (prom, am):
            if s is not None:
                s.stop()
        exporter.stop()
        hooks.close()
        smtp.close()
