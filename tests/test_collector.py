"""The exposition: samples against the raw events, and the text against promtool and the
client's parser. Fresh registries only; samples are asserted, not text."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from helpers import FakeClock, require_binary
from mlmon.core.config import THRESHOLDS
from mlmon.demo import synthetic
from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

MODEL = "credit-risk"


@pytest.fixture()
def loaded(small_env):
    clock = FakeClock()
    mon, registry, _app = small_env.app(clock)
    events = synthetic.without_labels(synthetic.events(small_env.spec, 400, seed=21, version="v2"))
    for i, e in enumerate(events):
        e["latency_seconds"] = 0.002 * (i % 50)
    events[3]["features"]["age"] = None
    del events[4]["features"]["balance"]
    events[5]["features"]["age"] = 1e6  # out of range
    events[6]["prediction"] = 7  # a class the model does not have
    mon.models[MODEL].ingest(events)
    return mon, registry, events


def val(registry, name, **labels):
    return registry.get_sample_value(name, {"model": MODEL, **labels})


def test_feature_histograms_equal_the_raw_values(loaded, small_env):
    mon, registry, events = loaded
    schema = mon.models[MODEL].schema
    for feat in ("age", "balance"):
        values = np.array([e["features"].get(feat) for e in events], dtype=float)
        values = values[~np.isnan(values)]
        j = schema.numeric.names.index(feat)
        for le in schema.numeric.coarse_edges[j]:
            got = val(
                registry,
                "mlmon_feature_value_bucket",
                version="v2",
                feature=feat,
                le=repr(float(le)),
            )
            assert got == (values <= le).sum(), (feat, le)
        lab = {"version": "v2", "feature": feat}
        assert val(registry, "mlmon_feature_value_bucket", le="+Inf", **lab) == values.size
        assert val(registry, "mlmon_feature_value_count", **lab) == values.size
        assert val(registry, "mlmon_feature_value_sum", **lab) == pytest.approx(values.sum())
        assert val(registry, "mlmon_feature_missing_total", **lab) == 400 - values.size
    assert val(registry, "mlmon_feature_out_of_range_total", version="v2", feature="age") >= 1


def test_negative_edges_keep_sum_and_count(loaded, small_env):
    """balance has a negative first bucket: the client's helpers would drop _sum/_count."""
    mon, registry, _ = loaded
    schema = mon.models[MODEL].schema
    j = schema.numeric.names.index("balance")
    assert schema.numeric.coarse_edges[j][0] < 0
    lab = {"version": "v2", "feature": "balance"}
    assert val(registry, "mlmon_feature_value_sum", **lab) is not None
    assert val(registry, "mlmon_feature_value_sum", **lab) < 0
    assert val(registry, "mlmon_feature_value_count", **lab) == 399
    base = {"feature": "balance"}
    assert val(registry, "mlmon_feature_baseline_count", **base) == 5_000
    assert val(registry, "mlmon_feature_baseline_sum", **base) == pytest.approx(
        sum(e["features"]["balance"] for e in small_env.training)
    )


def test_baseline_histogram_uses_the_same_buckets(loaded, small_env):
    mon, registry, _ = loaded
    schema = mon.models[MODEL].schema
    ages = np.array([e["features"]["age"] for e in small_env.training])
    for le in schema.numeric.coarse_edges[0]:
        assert (
            val(registry, "mlmon_feature_baseline_bucket", feature="age", le=repr(float(le)))
            == (ages <= le).sum()
        )
    ratios = {
        c: val(registry, "mlmon_feature_baseline_category_ratio", feature="country", category=c)
        for c in ("DE", "FR", "ES", "__other__")
    }
    countries = [e["features"]["country"] for e in small_env.training]
    assert ratios["DE"] == pytest.approx(countries.count("DE") / len(countries))
    assert ratios["__other__"] == 0
    assert sum(ratios.values()) == pytest.approx(1.0)


