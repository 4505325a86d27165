"""`mlmon report` over real processes: a real `mlmon serve` fed drifting, labelled traffic with
two versions and a sensitive attribute (one group is named like a script), a real Prometheus
running the repository's rules with 1 s intervals for about a minute, then the report
rendered by the real command and opened in headless Chromium.

Checked: no console message at all (the page has no script; Chromium's console log is shown
to catch an injected one), every section and its plots (SVG paths with data, red threshold
lines on drift plots), no external reference, the script-like group name escaped, and the
numbers against references outside the report: the events sent, the injected drift, the
baseline file, and Prometheus' own alerts API."""

from __future__ import annotations

import html.parser
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from helpers import Exporter, require_binary, wait_until
from mlmon.demo import runner as demo
from mlmon.demo import stack
from mlmon.report.limits import MAX_POINTS
from mlmon.report.sections.alerts import intervals
from mlmon.report.series import Series
from mlmon.report.span import make_span, parse_time

ROOT = Path(__file__).resolve().parent.parent
MODEL = demo.MODEL
SCRIPT_GROUP = "<script>console.error('x')</script>"  # a group name as a caller may send it
RATE = 300  # events per second
DRIFT_AFTER = 5.0  # seconds of healthy traffic first
DURATION = 60.0
LABEL_DELAY = 2.0
SECTIONS = ("service", "baseline", "drift", "performance", "fairness", "versions", "alerts")
CONSOLE = re.compile(r":CONSOLE[^\]]*\]\s*(.*)")


@dataclass
class Sent:
    """What the test sent: the reference the report's numbers are checked against."""

    requests: int = 0
    failures: int = 0
    latencies: list[float] = field(default_factory=list)
    labelled: int = 0
    correct: int = 0


def _events(tick: int, rng: np.random.Generator) -> tuple[list[dict], list[dict]]:
    """The demo's workload (versions v1 and v2, gender groups, 1% failures, drift of income
    and debt_ratio after DRIFT_AFTER seconds), one event in ten in the script-named group."""
    events, labels = demo.demo_events(tick, int(rng.poisson(RATE)), tick >= DRIFT_AFTER, rng)
    for e in events:
        if rng.random() < 0.1:
            e["groups"] = {"gender": SCRIPT_GROUP}
    return events, labels


def _send(exporter: Exporter, stop: threading.Event, sent: Sent) -> None:
    rng = np.random.default_rng(7)
    start = time.monotonic()
    pending: list[tuple[float, list[dict], dict]] = []
    tick = 0
    while not stop.is_set() and tick < DURATION:
        events, labels = _events(tick, rng)
        assert exporter.post(MODEL, events).status_code == 200
        sent.requests += len(events)
        sent.failures += sum(1 for e in events if "error" in e)
        sent.latencies += [e["latency_seconds"] for e in events]
        predicted = {e["id"]: e.get("prediction") for e in events}
        pending.append((tick + LABEL_DELAY, labels, predicted))
        for due in [p for p in pending if p[0] <= tick]:
            _send_labels(exporter, due[1], due[2], sent)
        pending = [p for p in pending if p[0] > tick]
        tick += 1
        stop.wait(max(0.0, start + tick - time.monotonic()))
    for _, labels, predicted in pending:
        _send_labels(exporter, labels, predicted, sent)


def _send_labels(exporter: Exporter, labels: list[dict], predicted: dict, sent: Sent) -> None:
    url = f"{exporter.url}/v1/models/{MODEL}/labels"
    assert exporter.session.post(url, json={"labels": labels}, timeout=30).status_code == 200
    sent.labelled += len(labels)
    sent.correct += sum(1 for x in labels if predicted[x["id"]] == x["label"])


@dataclass
class Stack:
    exporter: Exporter
    prometheus: stack.Server
    sent: Sent
    start: float
    end: float
    work: Path


