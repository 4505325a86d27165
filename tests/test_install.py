"""The runtime dependencies are what the runtime imports: a fresh virtualenv with a plain
`pip install .` (no extras) runs the CLI, serves, and drives the compose stack's traffic
(`mlmon demo --traffic-only`). Also: every third-party module the package imports is a
declared runtime dependency."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from helpers import Exporter, parse_metrics, wait_until

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


@pytest.mark.parametrize("args", [[], ["serve"], ["demo"], ["check-config"], ["baseline"]])
def test_cli_help_works_without_extras(plain_venv, args):
    done = subprocess.run(
        [str(plain_venv / "bin/mlmon"), *args, "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "usage: mlmon" in done.stdout


@pytest.mark.integration
def test_plain_install_serves_the_compose_traffic(plain_venv, tmp_path):
    config = tmp_path / "mlmon.yml"
    shutil.copy(ROOT / "examples/mlmon.yml", config)
    shutil.copytree(ROOT / "examples/baselines", tmp_path / "baselines")
    exporter = Exporter(config, python=str(plain_venv / "bin/python"))
    try:
        traffic = ["--traffic-only", "--url", exporter.url, "--rate", "40", "--duration", "3"]
        demo = subprocess.run(
            [str(plain_venv / "bin/mlmon"), "demo", *traffic],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert demo.returncode == 0, demo.stderr[-3000:]

        def requests_counted() -> float | None:
            text = exporter.session.get(exporter.url + "/metrics", timeout=5).text
            samples = parse_metrics(text)
            total = sum(
                v
                for (name, labels), v in samples.items()
                if name == "mlmon_inference_requests_total" and ("model", "credit-risk") in labels
            )
            return total or None

        assert wait_until(requests_counted, 10, "the demo's events to be counted") >= 40
    finally:
        exporter.stop()