def test_predictions_scores_and_service(loaded):
    mon, registry, events = loaded
    preds = [e["prediction"] for e in events]
    lab = {"version": "v2"}
    assert val(
        registry, "mlmon_prediction_class_total", version="v2", **{"class": "1"}
    ) == preds.count(1)
    assert (
        val(registry, "mlmon_prediction_class_total", version="v2", **{"class": "__other__"}) == 1
    )
    scores = np.array([e["scores"]["1"] for e in events])
    assert val(registry, "mlmon_prediction_score_count", **lab) == 400
    assert val(registry, "mlmon_prediction_score_bucket", le="0.5", **lab) == (scores <= 0.5).sum()
    assert val(registry, "mlmon_prediction_score_sum", **lab) == pytest.approx(scores.sum())
    lat = np.array([e["latency_seconds"] for e in events])
    assert (
        val(registry, "mlmon_inference_latency_seconds_bucket", le="0.025", **lab)
        == (lat <= 0.025).sum()
    )
    assert val(registry, "mlmon_inference_latency_seconds_sum", **lab) == pytest.approx(lat.sum())
    assert val(registry, "mlmon_inference_requests_total", **lab) == 400
    assert val(registry, "mlmon_window_events", **lab) == 400
    for key, (default, _) in THRESHOLDS.items():
        assert val(registry, f"mlmon_threshold_{key}") == default
    assert (
        val(
            registry,
            "mlmon_model_info",
            task="binary",
            baseline_hash=mon.models[MODEL].schema.baseline_hash,
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "mlmon_build_info",
            {
                "version": __import__("mlmon").__version__,
                "python_version": __import__("platform").python_version(),
            },
        )
        == 1
    )


def test_window_rotation_expires_counts_but_not_totals(small_env):
    clock = FakeClock()
    mon, registry, _ = small_env.app(clock)
    m = mon.models[MODEL]
    events = synthetic.without_labels(synthetic.events(small_env.spec, 300, seed=2))
    m.ingest(events[:100])
    clock.t += 1800  # half the window later
    m.ingest(events[100:])
    lab = {"version": "unversioned"}
    assert val(registry, "mlmon_window_events", **lab) == 300
    clock.t += 1800 + 60  # the first batch's slice has left the one-hour window
    assert val(registry, "mlmon_window_events", **lab) == 200
    assert val(registry, "mlmon_inference_requests_total", **lab) == 300
    stats = m.stats()["versions"]["unversioned"]
    assert stats["window_events"] == 200
    assert stats["features"]["age"]["present"] == 200
    clock.t += 7200
    assert val(registry, "mlmon_window_events", **lab) == 0
    assert val(registry, "mlmon_feature_value_count", feature="age", **lab) == 300


def test_exposition_passes_promtool_and_the_parser(loaded):
    promtool = require_binary("promtool")
    _mon, registry, _ = loaded
    text = generate_latest(registry)
    families = {f.name: f for f in text_string_to_metric_families(text.decode())}
    assert "mlmon_feature_value" in families and families["mlmon_feature_value"].type == "histogram"
    assert "mlmon_feature_drift_score" in families
    res = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True)
    assert res.returncode == 0 and res.stdout == b"" and res.stderr == b"", res.stdout + res.stderr


def _semantic(text: str) -> tuple[dict, dict]:
    """Families (type, help) and samples (value, NaN as a string) of exposition text."""
    import math

    from prometheus_client.parser import text_string_to_metric_families

    fams, samples = {}, {}
    for fam in text_string_to_metric_families(text):
        if fam.name.startswith("process_"):  # the process's own CPU and memory move
            continue
        fams[fam.name] = (fam.type, fam.documentation)
        if fam.name == "mlmon_scrape_render_seconds":  # each render adds its own time
            continue
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in samples, key
            samples[key] = "NaN" if math.isnan(s.value) else s.value
    return fams, samples


