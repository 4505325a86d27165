"""The store a fleet of replicas shares, with real processes on 127.0.0.1: a real
`redis-server` (Debian's package) in a temp dir, three `mlmon serve` replicas of one model
sharing it, and a fourth exporter without a store fed every event (what one replica would
count). Predictions and labels go round-robin, each label to a replica that did not see
its prediction; every label must match, and the fleet's counters, summed by a real
Prometheus, must equal the single exporter's. Then Redis dies mid-stream: ingest goes on,
labels get 503 with Retry-After, errors are counted; Redis comes back (with its
append-only file) and the refused labels, sent again, match. Runtime thresholds set on one
replica reach the others, survive restarts and go on DELETE.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import redis
import requests
import yaml
from helpers import Exporter, free_port, make_env, parse_metrics, require_binary, wait_until
from mlmon.demo import stack, synthetic

MODEL = "credit-risk"
REPLICAS = 3
GROUPS = ("f", "m", "x")
ADMIN = "admin-fleet-token"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


@dataclass
class RedisServer:
    """A redis-server on 127.0.0.1 in ``directory``; ``kill`` and ``start`` again keep the
    port and, with the append-only file, the data."""

    directory: Path
    port: int
    password: str | None = None
    tls: bool = False  # rediss:// only, with a certificate for 127.0.0.1 (ca.pem)
    proc: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        args = [require_binary("redis-server"), "--bind", "127.0.0.1"]
        if self.tls:
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            args += ["--tls-cert-file", str(self._certificate()), "--tls-key-file"]
            args += [str(self.directory / "key.pem"), "--tls-ca-cert-file", str(self.ca)]
        else:
            args += ["--port", str(self.port)]
        args += ["--dir", str(self.directory), "--save", "", "--protected-mode", "no"]
        args += ["--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        log = (self.directory / "redis.log").open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: self.client().ping(), 10, "redis-server to answer")
        return self

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    def _certificate(self) -> Path:
        """A self-signed certificate for 127.0.0.1, which is also the clients' CA."""
        if not self.ca.exists():
            key, name = str(self.directory / "key.pem"), "subjectAltName=IP:127.0.0.1"
            argv = [require_binary("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes"]
            argv += ["-keyout", key, "-out", str(self.ca), "-days", "1", "-subj", "/CN=127.0.0.1"]
            subprocess.run([*argv, "-addext", name], check=True, capture_output=True)
        return self.ca

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(
            self.url, password=self.password, **({"ssl_ca_certs": str(self.ca)} if self.tls else {})
        )

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture()
def redis_server(tmp_path):
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory, free_port()).start()
    yield server
    server.stop()


@pytest.fixture()
def fleet_env(tmp_path):
    spec = synthetic.TableSpec(
        numeric={"age": (40.0, 10.0), "balance": (-200.0, 500.0)},
        categorical={"country": {"DE": 0.5, "FR": 0.3, "ES": 0.2}},
        weights={"age": 0.05},
        intercept=-2.0,
    )
    return make_env(
        tmp_path,
        spec,
        n_train=5_000,
        model_extra={"sensitive_attributes": ["gender"], "drift": {"min_samples": 100}},
    )


def _config(env, tmp_path: Path, store: dict | None, name: str) -> Path:
    doc = yaml.safe_load(env.config_path.read_text())
    doc["models"][0]["baseline"] = str(env.config.models[0].baseline)
    if store is not None:
        doc["store"] = store
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _events(env, n: int, seed: int, prefix: str) -> tuple[list[dict], dict[str, int]]:
    """Events with ids, versions and groups, and their labels by id."""
    rng = np.random.default_rng(seed)
    rows = synthetic.events(env.spec, n, seed=seed, id_prefix=prefix)
    labels = {}
    for r in rows:
        labels[r["id"]] = r.pop("label")
        r["version"] = "v2" if rng.random() < 0.3 else "v1"
        r["groups"] = {"gender": str(rng.choice(GROUPS))}
    return rows, labels


def _post(exporter: Exporter, endpoint: str, body: dict) -> requests.Response:
    return exporter.session.post(
        f"{exporter.url}/v1/models/{MODEL}/{endpoint}", json=body, timeout=5
    )


