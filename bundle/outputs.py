"""Every generated file of the bundle and its text, for one set of parameters."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from bundle import dashboards, rule_templates
from bundle.params import Params

ROOT = Path(__file__).resolve().parents[1]
RULES = Path("prometheus/rules")
DASHBOARDS = Path("grafana/dashboards")
KUBERNETES = Path("deploy/kubernetes")


def kubernetes_generator() -> ModuleType:
    """deploy/kubernetes/generate.py, which also runs on its own (not a package)."""
    spec = importlib.util.spec_from_file_location("k8s_generate", ROOT / KUBERNETES / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render(p: Params) -> dict[Path, str]:
    """Path relative to the repository -> text."""
    rules = rule_templates.render(p)
    k8s = kubernetes_generator()
    out = {RULES / name: text for name, text in rules.items()}
    out |= {DASHBOARDS / name: text for name, text in dashboards.render(p).items()}
    out[KUBERNETES / "prometheusrule.yaml"] = k8s.prometheusrule(rule_templates.groups(rules))
    out[KUBERNETES / "configmap.yaml"] = k8s.configmap()
    return out


def stale(rendered: dict[Path, str], root: Path = ROOT) -> list[Path]:
    """The files under ``root`` that differ from (or lack) their rendering."""
    return [
        path
        for path, text in rendered.items()
        if not (root / path).exists() or (root / path).read_text() != text
    ]


def write(rendered: dict[Path, str], root: Path = ROOT) -> list[Path]:
    """Write the files that changed; return them."""
    changed = stale(rendered, root)
    for path in changed:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(rendered[path])
    return changed
