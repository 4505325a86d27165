"""The proxy in front of real model servers from PyPI: KServe's ModelServer (v1 and the
Open Inference Protocol v2) and an MLflow pyfunc model served by `mlflow models serve
--env-manager local`. They live in their own virtualenv (`make model-servers`, found via
MLMON_SERVERS_VENV or .venv-servers); without it these tests fail, they do not skip.

Each test sends the same synthetic rows through the proxy and straight to the server:
the raw responses must be equal byte for byte (the Date header aside), and the exporter
must hold exactly the rows sent, with the predictions the server made."""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

import pytest
import requests
from helpers import Exporter, free_port, make_env, parse_metrics, raw_call, wait_until
from mlmon.demo import synthetic

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent / "model_servers"
MODEL = "credit-risk"
NUMERIC = ["age", "income", "debt_ratio", "credit_lines", "months_employed"]
CATEGORICAL = ["country", "channel"]


def servers_venv() -> Path:
    venv = Path(os.environ.get("MLMON_SERVERS_VENV", ROOT / ".venv-servers"))
    if not venv.is_absolute():
        venv = ROOT / venv
    if not (venv / "bin" / "python").exists():
        pytest.fail(f"no model-server virtualenv at {venv}; run `make model-servers`")
    return venv


class Server:
    def __init__(self, args: list[str], port: int, log: Path, ready_path: str) -> None:
        venv = servers_venv()
        env = dict(os.environ, PATH=f"{venv / 'bin'}:{os.environ['PATH']}")
        self.log = log
        self.fh = log.open("wb")
        self.proc = subprocess.Popen(
            args, stdout=self.fh, stderr=subprocess.STDOUT, env=env, cwd=log.parent
        )
        self.port = port

        def ready() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"model server exited: {log.read_text()[-3000:]}")
            return requests.get(f"http://127.0.0.1:{port}{ready_path}", timeout=2).ok

        wait_until(ready, 120, f"{args[1]} to serve", interval=0.5)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.fh.close()


def stack(tmp: Path, upstream_port: int, proxy_extra: str = "") -> Exporter:
    env = make_env(tmp, synthetic.credit_spec(), n_train=5_000)
    cfg = env.config_path
    cfg.write_text(
        cfg.read_text() + f"proxy:\n  upstream: http://127.0.0.1:{upstream_port}\n" + proxy_extra
    )
    exporter = Exporter(cfg, ["--proxy.listen-address", "127.0.0.1:0"])
    assert exporter.proxy_port is not None
    return exporter


def metric_sum(m: dict, name: str, **labels) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in m.items() if n == name and want <= set(ls))


def check_capture(exporter: Exporter, rows: list[dict], predicted: list[str]) -> None:
    """The exporter holds exactly these rows and these predicted classes."""
    n = len(rows)
    wait_until(
        lambda: (
            metric_sum(parse_metrics(exporter.get("/metrics").text), "mlmon_ingest_events_total")
            == n
        ),
        20,
        f"{n} events",
    )
    m = parse_metrics(exporter.get("/metrics").text)
    for k in NUMERIC:
        got = metric_sum(m, "mlmon_feature_value_sum", feature=k)
        assert got == pytest.approx(sum(r[k] for r in rows), rel=1e-9), k
    for k in CATEGORICAL:
        for c in {r[k] for r in rows}:
            got = metric_sum(m, "mlmon_feature_category_total", feature=k, category=c)
            assert got == sum(r[k] == c for r in rows), (k, c)
    for c in ("0", "1"):
        assert metric_sum(m, "mlmon_prediction_class_total", **{"class": c}) == predicted.count(c)
    fails = {ls: v for (n, ls), v in m.items() if n == "mlmon_proxy_capture_failures_total"}
    assert sum(fails.values()) == 0, fails


def batches(n_rows: int, seed: int):
    rng = random.Random(seed)
    rows = [e["features"] for e in synthetic.events(synthetic.credit_spec(), n_rows, seed=seed)]
    i = 0
    while i < len(rows):
        k = rng.randint(1, 25)
        yield rows[i : i + k]
        i += k


def body_of(raw: bytes) -> dict:
    return json.loads(raw.split(b"\r\n\r\n", 1)[1])