def _sum(exporters: list[Exporter], name: str) -> dict[tuple, float]:
    """Every series of ``name`` summed over the exporters."""
    out: dict[tuple, float] = {}
    for e in exporters:
        for (metric, labels), v in parse_metrics(e.get("/metrics").text).items():
            if metric == name:
                out[labels] = out.get(labels, 0.0) + v
    return out


def _metric(exporter: Exporter, name: str, labels: tuple = ()) -> float:
    return parse_metrics(exporter.get("/metrics").text).get((name, labels), 0.0)


FLEET_FAMILIES = (
    "mlmon_labelled_predictions_total",
    "mlmon_correct_predictions_total",
    "mlmon_classification_outcomes_total",
    "mlmon_group_predictions_total",
    "mlmon_group_outcomes_total",
    "mlmon_labels_total",
)


@pytest.mark.integration
def test_labels_join_across_replicas_and_the_fleet_counts_like_one_exporter(
    fleet_env, redis_server, tmp_path
):
    fleet_cfg = _config(fleet_env, tmp_path, {"url": "redis://127.0.0.1:1/0"}, "fleet")
    single_cfg = _config(fleet_env, tmp_path, None, "single")
    # MLMON_STORE_URL overrides the config's (unreachable) url
    fleet = [
        Exporter(fleet_cfg, env={"MLMON_STORE_URL": redis_server.url}) for _ in range(REPLICAS)
    ]
    single = Exporter(single_cfg)
    prom = None
    try:
        rows, labels = _events(fleet_env, 1_200, seed=5, prefix="p-")
        used_before = redis_server.client().info("memory")["used_memory"]
        batches = [rows[i : i + 40] for i in range(0, len(rows), 40)]
        for b, batch in enumerate(batches):
            assert _post(fleet[b % REPLICAS], "predictions", {"events": batch}).status_code == 200
            assert _post(single, "predictions", {"events": batch}).status_code == 200
        wait_until(
            lambda: (
                sum(_metric(e, "mlmon_store_written_records_total") for e in fleet) == len(rows)
            ),
            20,
            "every join record to be written",
        )
        # Redis memory per waiting record: key, value (about 70 bytes of JSON), overhead
        per_record = (redis_server.client().info("memory")["used_memory"] - used_before) / len(rows)
        print(f"store memory per waiting join record: {per_record:.0f} bytes")
        assert 50 < per_record < 400
        outcomes = {"matched": 0, "unmatched": 0, "expired": 0, "duplicate": 0}
        for b, batch in enumerate(batches):  # each label to a replica that did not see it
            body = {"labels": [{"id": r["id"], "label": labels[r["id"]]} for r in batch]}
            answer = _post(fleet[(b + 1) % REPLICAS], "labels", body).json()
            for k in outcomes:
                outcomes[k] += answer[k]
            assert _post(single, "labels", body).json()["matched"] == len(batch)
        assert outcomes == {"matched": len(rows), "unmatched": 0, "expired": 0, "duplicate": 0}

        # a label sent twice, to yet another replica, is a duplicate and changes nothing
        again = {"labels": [{"id": r["id"], "label": labels[r["id"]]} for r in batches[0]]}
        assert _post(fleet[2], "labels", again).json()["duplicate"] == len(batches[0])
        assert _post(single, "labels", again).json()["duplicate"] == len(batches[0])

        for family in FLEET_FAMILIES:  # exact, series by series
            fleet_sum, one = _sum(fleet, family), _sum([single], family)
            assert one and fleet_sum == one, family
        prom = _prometheus(tmp_path, fleet, single)
        _fleet_accuracy_equals_single(prom, len(rows))
        # once labelled, a record keeps its value behind a 17-byte marker until its
        # time-to-live ends
        taken = _memory_per_record(redis_server, len(rows))
        print(f"store memory per labelled (taken) record: {taken:.0f} bytes")
        assert 0 < taken < per_record + 64
    finally:
        for e in [*fleet, single]:
            e.stop()
        if prom is not None:
            prom.stop()