@pytest.fixture(scope="module")
def report_stack(tmp_path_factory: pytest.TempPathFactory):
    require_binary("prometheus")
    require_binary("chromium")
    work = tmp_path_factory.mktemp("report")
    doc = yaml.safe_load((ROOT / "examples/mlmon.yml").read_text())
    doc["models"][0]["baseline"] = str(ROOT / "examples" / doc["models"][0]["baseline"])
    cfg = work / "mlmon.yml"
    cfg.write_text(yaml.safe_dump(doc))
    exporter = Exporter(cfg)
    prometheus = None
    try:
        rules = stack.overlay_rules(ROOT / "prometheus/rules", work / "rules", "1s", "1s")
        config = stack.prometheus_config({"mlmon": [f"127.0.0.1:{exporter.port}"]}, rules, None)
        prometheus = stack.start_prometheus(config, work / "prometheus")
        # the first scrape comes ~5 s after start: traffic begins once it has happened
        up = 'up{job="mlmon"} == 1'
        wait_until(lambda: stack.query(prometheus.url, up), 30, "the first scrape")
        start = time.time()
        sent, stop = Sent(), threading.Event()
        sender = threading.Thread(target=_send, args=(exporter, stop, sent))
        sender.start()
        sender.join(DURATION + 60)
        assert not sender.is_alive(), "the traffic did not finish"
        time.sleep(4)  # the last labels scraped and the rules evaluated on them
        yield Stack(exporter, prometheus, sent, start, time.time(), work)
    finally:
        if prometheus is not None:
            prometheus.stop()
        exporter.stop()


