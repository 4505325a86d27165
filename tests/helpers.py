"""Shared test helpers: a fake clock, required binaries, a model with a built baseline."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from mlmon.cli import build_exposition
from mlmon.core.baseline import build_profile, read_training_data, write_profile
from mlmon.core.config import Config, load_config
from mlmon.core.monitor import Monitor
from mlmon.demo import synthetic
from mlmon.http.api import Api
from mlmon.http.auth import Tokens
from mlmon.http.web import create_app


class FakeClock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def require_binary(name: str) -> str:
    """Tests that need a binary fail (not skip) without it: `make test` installs them."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; run `make test`, which installs it")
    return path


@dataclass
class Env:
    """A config with one model, its baseline built from synthetic training data."""

    dir: Path
    config_path: Path
    config: Config
    spec: synthetic.TableSpec
    training: list[dict]

    def monitor(self, clock: Callable[[], float] | None = None) -> Monitor:
        return Monitor(self.config, clock=clock) if clock else Monitor(self.config)

    def app(self, clock: Callable[[], float] | None = None):
        """A monitor, its registry and the Flask app, serving /metrics with the same
        renderer as `mlmon serve`."""
        mon = self.monitor(clock)
        registry, render = build_exposition(mon)
        api = Api(mon, registry, Tokens(), render)
        return mon, registry, create_app(mon, registry, None, api)


def make_env(
    tmp: Path,
    spec: synthetic.TableSpec,
    n_train: int = 20_000,
    model_extra: dict | None = None,
    top: dict | None = None,
    name: str = "credit-risk",
) -> Env:
    training = synthetic.events(spec, n_train, seed=1)
    data = tmp / "train.csv"
    synthetic.write_csv(training, data)
    model = {
        "name": name,
        "task": "binary",
        "positive_class": 1,
        "baseline": f"baselines/{name}.json",
        "features": spec.config_features(),
        **(model_extra or {}),
    }
    cfg_path = tmp / "mlmon.yml"
    cfg_path.write_text(yaml.safe_dump({"models": [model], **(top or {})}))
    cfg = load_config(cfg_path)
    m = cfg.models[0]
    profile = build_profile(m, read_training_data(data, list(spec.config_features()), False))
    write_profile(profile, m.baseline)
    return Env(tmp, cfg_path, cfg, spec, training)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(
    check: Callable[[], object], timeout: float, what: str, interval: float = 0.1
) -> object:
    """Poll ``check`` until it returns something truthy; fail with ``what`` at the deadline."""
    import time

    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as e:
            last_error = e
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


