"""docker-compose.yml, checked without a Docker engine: the compose-spec schema, and the
conventions (pinned images, healthchecks, loopback-only ports, mounts that exist)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOC = yaml.safe_load(COMPOSE.read_text())
SERVICES = DOC["services"]


def test_compose_file_matches_the_compose_spec():
    exe = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("check-jsonschema is not installed; run `make test`")
    res = subprocess.run(
        [exe, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_stack_has_every_part():
    assert set(SERVICES) >= {
        "demo-model",
        "mlmon",
        "prometheus",
        "alertmanager",
        "grafana",
        "mailcatcher",
        "webhook-sink",
    }
    assert SERVICES["mlmon"]["network_mode"] == "service:demo-model"  # a real sidecar
    assert SERVICES["prometheus"]["image"].startswith("prom/prometheus:v3.")


def test_images_are_pinned_and_every_service_has_a_healthcheck():
    for name, svc in SERVICES.items():
        image = svc["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image else ""
        assert tag and tag != "latest" and any(c.isdigit() for c in tag), f"{name}: {image}"
        hc = svc["healthcheck"]["test"]
        assert hc[0] == "CMD" and len(hc) > 1, name


def test_ports_are_published_on_loopback_only():
    published = [p for svc in SERVICES.values() for p in svc.get("ports", [])]
    assert len(published) >= 5
    for p in published:
        assert str(p).startswith("127.0.0.1:"), p


def test_mounted_files_exist_and_configs_point_at_services():
    for name, svc in SERVICES.items():
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            if src.startswith("./"):
                assert (ROOT / src).exists(), f"{name}: {src}"
    prom = yaml.safe_load((ROOT / "prometheus/prometheus.yml").read_text())
    targets = [
        t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    ]
    assert "demo-model:9797" in targets
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "alertmanager:9093"
    ]
    am = yaml.safe_load((ROOT / "alertmanager/alertmanager.yml").read_text())
    assert am["global"]["smtp_smarthost"].split(":")[0] in SERVICES
    pager = am["receivers"][1]["webhook_configs"][0]["url"]
    assert pager.split("/")[2].split(":")[0] in SERVICES
    chat = (ROOT / "alertmanager/secrets/chat-webhook-url").read_text().strip()
    assert chat.split("/")[2].split(":")[0] in SERVICES
    ds = yaml.safe_load((ROOT / "grafana/provisioning/datasources/mlmon.yml").read_text())
    assert ds["datasources"][0]["url"].split("/")[2].split(":")[0] in SERVICES
    prov = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/mlmon.yml").read_text())
    dash_path = prov["providers"][0]["options"]["path"]
    assert any(
        v.endswith(":" + dash_path + ":ro") or v.split(":")[1] == dash_path
        for v in SERVICES["grafana"]["volumes"]
    )


def test_docker_compose_1_29_accepts_the_file():
    """Debian's docker-compose (1.29) checks keys and types offline; it refuses what
    Compose v2 alone knows, such as a top-level `name:`."""
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is not installed; `make test` installs Debian's package")
    res = subprocess.run(
        [exe, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, cwd=ROOT
    )
    assert res.returncode == 0, res.stdout + res.stderr


def _build_context() -> dict[str, int]:
    """Files the Docker client sends as the build context, with their sizes, as the client
    itself evaluates .dockerignore."""
    from docker.utils.build import exclude_paths

    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    files = {}
    for rel in exclude_paths(str(ROOT), patterns, dockerfile="exporter/Dockerfile"):
        path = ROOT / rel
        if path.is_file():
            files[rel] = path.stat().st_size
    return files


def test_the_build_context_is_the_sources_only():
    files = _build_context()
    for copied in ("pyproject.toml", "README.md", "exporter/mlmon/cli.py", "exporter/Dockerfile"):
        assert copied in files, copied
    assert not [f for f in files if f.startswith((".venv", ".git/", "tests/", "bench/"))]
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    assert sum(files.values()) < 2 * 1024 * 1024, sorted(files, key=files.get)[-5:]


def test_the_base_image_is_pinned_to_an_exact_release():
    base = next(
        line.split()[1]
        for line in (ROOT / "exporter/Dockerfile").read_text().splitlines()
        if line.startswith("FROM ")
    )
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+", base), base