def _prometheus(tmp_path: Path, fleet: list[Exporter], single: Exporter):
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "fleet",
                "static_configs": [{"targets": [f"127.0.0.1:{e.port}" for e in fleet]}],
            },
            {"job_name": "single", "static_configs": [{"targets": [f"127.0.0.1:{single.port}"]}]},
        ],
    }
    return stack.start_prometheus(config, tmp_path / "prometheus")


def _fleet_accuracy_equals_single(prom, n: int) -> None:
    """Accuracy per version from the counters Prometheus summed over the replicas equals
    the single exporter's, once both jobs' scrapes hold all ``n`` labelled predictions."""

    def by_job(family: str) -> dict[tuple[str, str], float]:
        promql = f'sum by (job, version) ({family}{{model="{MODEL}"}})'
        return {
            (s["metric"]["job"], s["metric"]["version"]): float(s["value"][1])
            for s in stack.query(prom.url, promql)
        }

    def scraped() -> tuple[dict, dict] | None:
        labelled = by_job("mlmon_labelled_predictions_total")
        totals = [
            sum(v for (job, _), v in labelled.items() if job == j) for j in ("fleet", "single")
        ]
        if totals != [n, n]:
            return None
        return by_job("mlmon_correct_predictions_total"), labelled

    correct, labelled = wait_until(scraped, 30, "Prometheus to scrape every labelled prediction")
    for version in ("v1", "v2"):
        fleet = correct[("fleet", version)] / labelled[("fleet", version)]
        single = correct[("single", version)] / labelled[("single", version)]
        assert fleet == single and 0.5 < single < 1.0


def _memory_per_record(server: RedisServer, n: int) -> float:
    """Bytes of Redis memory per join record: the used memory with the ``n`` records, less
    the memory once they are deleted."""
    client = server.client()
    used = client.info("memory")["used_memory"]
    keys = list(client.scan_iter(match=f"mlmon:join:{{{MODEL}}}:*", count=1000))
    assert len(keys) == n
    client.delete(*keys)
    return (used - client.info("memory")["used_memory"]) / n


def _labels_body(batch: list[dict], labels: dict[str, int]) -> dict:
    return {"labels": [{"id": r["id"], "label": labels[r["id"]]} for r in batch]}


