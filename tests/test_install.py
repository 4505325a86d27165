"""The runtime dependencies are what the runtime imports: a fresh virtualenv with a plain
`pip install .` (no extras) runs the CLI, serves, and drives the compose stack's traffic
(`mlmon demo --traffic-only`). Also: every third-party module the package imports is a
declared runtime dependency."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import pytest
import yaml
from helpers import parse_metrics, wait_until

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "exporter" / "mlmon"


def _declared() -> set[str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower().replace("_", "-") for d in deps}


def _imported_top_levels() -> set[str]:
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"mlmon", "__future__"}


def test_every_third_party_import_is_a_declared_dependency():
    distributions = importlib.metadata.packages_distributions()
    declared = _declared()
    missing = {}
    for module in sorted(_imported_top_levels()):
        dists = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        if not dists & declared:
            missing[module] = sorted(dists)
    assert not missing, f"imported by the package but not in [project].dependencies: {missing}"


@pytest.fixture(scope="module")
def plain_venv(tmp_path_factory) -> Path:
    """A virtualenv with `pip install .` of a copy of the sources (the tree stays clean)."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    shutil.copytree(ROOT / "exporter", src / "exporter", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run(
        [str(venv / "bin/pip"), "install", "--quiet", "--disable-pip-version-check", str(src)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return venv


def test_plain_install_has_no_dev_extras(plain_venv):
    dev_only = "('requests', 'pytest', 'sklearn', 'hypothesis')"
    probe = f"import importlib.util as u; print([m for m in {dev_only} if u.find_spec(m)])"
    out = subprocess.run(
        [str(plain_venv / "bin/python"), "-c", probe], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"  # so the runs below prove they do without them


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["serve"],
        ["demo"],
        ["check-config"],
        ["baseline"],
        ["check"],
        ["report"],
        ["backfill"],
        ["backtest"],
    ],
)
def test_cli_help_works_without_extras_outside_the_repository(plain_venv, tmp_path, args):
    done = subprocess.run(
        [str(plain_venv / "bin/mlmon"), *args, "--help"], capture_output=True, text=True,
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "usage: mlmon" in done.stdout


def test_the_demo_outside_the_repository_names_root(plain_venv, tmp_path):
    done = subprocess.run(
        [str(plain_venv / "bin/mlmon"), "demo"], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 2
    assert "--root" in done.stderr and "Traceback" not in done.stderr


COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def _compose_command(service: str, port_map: dict[int, int]) -> list[str]:
    """A compose service's entrypoint and command as this machine runs them: the config
    mount at examples/, loopback instead of 0.0.0.0, each container port on a free one."""
    svc = COMPOSE[service]
    argv = [*(svc.get("entrypoint") or ["mlmon"]), *(svc.get("command") or [])]
    return [_local(arg, port_map) for arg in argv]


def _local(arg: str, port_map: dict[int, int]) -> str:
    arg = arg.replace("/etc/mlmon/", str(ROOT / "examples") + "/").replace("0.0.0.0", "127.0.0.1")
    for container, local in port_map.items():
        arg = re.sub(rf"\b{container}\b", str(local), arg)
    return arg


def _run_healthcheck(service: str, venv: Path, port_map: dict[int, int]) -> None:
    test = COMPOSE[service]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python"
    argv = [str(venv / "bin/python"), *(_local(a, port_map) for a in test[2:])]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"{service} healthcheck: {done.stderr}"


@pytest.mark.integration
def test_every_compose_service_of_ours_runs_without_extras(plain_venv, tmp_path):
    """The image installs `pip install .` and nothing else: run each of its services'
    commands and healthchecks from docker-compose.yml in the plain virtualenv."""
    from helpers import free_port

    port_map = {9797: free_port(), 8080: free_port()}
    bin_dir = str(plain_venv / "bin")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    procs = []
    try:
        sidecar = _compose_command("mlmon", port_map)
        sink = _compose_command("webhook-sink", port_map)
        for argv in (sidecar, sink):
            log = (tmp_path / f"{argv[0]}-{len(procs)}.log").open("wb")
            procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          cwd=tmp_path))  # fmt: skip
        for service in ("mlmon", "webhook-sink"):
            wait_until(lambda s=service: _healthy(s, plain_venv, port_map), 30, f"{service} up")
        demo = [*_compose_command("demo-model", port_map), "--duration", "3"]
        done = subprocess.run(demo, env=env, capture_output=True, text=True, timeout=60,
                              cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        _run_healthcheck("demo-model", plain_venv, port_map)
        url = f"http://127.0.0.1:{port_map[9797]}/metrics"

        def counted() -> float | None:
            samples = parse_metrics(urllib.request.urlopen(url, timeout=5).read().decode())
            total = sum(
                v
                for (name, labels), v in samples.items()
                if name == "mlmon_inference_requests_total" and ("model", "credit-risk") in labels
            )
            return total or None

        assert wait_until(counted, 10, "the demo's events to be counted") >= 50
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


def _healthy(service: str, venv: Path, port_map: dict[int, int]) -> bool:
    try:
        _run_healthcheck(service, venv, port_map)
        return True
    except AssertionError:
        return False
