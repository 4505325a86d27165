"""The Python client against a real exporter: batches arrive, a missing sidecar costs the
model nothing but buffered (and, past the bound, dropped and counted) events, which arrive
when the sidecar returns."""

from __future__ import annotations

import pytest
from helpers import Exporter, free_port, parse_metrics, wait_until
from mlmon.capture.client import Client
from mlmon.demo import synthetic

pytestmark = pytest.mark.integration
MODEL = "credit-risk"


def _accepted(exporter: Exporter) -> float:
    samples = parse_metrics(exporter.get("/metrics").text)
    return samples[("mlmon_ingest_events_total", (("model", MODEL),))]


def test_events_and_labels_arrive_in_batches(small_env):
    exporter = Exporter(small_env.config_path)
    client = Client(exporter.url, model=MODEL, batch_size=100, flush_interval=0.05)
    try:
        rows = synthetic.events(small_env.spec, 1_000, seed=3, id_prefix="c")
        for r in rows:
            assert client.log(
                r["features"],
                r["prediction"],
                id=r["id"],
                scores=r["scores"],
                latency_seconds=0.01,
                version="v1",
            )
        assert client.flush(20)
        for r in rows[:400]:
            client.label(r["id"], r["label"])
        assert client.flush(20)
        assert client.sent == 1_400 and client.dropped == 0 and client.rejected == 0
        assert _accepted(exporter) == 1_000
        stats = exporter.get(f"/v1/models/{MODEL}/stats").json()
        assert stats["labels"]["matched"] == 400
        # an invalid event is refused by the sidecar, counted, and not retried for ever
        assert client.log({"age": "not a number"}, 1)
        assert client.flush(20)
        assert client.rejected == 1
    finally:
        client.close()
        exporter.stop()


def test_sidecar_down_buffers_to_the_bound_then_delivers(small_env):
    port = free_port()
    client = Client(
        f"http://127.0.0.1:{port}",
        model=MODEL,
        max_buffer=500,
        batch_size=100,
        flush_interval=0.05,
        max_backoff=0.2,
    )
    exporter = None
    try:
        rows = synthetic.events(small_env.spec, 2_000, seed=4)
        accepted = sum(client.log(r["features"], r["prediction"]) for r in rows)
        # the model's calls all returned; what did not fit was dropped and counted
        assert accepted + client.dropped == 2_000
        # the bound holds exactly, whether or not a send is in flight
        assert accepted == 500 and client.dropped == 1_500
        wait_until(lambda: client.failures > 0, 10, "a failed attempt to reach the sidecar")
        exporter = Exporter(small_env.config_path, listen=f"127.0.0.1:{port}")
        assert client.flush(30)
        buffered = 2_000 - client.dropped
        wait_until(lambda: _accepted(exporter) == buffered, 20, "the buffered events")
        assert client.sent == buffered
    finally:
        client.close()
        if exporter is not None:
            exporter.stop()


def test_the_client_sends_the_ingest_token(small_env, tmp_path, monkeypatch):
    """With an ingest token configured, a client without it is refused (counted, not
    retried); with it -- given, from a file or from MLMON_INGEST_TOKEN -- events arrive."""
    token = "client-ingest-token"
    exporter = Exporter(small_env.config_path, env={"MLMON_INGEST_TOKEN": token})
    (tmp_path / "token").write_text(token + "\n")
    rows = synthetic.events(small_env.spec, 30, seed=5)
    try:
        monkeypatch.delenv("MLMON_INGEST_TOKEN", raising=False)
        anonymous = Client(exporter.url, model=MODEL, flush_interval=0.05)
        assert anonymous.log(rows[0]["features"], rows[0]["prediction"])
        assert anonymous.flush(20) and anonymous.rejected == 1 and anonymous.sent == 0
        monkeypatch.setenv("MLMON_INGEST_TOKEN", token)
        clients = [
            Client(exporter.url, model=MODEL, flush_interval=0.05, token=token),
            Client(exporter.url, model=MODEL, flush_interval=0.05, token_file=tmp_path / "token"),
            Client(exporter.url, model=MODEL, flush_interval=0.05),  # from the environment
        ]
        for c, part in zip(clients, (rows[:10], rows[10:20], rows[20:]), strict=True):
            for r in part:
                c.log(r["features"], r["prediction"])
            assert c.flush(20) and c.sent == 10 and c.rejected == 0
        assert _accepted(exporter) == 30
        with pytest.raises(ValueError, match="empty"):
            Client(exporter.url, model=MODEL, token="  ")
    finally:
        for c in [anonymous, *locals().get("clients", [])]:
            c.close()
        exporter.stop()