def test_the_fast_renderer_writes_what_the_client_library_writes(tmp_path):
    """Every family of a binary (versions, groups, labels), a multiclass and a regression
    model, with a proxy: the renderer's text parses to exactly the families, help texts,
    samples and values of prometheus_client's generate_latest on the same families."""
    import subprocess

    from helpers import require_binary
    from mlmon.capture.counters import ProxyStats
    from mlmon.cli import build_exposition
    from test_docs import loaded_monitors

    stats = ProxyStats()
    stats.request("kserve_v1", 200, 0.004)
    stats.count(stats.capture_failures, "malformed_json")
    total = 0
    for mon in loaded_monitors(tmp_path):
        registry, render = build_exposition(mon, stats)
        fast = render().decode()
        for _ in range(2):  # the second scrape comes from the label cache
            assert _semantic(render().decode()) == _semantic(fast)
        slow = generate_latest(registry).decode()
        assert _semantic(fast) == _semantic(slow)
        total += len(_semantic(fast)[1])
        out = subprocess.run(
            [require_binary("promtool"), "check", "metrics"], input=fast, capture_output=True,
            text=True,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
    assert total > 1_000


def test_renderer_escapes_and_formats_like_the_exposition_format():
    from mlmon.metrics.exposition import Family, Renderer, go_float
    from prometheus_client.utils import floatToGoString

    fam = Family("x_info", 'a "help" with \\ and\nnewline', "gauge", ["a"])
    for v in ["plain", 'quo"te', "back\\slash", "new\nline"]:
        fam.add_metric([v], 1.0)
    h = Family("h_seconds", "h", "histogram", ["m"])
    h.add(["m1"], [-1.5, 0.0, 2.5e-05, 1e6], [1, 2, 3, 4], 5, -0.5)
    c = Family("c", "c", "counter", [])
    c.add_metric([], 12345678.0)
    text = Renderer().render([fam, h, c]).decode()
    m = Metric("x_info", 'a "help" with \\ and\nnewline', "gauge")
    for v in ["plain", 'quo"te', "back\\slash", "new\nline"]:
        m.add_sample("x_info", {"a": v}, 1.0)
    assert _semantic(text)[1] == {
        **_semantic(generate_latest_of([m]))[1],
        **_semantic(generate_latest_of([h.to_metric()]))[1],
        **_semantic(generate_latest_of([c.to_metric()]))[1],
    }
    for v in (0.0, -0.0, 1.0, 1e-7, 123456.0, 1234567.0, 1e22, 2.5e-05, float("inf"),
              -float("inf"), float("nan"), 0.1 + 0.2):  # fmt: skip
        assert go_float(v) == floatToGoString(v)


def generate_latest_of(metrics) -> str:
    from prometheus_client import CollectorRegistry

    class Fixed:
        def collect(self):
            return metrics

    reg = CollectorRegistry(auto_describe=False)
    reg.register(Fixed())
    return generate_latest(reg).decode()


def test_every_render_is_timed_and_exported_by_the_next_scrape(tmp_path):
    from helpers import parse_metrics
    from mlmon.cli import build_exposition
    from test_docs import loaded_monitors

    mon = loaded_monitors(tmp_path)[0]
    _registry, render = build_exposition(mon)
    for n in range(4):
        samples = parse_metrics(render().decode())
        count = samples[("mlmon_scrape_render_seconds_count", ())]
        assert count == n  # the renders before this one
        assert samples[("mlmon_scrape_render_seconds_bucket", (("le", "+Inf"),))] == n
    total = samples[("mlmon_scrape_render_seconds_sum", ())]
    assert 0 < total < 10


def _plain_text(families) -> str:
    """Exposition text written the slow, obvious way: one `go_float` and one label
    escape per sample (the reference of the renderer's bulk paths, byte for byte)."""
    from mlmon.metrics.exposition import go_float, header

    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    out = []
    for fam in families:
        out.append(header(fam))
        for suffix, values, value in fam.samples:
            names = (*fam.labelnames, "le") if suffix == "_bucket" else fam.labelnames
            pairs = ",".join(f'{n}="{esc(str(v))}"' for n, v in zip(names, values, strict=True))
            labels = "{" + pairs + "}" if values else ""
            out.append(f"{fam.name}{suffix}{labels} {go_float(float(value))}\n")
    return "".join(out)


def _fresh(collector):
    from mlmon.metrics.families import Families

    families = Families()
    for unit in collector.units():
        unit.build(families)
    return [*collector._sidecar(), *families.all()]


def _without_render_times(text: str) -> str:
    return "".join(
        line + "\n" for line in text.splitlines() if "mlmon_scrape_render_seconds" not in line
    )


def test_cached_blocks_write_what_fresh_families_write_byte_for_byte(tmp_path):
    """Every model of every monitor: the cached text equals, byte for byte, the plain
    writing of families built afresh — at the first scrape, when nothing changed (every
    unit reused but the label join), and after one version changed (only that version,
    the version comparisons and the label join written again)."""
    from mlmon.metrics.collector import MlmonCollector
    from mlmon.metrics.exposition import Renderer
    from test_docs import loaded_monitors

    for mon in loaded_monitors(tmp_path):
        collector, renderer = MlmonCollector(mon), Renderer()
        models = len(mon.models)
        _check_blocks(collector, renderer)
        written = collector.blocks.written
        _check_blocks(collector, renderer)
        assert collector.blocks.written - written == models  # the label joins alone
        m = mon.models.get(MODEL)
        if m is not None and m.state.snapshot():
            rows = synthetic.events(synthetic.credit_spec(), 3, seed=9, version="v1")
            m.ingest(synthetic.without_labels(rows))
            written = collector.blocks.written
            _check_blocks(collector, renderer)
            assert collector.blocks.written - written == models + 2


def _check_blocks(collector, renderer) -> None:
    fast = _without_render_times(renderer.render(collector.families()).decode())
    assert fast == _without_render_times(_plain_text(_fresh(collector)))


def test_a_threshold_or_a_new_version_rewrites_what_shows_it(small_env):
    """Reused text never goes stale: a runtime threshold rewrites the blocks that show it,
    a new version gets its own block beside the unchanged one's."""
    from mlmon.metrics.collector import MlmonCollector
    from mlmon.metrics.exposition import Renderer

    mon = small_env.monitor(FakeClock())
    collector, renderer = MlmonCollector(mon), Renderer()
    m = mon.models[MODEL]
    events = synthetic.without_labels(synthetic.events(small_env.spec, 300, seed=2, version="a"))
    m.ingest(events)

    def scrape() -> dict:
        from helpers import parse_metrics

        text = renderer.render(collector.families()).decode()
        assert _without_render_times(text) == _without_render_times(_plain_text(_fresh(collector)))
        return parse_metrics(text)

    before = scrape()
    key = ("mlmon_threshold_drift_psi_min", (("model", MODEL),))
    mon.put_thresholds(MODEL, {"drift_psi_min": 0.123})
    after = scrape()
    assert before[key] != 0.123 and after[key] == 0.123
    for e in events:
        e["version"] = "b"
    m.ingest(events[:50])
    versions = {dict(k[1])["version"] for k in scrape() if k[0] == "mlmon_window_events"}
    assert versions == {"a", "b"}


def test_bulk_values_are_written_as_go_float_writes_each():
    """The renderer's bulk formatting (orjson for plain floats, integers, the rest one by
    one) against prometheus_client's floatToGoString per value, on the edges of every
    path and on a million random floats of every magnitude."""
    from mlmon.metrics.exposition import _format_values
    from prometheus_client.utils import floatToGoString

    edges = [0.0, -0.0, 1.0, -1.0, 0.1 + 0.2, 1e-4, 9.999e-05, -1e-4, 1e-7, 5e-324,
             999999.0, 999999.9999999999, 1e6, 1234567.0, 12345678.9, 1e10, 123456789012.0,
             9999999999999998.0, 1e16, 1e22, -1e6, -1234567.5, -1e16, 2.5e-05, 2**53,
             float("nan"), float("inf"), -float("inf"), 1.7976931348623157e308]  # fmt: skip
    rng = np.random.default_rng(7)
    mags = 10 ** rng.uniform(-12, 20, 1_000_000) * rng.choice([-1, 1], 1_000_000)
    ints = rng.integers(-(10**7), 10**7, 10_000).astype(float)
    for values in (edges, mags.tolist(), ints.tolist(), [3, 4, 5], [np.int64(7), 0.5]):
        got = _format_values(values)
        assert got == [floatToGoString(v) + "\n" for v in values]
    assert _format_values([]) == []


def test_families_with_escapes_specials_counters_and_histograms_match_the_client():
    """A family of each kind with label values that need escapes and every kind of value,
    written by the renderer and by the block cache: equal to generate_latest's samples and
    to the plain writer byte for byte."""
    from mlmon.metrics.blocks import BlockCache, Unit
    from mlmon.metrics.exposition import Family, Renderer

    def build(f):
        g = f.gauge("g", "a gauge", ["a", "b"])
        for i, v in enumerate([0.5, float("nan"), float("inf"), -float("inf"), 1e300, 3e-9,
                               -0.0, 7, 2**40, 1234567.0]):  # fmt: skip
            g.add_metric(['q"uo\\te', f"new\nline {i}"], v)
        c = f.counter("c", "a counter", ["k"])
        c.add_many([("é",), ("x",)], np.array([1.0, 2e7]))
        h = f.histogram("h_seconds", "a histogram", ["m"])
        h.add(["m1"], (-1.5, 0.0, 2.5e-05, 1e6), [1, 2, 3, 4], 5, -0.5)
        cum, counts, sums = np.array([[1, 3], [2, 2]]), np.array([4, 2]), np.array([1.5, 0.0])
        h.add_histograms([("m2",), ("m3",)], [(0.1, 1.0), (1.0,)], cum, counts, sums)

    from mlmon.metrics.families import Families

    families = Families()
    build(families)
    fams = list(families.all())
    plain = _plain_text(fams)
    assert Renderer().render(fams).decode() == plain
    cache = BlockCache()
    for _ in range(2):  # written, then reused
        blocks = cache.render([Unit("u", (1,), build)])
        assert Renderer().render(blocks).decode() == plain
    assert cache.written == 1
    assert _semantic(plain) == _semantic(generate_latest_of([f.to_metric() for f in fams]))
    # many histograms gathered at once hold what one `add` per histogram holds
    one_by_one = Family("h_seconds", "a histogram", "histogram", ["m"])
    one_by_one.add(["m1"], (-1.5, 0.0, 2.5e-05, 1e6), [1, 2, 3, 4], 5, -0.5)
    one_by_one.add(["m2"], (0.1, 1.0), [1, 3], 4, 1.5)
    one_by_one.add(["m3"], (1.0,), [2], 2, 0.0)
    assert fams[2].samples == one_by_one.samples


def _drift_features_one_by_one(m, view, mv):
    """`metrics.drift.features` the obvious way: one sample at a time from the report."""
    from mlmon.metrics.families import Families

    f = Families()
    r = view.report
    names = {
        "score": "mlmon_feature_drift_score",
        "p": "mlmon_feature_drift_p_value",
        "padj": "mlmon_feature_drift_adjusted_p_value",
    }
    fams = {k: f.gauge(n, "", [*MV_LABELS, "feature", "method"]) for k, n in names.items()}
    flag = f.gauge("mlmon_feature_drifted", "", [*MV_LABELS, "feature"])
    for method, arr in r.scores.items():
        for i, feat in enumerate(r.features):
            if r.reported[i] and not np.isnan(arr[i]):
                fams["score"].add_metric([*mv, feat, method], float(arr[i]))
    for i, feat in enumerate(r.features):
        if r.reported[i]:
            fams["p"].add_metric([*mv, feat, r.test[i]], float(r.p_value[i]))
            fams["padj"].add_metric([*mv, feat, r.test[i]], float(r.p_adjusted[i]))
    for i, feat in enumerate(r.features):
        if r.reported[i]:
            flag.add_metric([*mv, feat], float(r.drifted[i]))
    return {fam.name: fam.samples for fam in f.all()}


MV_LABELS = ["model", "version"]


def test_drift_features_from_shared_rows_equal_one_sample_at_a_time(small_env):
    """The drift families picked from shared label rows by masks hold exactly the samples
    of the report taken one by one: features not yet tested, methods that do not apply
    (NaN) and two versions that share the rows' cache."""
    from mlmon.metrics import drift
    from mlmon.metrics.families import Families

    mon = small_env.monitor(FakeClock())
    m = mon.models[MODEL]
    for version, n in (("a", 300), ("b", 40)):  # b: fewer than min_samples, nothing tested
        ev = synthetic.events(small_env.spec, n, seed=5, version=version)
        for e in ev[::7]:
            e["features"]["age"] = None
        m.ingest(synthetic.without_labels(ev))
    views = m.views()
    assert {v.snapshot.version for v in views} == {"a", "b"}
    tested = 0
    for _ in range(2):  # the second time from the cached rows
        for view in views:
            mv = [MODEL, view.snapshot.version]
            f = Families()
            drift.features(f, m, view, mv)
            got = {fam.name: fam.samples for fam in f.all()}
            assert got == _drift_features_one_by_one(m, view, mv)
            tested += len(got["mlmon_feature_drifted"])
    assert tested == 2 * len(views[0].report.features)  # a tested all, b none
    assert any(np.isnan(a).any() for a in views[0].report.scores.values())


def test_coarse_cumulative_gathers_what_the_schema_computes(small_env):
    """The collector's flat gather of cumulative counts at the coarse edges equals the
    schema's own `coarse_cumulative`, for live counts and for the baseline's."""
    from mlmon.metrics.families import coarse_cumulative

    m = small_env.monitor(FakeClock()).models[MODEL]
    num = m.schema.numeric
    rng = np.random.default_rng(3)
    for counts in (num.ref_counts, rng.integers(0, 50, num.ref_counts.shape)):
        for _ in range(2):  # built, then from the kept index
            got = coarse_cumulative(num, counts)
            assert got.shape == num.coarse_index.shape
            assert np.array_equal(got, num.coarse_cumulative(counts))
    score = m.schema.score
    counts = rng.integers(0, 9, (1, score.ref_counts.shape[-1]))
    assert np.array_equal(coarse_cumulative(score, counts), score.coarse_cumulative(counts))