@pytest.fixture(scope="module")
def kserve(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kserve")
    port = free_port()
    server = Server(
        [str(servers_venv() / "bin" / "python"), str(HERE / "kserve_server.py"), MODEL, str(port)],
        port,
        tmp / "kserve.log",
        "/v2/health/ready",
    )
    yield server
    server.stop()


def test_kserve_v1(kserve, tmp_path):
    exporter = stack(tmp_path, kserve.port)
    try:
        sent, predicted = [], []
        h = {"Content-Type": "application/json"}
        for rows in batches(300, seed=21):
            body = json.dumps({"instances": rows}).encode()
            path = f"/v1/models/{MODEL}:predict"
            direct = raw_call(kserve.port, "POST", path, body, h)
            assert direct.startswith(b"HTTP/1.1 200")
            assert raw_call(exporter.proxy_port, "POST", path, body, h) == direct
            sent += rows
            predicted += [str(p) for p in body_of(direct)["predictions"]]
        check_capture(exporter, sent, predicted)
    finally:
        exporter.stop()


def test_kserve_open_inference_protocol_v2(kserve, tmp_path):
    extra = f"  models:\n    {MODEL}:\n      output: label\n      scores: probability\n"
    exporter = stack(tmp_path, kserve.port, extra)
    try:
        sent, predicted = [], []
        h = {"Content-Type": "application/json"}
        for i, rows in enumerate(batches(300, seed=22)):
            inputs = [
                {"name": k, "shape": [len(rows)], "datatype": "FP64", "data": [r[k] for r in rows]}
                for k in NUMERIC
            ] + [
                {"name": k, "shape": [len(rows)], "datatype": "BYTES", "data": [r[k] for r in rows]}
                for k in CATEGORICAL
            ]
            body = json.dumps({"id": f"req-{i}", "inputs": inputs}).encode()
            path = f"/v2/models/{MODEL}/infer"
            direct = raw_call(kserve.port, "POST", path, body, h)
            assert direct.startswith(b"HTTP/1.1 200"), direct
            assert raw_call(exporter.proxy_port, "POST", path, body, h) == direct
            sent += rows
            out = {o["name"]: o for o in body_of(direct)["outputs"]}
            predicted += [str(p) for p in out["label"]["data"]]
        check_capture(exporter, sent, predicted)
        m = parse_metrics(exporter.get("/metrics").text)
        # the probabilities became the scores: the score histogram counts every row
        assert metric_sum(m, "mlmon_prediction_score_count") == len(sent)
    finally:
        exporter.stop()


def test_mlflow_invocations(tmp_path):
    venv = servers_venv()
    model_dir = tmp_path / "model"
    subprocess.run(
        [str(venv / "bin" / "python"), str(HERE / "mlflow_model.py"), str(model_dir)],
        check=True,
        capture_output=True,
    )
    port = free_port()
    server = Server(
        [str(venv / "bin" / "mlflow"), "models", "serve", "-m", str(model_dir),
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        port,
        tmp_path / "mlflow.log",
        "/ping",
    )  # fmt: skip
    extra = f"  models:\n    {MODEL}:\n      output: label\n      scores: probability\n"
    (tmp_path / "ex").mkdir()
    exporter = stack(tmp_path / "ex", port, extra)
    try:
        rng = random.Random(5)
        sent, predicted = [], []
        h = {"Content-Type": "application/json"}
        cols = NUMERIC + CATEGORICAL
        for rows in batches(300, seed=23):
            form = rng.choice(["split", "records", "instances", "inputs"])
            if form == "split":
                doc = {
                    "dataframe_split": {
                        "columns": cols,
                        "data": [[r[k] for k in cols] for r in rows],
                    }
                }
            elif form == "records":
                doc = {"dataframe_records": rows}
            elif form == "instances":
                doc = {"instances": rows}
            else:
                doc = {"inputs": {k: [r[k] for r in rows] for k in cols}}
            body = json.dumps(doc).encode()
            direct = raw_call(port, "POST", "/invocations", body, h)
            assert direct.startswith(b"HTTP/1.1 200"), direct
            assert raw_call(exporter.proxy_port, "POST", "/invocations", body, h) == direct
            sent += rows
            predicted += [str(p["label"]) for p in body_of(direct)["predictions"]]
        check_capture(exporter, sent, predicted)
    finally:
        exporter.stop()
        server.stop()
