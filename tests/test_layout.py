"""The package's architecture, checked on its import graph: no import cycles, and imports
only in the directions each subpackage's docstring allows (statistics know nothing of
HTTP or metrics; nothing on the serving path imports the demo tooling)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "exporter" / "mlmon"

# What each subpackage must never import (by package prefix).
FORBIDDEN = {
    "mlmon.core": ("mlmon.http", "mlmon.metrics", "mlmon.capture", "mlmon.demo"),
    "mlmon.stats": ("mlmon.http", "mlmon.metrics", "mlmon.capture", "mlmon.demo"),
    "mlmon.metrics": ("mlmon.http", "mlmon.capture.proxy", "mlmon.demo"),
    "mlmon.http": ("mlmon.capture.proxy", "mlmon.demo"),
    "mlmon.capture": ("mlmon.metrics", "mlmon.demo"),
    "mlmon.history": ("mlmon.http", "mlmon.capture"),
    "mlmon.report": ("mlmon.http", "mlmon.metrics", "mlmon.capture", "mlmon.demo"),
}
SUBPACKAGES = ("core", "stats", "metrics", "http", "capture", "demo", "history", "report")


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[str, bool]]:
    """The mlmon modules a file imports, each with whether the import is at module level
    (imports inside functions or `if TYPE_CHECKING:` are not run on import)."""
    tree = ast.parse(path.read_text())
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            top.add(id(node))
    out = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; the package imports absolutely")
        for n in names:
            if n == "mlmon" or n.startswith("mlmon."):
                out.append((n, id(node) in top))
    return out


def graph() -> dict[str, set[str]]:
    """Module -> the mlmon modules it imports at module level."""
    modules = {module_name(p): p for p in PKG.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for m, path in modules.items():
        for name, at_top in imports(path):
            if at_top and name in modules and name != m:
                edges[m].add(name)
    return edges


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                return [*stack[stack.index(n) :], n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (found := visit(m)):
            return found
    return None


def violations() -> list[str]:
    out = []
    for path in PKG.rglob("*.py"):
        m = module_name(path)
        for name, at_top in imports(path):
            for owner, banned in FORBIDDEN.items():
                if (m == owner or m.startswith(owner + ".")) and name.startswith(banned):
                    out.append(f"{m} imports {name}")
            if name.startswith("mlmon.demo") and not m.startswith("mlmon.demo") and at_top:
                out.append(f"{m} imports {name} at module level (the demo is not served)")
    return out


def test_every_module_lives_in_a_subpackage_with_a_docstring():
    top = sorted(p.stem for p in PKG.glob("*.py"))
    assert top == ["__init__", "__main__", "cli"], top
    for sub in SUBPACKAGES:
        doc = ast.get_docstring(ast.parse((PKG / sub / "__init__.py").read_text()))
        assert doc and ("never" in doc or "may import" in doc.lower()), sub


def test_no_import_cycles():
    assert cycle(graph()) is None, cycle(graph())


def test_imports_go_only_in_the_allowed_directions():
    assert violations() == []


def test_the_checks_catch_a_cycle_and_a_forbidden_import(monkeypatch):
    """Inject what must be caught: a cycle between two modules, and a statistics module
    that imports the HTTP layer."""
    edges = graph()
    edges["mlmon.core.state"].add("mlmon.core.monitor")  # monitor imports state already
    found = cycle(edges)
    assert found is not None and "mlmon.core.state" in found and "mlmon.core.monitor" in found
    real = imports

    def with_bad_import(path: Path):
        extra = [("mlmon.http.server", True)] if path.name == "drift.py" else []
        return real(path) + extra

    monkeypatch.setattr(__import__(__name__), "imports", with_bad_import)
    assert "mlmon.stats.drift imports mlmon.http.server" in violations()


@pytest.mark.parametrize("sub", SUBPACKAGES)
def test_each_subpackage_imports(sub):
    __import__(f"mlmon.{sub}")


MAX_FUNCTION_LINES = 80


def long_functions(limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """Functions (and methods) of the package longer than `limit` lines, with their lengths."""
    found = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.relative_to(PKG)}:{node.lineno} {node.name} {lines}")
    return found


def test_functions_are_short():
    """A function is a short list of named steps; past 80 lines, split it."""
    assert long_functions() == []


def test_the_length_check_finds_a_long_function():
    assert any(" parse_events " in f for f in long_functions(limit=20))