class Exporter:
    """A real `mlmon serve` process on 127.0.0.1."""

    def __init__(
        self,
        config: Path,
        extra_args: list[str] | None = None,
        listen: str = "127.0.0.1:0",
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
        python: str | None = None,
    ) -> None:
        import os
        import re
        import subprocess
        import sys
        import time

        import requests

        self.log = config.parent / f"exporter-{time.monotonic_ns()}.log"
        self._log_fh = self.log.open("wb")
        # Port 0: the exporter binds a free port itself and logs it, so no other process
        # can take the port between choosing and binding it.
        self.proc = subprocess.Popen(
            [
                python or sys.executable,
                "-m",
                "mlmon",
                "serve",
                "--config",
                str(config),
                "--web.listen-address",
                listen,
                *(extra_args or []),
            ],
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            preexec_fn=preexec_fn,
        )

        def bound_port() -> int | None:
            if self.proc.poll() is not None:
                pytest.fail(f"exporter exited: {self.log.read_text()}")
            m = re.search(
                r"serving \d+ model\(s\) on http://127\.0\.0\.1:(\d+)/", self.log.read_text()
            )
            return int(m.group(1)) if m else None

        self.port = wait_until(bound_port, 30, "the exporter to bind its port")
        self.url = f"http://127.0.0.1:{self.port}"
        m = re.search(r"proxy on http://127\.0\.0\.1:(\d+)/", self.log.read_text())
        self.proxy_port = int(m.group(1)) if m else None
        self.session = requests.Session()

        def ready() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"exporter exited: {self.log.read_text()}")
            return self.session.get(self.url + "/readyz", timeout=1).status_code == 200

        wait_until(ready, 20, "the exporter to become ready")

    def post(self, model: str, events: list[dict], **kw):
        return self.session.post(
            f"{self.url}/v1/models/{model}/predictions", json={"events": events}, timeout=30, **kw
        )

    def get(self, path: str):
        return self.session.get(self.url + path, timeout=30)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except Exception:
            self.proc.kill()
        self._log_fh.close()


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Exposition text -> {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def send_raw(port: int, raw: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes on a fresh connection, close the sending side, and return all that comes
    back (nothing when the server resets the connection)."""
    import socket

    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        try:
            while chunk := s.recv(65536):
                data += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return data


def raw_call(port: int, method: str, path: str, body: bytes = b"", headers=None) -> bytes:
    """One request on a fresh connection; the whole raw response, Date header removed."""
    import socket

    head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method == "POST":
        head.append(f"Content-Length: {len(body)}")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    raw = b"".join(chunks)
    head_end = raw.index(b"\r\n\r\n")
    lines = [ln for ln in raw[:head_end].split(b"\r\n") if not ln.lower().startswith(b"date:")]
    return b"\r\n".join(lines) + raw[head_end:]


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def body_of(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[1]


# Headers that are the connection's, not the message's (RFC 9110 §7.6.1), and the date:
# a proxy answers with the upstream's message, not with its connection's framing.
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "date", "content-length"}


def message_of(raw: bytes, method: str = "POST") -> tuple[int, list[tuple[str, str]], bytes]:
    """A raw HTTP/1.1 response parsed by h11: (status, end-to-end headers in order with
    lower-case names, the body with its framing removed)."""
    import h11

    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    conn.receive_data(b"")
    status, headers, body = 0, [], b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Response):
            status = event.status_code
            headers = [
                (k.decode().lower(), v.decode("latin-1"))
                for k, v in event.headers
                if k.decode().lower() not in _HOP_BY_HOP
            ]
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed) or event is h11.NEED_DATA:
            return status, headers, body


class Reply:
    """An HTTP response, with the attributes tests read (as Flask's test client names them)."""

    def __init__(self, status: int, headers, data: bytes) -> None:
        self.status_code = status
        self.headers = headers
        self.data = data

    @property
    def is_json(self) -> bool:
        return self.headers.get("Content-Type", "").startswith("application/json")

    @property
    def json(self):
        import json

        return json.loads(self.data) if self.is_json else None

    def get_json(self):
        return self.json

    @property
    def text(self) -> str:
        return self.data.decode()


class HttpClient:
    """Requests over real sockets to a served exporter, called like Flask's test client."""

    def __init__(self, url: str) -> None:
        import requests

        self.url = url
        self.session = requests.Session()

    def open(self, path, method="GET", json=None, data=None, content_type=None, headers=None):
        import json as json_module

        headers = dict(headers or {})
        if json is not None:
            data = json_module.dumps(json)
            content_type = content_type or "application/json"
        if isinstance(data, str):
            data = data.encode()
        if content_type is not None:
            headers["Content-Type"] = content_type
        r = self.session.request(
            method, self.url + path, data=data, headers=headers, timeout=60, stream=False
        )
        return Reply(r.status_code, r.headers, r.content)

    def get(self, path, **kw):
        return self.open(path, "GET", **kw)

    def post(self, path, **kw):
        return self.open(path, "POST", **kw)

    def put(self, path, **kw):
        return self.open(path, "PUT", **kw)


class Served:
    """`mlmon serve`'s server -- the same wiring (`cli.build_service`: uvicorn with httptools
    behind the connection guard, the ASGI app, the Flask app) -- running in this process on a
    real socket on 127.0.0.1, so that tests talk HTTP to it and can still inspect its state."""

    def __init__(self, config: Config, clock=None, tokens=None) -> None:
        import threading

        from mlmon.cli import build_service

        self.service = build_service(config, clock=clock, tokens=tokens)
        self.monitor = self.service.monitor
        self.registry = self.service.registry
        from mlmon.http.server import listen

        sock = listen("127.0.0.1", 0)
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self.service.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        wait_until(lambda: self.service.server.started, 10, "the served exporter to start")
        self.client = HttpClient(self.url)

    def close(self) -> None:
        self.service.server.should_exit = True
        self._thread.join(10)
        self.service.app.pool.shutdown(wait=False)
        self.service.app.ingest.shutdown(wait=False)


def write_baseline_config(config: Path, model: dict, training: Path) -> Path:
    """Write a one-model config and build its baseline from ``training`` with the real
    `mlmon baseline` command (as a user would); returns the config's path."""
    import subprocess
    import sys

    config.write_text(yaml.safe_dump({"models": [model]}))
    argv = [sys.executable, "-m", "mlmon", "baseline", "--config", str(config)]
    subprocess.run(
        [*argv, "--model", model["name"], "--data", str(training), "--no-progress"],
        check=True,
        capture_output=True,
    )
    return config