@pytest.mark.integration
def test_redis_dies_mid_stream_and_the_fleet_recovers(fleet_env, redis_server, tmp_path):
    """Records made while Redis is down wait in each replica's queue (1,000 at most here:
    the rest are dropped and counted) and are written when it returns."""
    store = {"url": redis_server.url, "timeout": "500ms", "queue_size": 1000}
    fleet = [Exporter(_config(fleet_env, tmp_path, store, "fleet")) for _ in range(2)]
    try:
        rows, labels = _events(fleet_env, 1_400, seed=7, prefix="k-")
        first, second = rows[:200], rows[200:]
        for i in range(0, 200, 50):
            assert _post(fleet[i // 50 % 2], "predictions", {"events": first[i : i + 50]}).ok
        wait_until(
            lambda: sum(_metric(e, "mlmon_store_written_records_total") for e in fleet) == 200,
            20,
            "the first records to be written",
        )
        redis_server.kill()
        # ingest goes on, answered within the client's 5 s timeout: 1,200 records for
        # replica 0's queue of 1,000
        for i in range(0, 1200, 100):
            assert _post(fleet[0], "predictions", {"events": second[i : i + 100]}).ok
        refused = _post(fleet[1], "labels", _labels_body(first, labels))
        assert refused.status_code == 503
        assert refused.json()["reason"] == "store_unavailable"
        assert int(refused.headers["Retry-After"]) >= 1
        down = parse_metrics(fleet[0].get("/metrics").text)
        assert down[("mlmon_store_queued_records", ())] == 1000
        assert down[("mlmon_store_dropped_records_total", (("reason", "queue_full"),))] == 200
        down = parse_metrics(fleet[1].get("/metrics").text)
        assert down[("mlmon_store_up", ())] == 0
        assert down[("mlmon_store_errors_total", (("op", "take"),))] >= 1
        rejected = ("endpoint", "labels"), ("reason", "store_unavailable")
        assert down[("mlmon_ingest_rejected_requests_total", rejected)] == 1
        version = ("model", MODEL), ("version", "v1")
        assert down[("mlmon_labelled_predictions_total", version)] == 0
        assert all(e.proc.poll() is None for e in fleet)

        redis_server.start()  # the append-only file brings the first records back
        wait_until(
            lambda: (
                _metric(fleet[0], "mlmon_store_queued_records") == 0
                and all(_metric(e, "mlmon_store_up") == 1 for e in fleet)
            ),
            20,
            "the fleet to see the store again and write its queue",
        )
        # the refused labels, sent again (to the other replica), lose nothing
        answer = _post(fleet[0], "labels", _labels_body(first, labels)).json()
        assert (answer["matched"], answer["unmatched"]) == (200, 0)
        # the queued predictions join; the 200 dropped ones are unmatched, as counted
        answer = _post(fleet[1], "labels", _labels_body(second, labels)).json()
        assert (answer["matched"], answer["unmatched"]) == (1000, 200)
        labelled = _sum(fleet, "mlmon_labelled_predictions_total")
        assert sum(labelled.values()) == 1200
    finally:
        for e in fleet:
            e.stop()


@pytest.mark.integration
def test_runtime_thresholds_reach_every_replica_through_the_store(fleet_env, tmp_path):
    """Over TLS (rediss://, a private CA) with a password from a file."""
    directory = tmp_path / "redis"
    directory.mkdir()
    password = "s3cret-fleet"
    server = RedisServer(directory, free_port(), password=password, tls=True).start()
    (tmp_path / "store-password").write_text(password + "\n")
    store = {"url": server.url, "password_file": "store-password", "ca_file": str(server.ca)}
    cfg = _config(fleet_env, tmp_path, store, "fleet")
    env = {"MLMON_ADMIN_TOKEN": ADMIN}
    fleet = [Exporter(cfg, env=env) for _ in range(REPLICAS)]
    name = "mlmon_threshold_drift_ks_min"
    key = (("model", MODEL),)
    try:
        config_value = _metric(fleet[0], name, key)
        url = f"/v1/models/{MODEL}/thresholds"
        r = fleet[0].session.put(fleet[0].url + url, json={"drift_ks_min": 0.31}, headers=AUTH)
        assert r.status_code == 200 and r.json()["persistence"] == "redis"
        started = time.monotonic()
        wait_until(
            lambda: all(_metric(e, name, key) == 0.31 for e in fleet),
            10,
            "every replica to apply the PUT",
        )
        print(f"PUT seen by every replica after {time.monotonic() - started:.1f} s")
        assert server.client().hgetall(f"mlmon:thresholds:{MODEL}") == {b"drift_ks_min": b"0.31"}

        fleet[2].stop()  # a replica started afterwards reads it at start
        fleet[2] = Exporter(cfg, env=env)
        assert _metric(fleet[2], name, key) == 0.31
        audit = [ln for ln in fleet[0].log.read_text().splitlines() if " mlmon.audit: " in ln]
        assert len(audit) == 1 and "put_thresholds" in audit[0]

        r = fleet[1].session.delete(fleet[1].url + url + "/drift_ks_min", headers=AUTH)
        assert r.status_code == 200
        wait_until(
            lambda: all(_metric(e, name, key) == config_value for e in fleet),
            10,
            "every replica to apply the DELETE",
        )
        assert any("delete_threshold" in ln for ln in fleet[1].log.read_text().splitlines())
    finally:
        for e in fleet:
            e.stop()
        server.stop()


@pytest.mark.integration
def test_records_the_store_did_not_get_from_mlmon_are_refused(fleet_env, redis_server, tmp_path):
    """The store is shared, so its bytes are input: a forged or corrupt record under a
    join key is an unmatched label (logged), never a 500 or a counted outcome."""
    cfg = _config(fleet_env, tmp_path, {"url": redis_server.url}, "fleet")
    exporter = Exporter(cfg)
    client = redis_server.client()
    forged = {
        "not-json": b"\xff{",
        "an-object": b'{"version": "v1"}',
        "short": b'["v1", 1.0, 1]',
        "wrong-types": b'[1, "now", 1, null, null, []]',
        "class-out-of-range": b'["v1", 1e18, 7, null, 0.5, ["f"]]',
        "groups-not-names": b'["v1", 1e18, 1, null, 0.5, [{"a": 1}]]',
    }
    try:
        for key, value in forged.items():
            client.set(f"mlmon:join:{{{MODEL}}}:{key}", value)
        good = f'["v1", {time.time() - 60}, 1, null, 0.7, ["f"]]'  # a minute ago
        client.set(f"mlmon:join:{{{MODEL}}}:good", good.encode())
        labels = [{"id": key, "label": 1} for key in [*forged, "good"]]
        answer = _post(exporter, "labels", {"labels": labels})
        assert answer.status_code == 200
        assert (answer.json()["unmatched"], answer.json()["matched"]) == (len(forged), 1)
        samples = parse_metrics(exporter.get("/metrics").text)
        version = (("model", MODEL), ("version", "v1"))
        assert samples[("mlmon_labelled_predictions_total", version)] == 1
        assert "not mlmon's" in exporter.log.read_text()
    finally:
        exporter.stop()


@pytest.mark.integration
def test_what_a_shared_store_cannot_take_is_refused_or_kept_apart(
    fleet_env, redis_server, tmp_path
):
    """Found in review: a group named __other__ (reserved: the groups past max_groups) and
    ids that are not text made a replica with a store answer 500 after counting the batch;
    a model name with ':' shared keys with another model; a password in the url's query
    would be logged."""
    doc = yaml.safe_load(_config(fleet_env, tmp_path, {"url": redis_server.url}, "x").read_text())
    doc["limits"] = {"max_groups": 2}
    other = {**doc["models"][0], "name": f"{MODEL}:v2"}
    doc["models"].append(other)
    cfg = tmp_path / "two.yml"
    cfg.write_text(yaml.safe_dump(doc))
    exporter = Exporter(cfg)
    try:
        rows, labels = _events(fleet_env, 40, seed=9, prefix="g-")
        reserved = [{**rows[0], "groups": {"gender": "__other__"}}]
        r = _post(exporter, "predictions", {"events": reserved})
        assert r.status_code == 400 and r.json()["details"][0]["field"] == "groups.gender"
        event = json.dumps({**rows[1], "id": "x"}).replace('"x"', '"\\ud800"')
        lone = '{"events": [' + event + "]}"
        r = exporter.session.post(
            f"{exporter.url}/v1/models/{MODEL}/predictions",
            data=lone,
            headers={"Content-Type": "application/json"},
            timeout=5,
        )
        assert r.status_code == 400 and r.json()["details"][0]["field"] == "id"
        for i, row in enumerate(rows):  # more groups than max_groups: the rest are __other__
            row["groups"] = {"gender": f"g{i % 5}"}
        assert _post(exporter, "predictions", {"events": rows}).status_code == 200
        # the same ids under the other model, whose name extends this one's with ':v2'
        twin = [{**r, "id": r["id"].replace("g-", "")} for r in rows]
        for r in twin:
            r["id"] = "g-" + r["id"]
        other_url = f"{exporter.url}/v1/models/{MODEL}:v2/predictions"
        assert exporter.session.post(other_url, json={"events": twin[:5]}, timeout=5).ok
        wait_until(
            lambda: _metric(exporter, "mlmon_store_written_records_total") == 45, 10, "writes"
        )
        answer = _post(exporter, "labels", _labels_body(rows, labels)).json()
        assert (answer["matched"], answer["duplicate"]) == (40, 0)
        samples = parse_metrics(exporter.get("/metrics").text)
        groups = {
            dict(k)["group"]
            for (name, k), _ in samples.items()
            if name == "mlmon_group_outcomes_total" and dict(k)["model"] == MODEL
        }
        assert groups == {"g0", "g1", "__other__"}
    finally:
        exporter.stop()
    leak = tmp_path / "leak.yml"
    leak.write_text(
        yaml.safe_dump({**doc, "store": {"url": f"{redis_server.url}?password=s3cret"}})
    )
    check = subprocess.run(
        [sys.executable, "-m", "mlmon", "check-config", "--config", str(leak)],
        capture_output=True,
        text=True,
    )
    assert check.returncode != 0 and "store.url" in check.stderr + check.stdout
    assert "s3cret" not in check.stderr + check.stdout
