"""Run the repository's Prometheus and Alertmanager bundle natively on 127.0.0.1.

The integration tests and `mlmon demo` use the repository's own rules, routes and
templates, with an overlay for the local run: scrape targets on loopback, faster scrape
and evaluation, optionally shorter `for:` durations, and receivers pointed at local sinks
(secrets written to temporary files, as in production they are mounted).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

PROMETHEUS_BINARIES = ("prometheus",)
ALERTMANAGER_BINARIES = ("prometheus-alertmanager", "alertmanager")


def find_binary(names: tuple[str, ...]) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError(f"none of {', '.join(names)} is installed (run `make setup`)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def overlay_rules(
    src_dir: Path, dst_dir: Path, for_duration: str | None = None, group_interval: str | None = None
) -> list[Path]:
    """Copy the rule files; with ``for_duration``, every alert's `for:` is replaced (tests
    and demos cannot wait 15 minutes); with ``group_interval``, so is every group's own
    evaluation interval (the 5-minute trend group)."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for f in sorted(src_dir.glob("*.yml")):
        doc = yaml.safe_load(f.read_text())
        for group in doc["groups"]:
            if group_interval is not None and "interval" in group:
                group["interval"] = group_interval
            for rule in group["rules"]:
                if "alert" in rule and for_duration is not None:
                    rule["for"] = for_duration
        dst = dst_dir / f.name
        dst.write_text(yaml.safe_dump(doc, sort_keys=False, width=200))
        out.append(dst)
    return out


def prometheus_config(
    jobs: Mapping[str, list[str]],
    rule_files: list[Path],
    alertmanager: str | None,
    interval: str = "1s",
) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": targets}]}
            for job, targets in jobs.items()
        ],
    }
    if alertmanager:
        cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    return cfg


def alertmanager_config(
    src: Path,
    dst_dir: Path,
    pager_url: str,
    chat_url: str,
    smtp: str,
    group_wait: str = "1s",
    group_interval: str = "1s",
    repeat_interval: str = "1h",
) -> Path:
    """The repository's routing tree and templates with local receivers and timings."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    doc = yaml.safe_load(src.read_text())
    secrets = dst_dir / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "chat-webhook-url").write_text(chat_url + "\n")
    (secrets / "pager-token").write_text("local-pager-token\n")
    doc["global"]["smtp_smarthost"] = smtp
    doc["global"]["slack_api_url_file"] = str(secrets / "chat-webhook-url")
    doc["templates"] = [str(src.parent / t) for t in doc.get("templates", [])]

    def timings(route: dict[str, Any]) -> None:
        for key, value in (
            ("group_wait", group_wait),
            ("group_interval", group_interval),
            ("repeat_interval", repeat_interval),
        ):
            if key in route or route is doc["route"]:
                route[key] = value
        for child in route.get("routes", []):
            timings(child)

    timings(doc["route"])
    for receiver in doc["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = pager_url
            hook["http_config"]["authorization"]["credentials_file"] = str(secrets / "pager-token")
    path = dst_dir / "alertmanager.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class Server:
    """A child process with a log file and an HTTP readiness check."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log: Path,
        url: str,
        ready_path: str = "/-/ready",
        timeout: float = 30.0,
    ) -> None:
        self.name, self.url, self.log = name, url, log
        ready_url = url + ready_path
        self._log = log.open("wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {self.proc.returncode}:\n{log.read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(ready_url, timeout=1) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} not ready after {timeout}s:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def start_prometheus(
    config: dict[str, Any],
    workdir: Path,
    port: int | None = None,
    extra_args: tuple[str, ...] = (),
) -> Server:
    """Prometheus on 127.0.0.1; ``extra_args`` adds flags, for example
    ``--web.enable-remote-write-receiver`` for a central store."""
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "prometheus.yml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    url = f"http://127.0.0.1:{port}"
    return Server(
        "prometheus",
        [
            find_binary(PROMETHEUS_BINARIES),
            f"--config.file={cfg}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--web.external-url={url}/",
            "--web.enable-lifecycle",
            *extra_args,
        ],
        workdir / "prometheus.log",
        url,
    )


def start_alertmanager(config: Path, workdir: Path, port: int | None = None) -> Server:
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    return Server(
        "alertmanager",
        [
            find_binary(ALERTMANAGER_BINARIES),
            f"--config.file={config}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            f"--web.external-url={url}/",
        ],
        workdir / "alertmanager.log",
        url,
    )


def query(prometheus_url: str, promql: str) -> list[dict[str, Any]]:
    """An instant query; returns the result vector."""
    import json
    import urllib.parse

    url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"query failed: {body}")
    return body["data"]["result"]
