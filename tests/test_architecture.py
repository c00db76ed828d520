"""The shape of the code (#20): no import cycle, nothing below the CLI imports it, and the CLI
never asks which backend it is running (it asks for capabilities)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mirrorppr_cli"
CLI = "mirrorppr_cli.cli"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module → the project modules it imports, at the top or inside functions (a lazy import
    is still an arrow: it runs whenever the function does)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                candidates = [target, *(f"{target}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            graph[name] |= {c for c in candidates if c in modules and c != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_nothing_below_the_cli_imports_it():
    graph = import_graph()
    importers = {m for m, targets in graph.items() if not m.startswith(CLI)
                 and any(t == CLI or t.startswith(CLI + ".") for t in targets)}
    assert importers == {"mirrorppr_cli.__main__"}


@pytest.mark.parametrize("path", sorted((PACKAGE / "cli").glob("*.py")), ids=lambda p: p.name)
def test_the_cli_never_compares_a_backend_name(path):
    """A backend is asked for capabilities (`require`), never recognised by its name."""
    names = {"warp", "eager", "compile", "fp8"}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            constants = {c.value for c in [node.left, *node.comparators]
                         if isinstance(c, ast.Constant)}
            assert not constants & names, f"{path.name}:{node.lineno} compares with a backend name"


#: ``mirrorppr_cli.geometric``'s modules, lower ones first, as its docstring lists them.
GEOMETRIC_ORDER = ["landmarks", "landmark_mirror", "regions", "face_frame", "body",
                   "body_correspondence", "box", "mls", "flow", "face", "field", "motion", "fit",
                   "measure", "carry", "apply"]


def test_geometric_imports_point_down_its_list():
    """Inside the geometric package a module imports only modules listed before it."""
    package = "mirrorppr_cli.geometric."
    graph = import_graph()
    assert sorted(m[len(package):] for m in graph if m.startswith(package)) == sorted(
        GEOMETRIC_ORDER)
    upward = [(m, t[len(package):]) for m in GEOMETRIC_ORDER
              for t in graph[package + m] if t.startswith(package)
              and GEOMETRIC_ORDER.index(t[len(package):]) > GEOMETRIC_ORDER.index(m)]
    assert upward == []