def _mlmon(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlmon", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def report(report_stack: Stack) -> Path:
    out = report_stack.work / "report.html"
    s = report_stack
    done = _mlmon("report", "--prometheus", s.prometheus.url, "--from", f"{s.start - 3:.0f}",
                  "--to", f"{s.end:.0f}", "--output", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}: 1 model(s)" in done.stdout
    return out


def _chromium(*args: str) -> subprocess.CompletedProcess:
    chromium = require_binary("chromium")
    return subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
         "--v=0", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def console_messages(page: Path) -> tuple[list[str], str]:
    """The console messages Chromium logged while loading ``page``, and its DOM."""
    done = _chromium("--dump-dom", page.resolve().as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    return CONSOLE.findall(done.stderr), done.stdout


class Elements(html.parser.HTMLParser):
    """Every start tag with its attributes, and the page's text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.style = ""
        self._in_style = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_style:
            self.style += data


# ------------------------------------------------------------------ the page in Chromium


def test_chromium_logs_no_console_message(report):
    messages, dom = console_messages(report)
    assert messages == []
    assert 'data-section="alerts"' in dom  # the page was loaded, not an error page


def test_console_check_catches_an_injected_script(report, tmp_path):
    """The check above would see a script: without the page's CSP, its console.error; with
    it, Chromium's report that it refused to run it."""
    text = report.read_text()
    injected = text.replace("</body>", "<script>console.error('x')</script></body>")
    without_csp = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", injected)
    (tmp_path / "csp.html").write_text(injected)
    (tmp_path / "plain.html").write_text(without_csp)
    messages, _ = console_messages(tmp_path / "plain.html")
    assert any(m.startswith('"x"') for m in messages), messages
    messages, _ = console_messages(tmp_path / "csp.html")
    assert any("Content Security Policy" in m for m in messages), messages


def test_screenshot(report, tmp_path):
    """A picture of the report's top (MLMON_REPORT_SCREENSHOT=path keeps a copy: that is
    how docs/images/report.png was made)."""
    png = tmp_path / "report.png"
    size = "--window-size=1280,1700"
    done = _chromium(f"--screenshot={png}", size, "--hide-scrollbars", report.resolve().as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    if os.environ.get("MLMON_REPORT_SCREENSHOT"):
        shutil.copy(png, os.environ["MLMON_REPORT_SCREENSHOT"])


# ------------------------------------------------------------------ structure and safety


def test_every_section_is_present_with_plots(report):
    page = Elements(report.read_text())
    sections = [a["data-section"] for t, a in page.tags if t == "section" and "data-section" in a]
    assert sections == [*SECTIONS, "alerts"]  # the model's, then alerts without a model
    text = report.read_text()
    for key in ("service", "drift", "performance", "fairness", "versions"):
        part = _section(text, key)
        paths = re.findall(r'<path class="series"[^>]* d="([^"]+)"', part)
        assert paths, f"{key}: no plotted series"
        assert max(p.count("L") for p in paths) > 20, f"{key}: no series with data"


def _section(text: str, key: str) -> str:
    return text.split(f'data-section="{key}"', 1)[1].split("</section>", 1)[0]


def test_drift_plots_have_red_threshold_lines(report):
    drift = _section(report.read_text(), "drift")
    figures = re.findall(r'<figure class="plot">.*?</figure>', drift, flags=re.S)
    assert len(figures) >= 7  # seven features and the outputs
    for f in figures:
        assert re.search(r'<path class="threshold" d="M[^"]+L[^"]+" [^>]*stroke="#d62728"', f), f


def test_no_external_reference(report):
    text = report.read_text()
    page = Elements(text)
    tags = {t for t, _ in page.tags}
    assert not tags & {"script", "link", "img", "iframe", "object", "embed", "audio", "video"}
    for tag, attrs in page.tags:
        for name, value in attrs.items():
            assert name not in ("src", "srcset", "action", "poster", "xlink:href"), (tag, name)
            if name == "href":
                assert value.startswith("#"), (tag, value)
    assert "url(" not in page.style and "@import" not in page.style and "@font-face" not in text
    assert "default-src 'none'" in text  # the CSP forbids loading anything at all


def test_a_script_in_a_label_value_is_escaped(report):
    text = report.read_text()
    assert "&lt;script&gt;console.error(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "<script" not in text
    page = Elements(text)
    assert not [t for t, _ in page.tags if t == "script"]
    fairness = Elements(_section(text, "fairness"))
    assert SCRIPT_GROUP in fairness.text  # shown as text in the table


# ------------------------------------------------------------------ numbers


def _cells(text: str, section: str) -> list[list[tuple[str, float | None]]]:
    """The rows of a section's tables: (text, data-value) per cell."""
    rows = []
    for row in re.findall(r"<tr>(.*?)</tr>", _section(text, section), flags=re.S):
        cells = re.findall(r'<td(?:[^>]*?data-value="([^"]*)")?[^>]*>(.*?)</td>', row)
        if cells:
            rows.append([(html.unescape(t), float(v) if v else None) for v, t in cells])
    return rows


def test_service_numbers_match_what_was_sent(report, report_stack):
    sent = report_stack.sent
    rows = {r[0][0]: r for r in _cells(report.read_text(), "service")}
    assert set(rows) == {"v1", "v2", "all versions"}
    total = rows["all versions"]
    requests_counted, failures, ratio, p99 = (c[1] for c in total[1:5])
    assert failures == pytest.approx(sent.failures, rel=0.08)
    # increase() misses what came before a replica's first sample and extrapolates the ends
    assert requests_counted == pytest.approx(sent.requests, rel=0.04)
    assert ratio == pytest.approx(sent.failures / sent.requests, abs=0.003)
    assert rows["v1"][1][1] + rows["v2"][1][1] == pytest.approx(requests_counted)
    # histogram_quantile interpolates within a bucket: the bucket of the true p99
    edges = _latency_buckets(report_stack.exporter)
    low, high = np.quantile(sent.latencies, [0.985, 0.995])
    bucket_low = max(e for e in [0.0, *edges] if e < low)
    bucket_high = min(e for e in edges if e >= high)
    assert bucket_low <= p99 <= bucket_high, (p99, low, high)


def _latency_buckets(exporter: Exporter) -> list[float]:
    text = exporter.get("/metrics").text
    found = re.findall(r'mlmon_inference_latency_seconds_bucket\{[^}]*le="([^"]+)"', text)
    return sorted({float(x) for x in found if x != "+Inf"})


def test_drift_table_flags_the_drifted_features(report):
    """income and debt_ratio moved by one standard deviation (KS about 0.38 once the hour is
    mostly drifted traffic); the other numeric features did not move."""
    rows = {(r[0][0], r[2][0]): r for r in _cells(report.read_text(), "drift")}
    for feature in ("income", "debt_ratio"):
        row = rows[(feature, "v1")]
        assert row[6][0] == "yes" and row[4][1] > 0.25 and row[5][1] == pytest.approx(0.1)
    for feature in ("age", "credit_lines", "months_employed"):
        row = rows[(feature, "v1")]
        assert row[4][1] < 0.05, row  # at the end: thousands of values, KS is noise


def test_performance_matches_the_labels_sent(report, report_stack):
    sent = report_stack.sent
    rows = _cells(report.read_text(), "performance")
    versions = {r[0][0]: r for r in rows}
    assert set(versions) == {"v1", "v2"}
    labels = report_stack.sent.labelled
    counted = sum(v[6][1] for v in versions.values())
    assert counted == pytest.approx(labels, rel=0.04)
    # the versions' accuracies, weighted by their labels, against the labels sent
    weighted = sum(v[1][1] * v[6][1] for v in versions.values()) / counted
    assert weighted == pytest.approx(sent.correct / sent.labelled, abs=0.02)
    plots = _section(report.read_text(), "performance")
    for name in ("last day", "3-day average", "7-day average"):
        assert f'data-series="{name}"' in plots, name


def test_fairness_and_versions_tables(report):
    text = report.read_text()
    groups = {(r[0][0], r[1][0], r[2][0]) for r in _cells(text, "fairness")}
    assert {("gender", g, "v1") for g in ("f", "m", SCRIPT_GROUP)} <= groups
    versions = _cells(text, "versions")
    assert [(r[0][0], r[1][0]) for r in versions] == [("v2", "v1")]


def test_baseline_identity_is_the_profiles(report):
    profile = json.loads((ROOT / "examples/baselines/credit-risk.json").read_text())
    [row] = _cells(report.read_text(), "baseline")
    assert row[0][0] == profile["hash"]
    assert row[2][1] == profile["rows"]
    built = datetime.fromisoformat(profile["created_at"].replace("Z", "+00:00"))
    assert row[1][0] == "binary" and row[6][0] == built.strftime("%Y-%m-%d %H:%M:%SZ")


def test_fired_alerts_match_prometheus_alerts_api(report, report_stack):
    active = requests.get(f"{report_stack.prometheus.url}/api/v1/alerts", timeout=10).json()
    drift = {
        a["labels"]["feature"]: a["activeAt"]
        for a in active["data"]["alerts"]
        if a["labels"]["alertname"] == "MLModelFeatureDrift" and a["labels"]["version"] == "v1"
    }
    assert {"income", "debt_ratio"} <= set(drift)
    rows = _cells(report.read_text(), "alerts")
    for feature in ("income", "debt_ratio"):
        mine = [r for r in rows if r[0][0] == "MLModelFeatureDrift"
                and f"feature={feature}," in r[2][0] and "version=v1" in r[2][0]]  # fmt: skip
        last = mine[-1]  # a failed scrape resolves every alert: the last interval is current
        assert last[4][0] == "still firing at the end"
        assert all(r[4][0] != "still firing at the end" for r in mine[:-1])
        fired = parse_time(last[3][0].replace(" ", "T").replace("Z", "+00:00"), 0)
        active_at = parse_time(drift[feature][:19] + "+00:00", 0)
        # firing one evaluation after it became active (for: 1s), read at the next step
        assert active_at + 1 <= fired <= active_at + 3, (last, drift[feature])


# ------------------------------------------------------------------ the command's errors


def test_unknown_model_and_unreachable_prometheus_are_errors(report_stack, tmp_path):
    s = report_stack
    out = tmp_path / "r.html"
    args = ["--from", f"{s.start:.0f}", "--to", f"{s.end:.0f}", "--output", str(out)]
    done = _mlmon("report", "--prometheus", s.prometheus.url, "--model", "nope", *args)
    assert done.returncode == 2 and f"models in the range: {MODEL}" in done.stderr
    done = _mlmon("report", "--prometheus", f"http://127.0.0.1:{stack.free_port()}", *args)
    assert done.returncode == 2 and "cannot reach Prometheus" in done.stderr
    assert not out.exists()


# ------------------------------------------------------------------ pure parts


def test_the_step_keeps_every_series_within_the_point_limit():
    for seconds in (60, 3_600, 86_400 * 7, 86_400 * 400):
        span = make_span(1_000.0, 1_000.0 + seconds)
        assert span.points <= MAX_POINTS + 1 and span.step >= 1
        asked = make_span(1_000.0, 1_000.0 + seconds, step=1.0)
        assert asked.points <= MAX_POINTS + 1
        assert asked.step_raised == (seconds > MAX_POINTS)
    assert parse_time("now-1h", 10_000.0) == 6_400.0
    assert parse_time("2026-01-01", 0) == parse_time("2026-01-01T00:00:00Z", 0)


def test_alert_intervals_from_firing_steps():
    span = make_span(0.0, 100.0, step=10.0)
    points = tuple((t, 1.0) for t in (0.0, 10.0, 20.0, 50.0, 60.0, 90.0, 100.0))
    firings = intervals([Series({"alertname": "A"}, points)], span)
    assert [(f.fired, f.resolved, f.since_start) for f in firings] == [
        (0.0, 30.0, True),  # already firing at the start; not firing at 30
        (50.0, 70.0, False),
        (90.0, None, False),  # still firing at the end
    ]
