"""The package's architecture, checked: layers, no import cycle, small modules, one printing layer."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "corrsteer"
MAX_LINES = 400  # a module past this is split by concept (STYLE.md)


def _graph():
    grimp = pytest.importorskip("grimp", reason="import-linter (which brings grimp) is a test dependency")
    return grimp.build_graph("corrsteer", include_external_packages=False)


def strongly_connected(graph) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module: the import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def test_the_layers_contract_holds() -> None:
    """`lint-imports` with the contracts of pyproject.toml: no layer imports one above it."""
    pytest.importorskip("importlinter", reason="import-linter is a test dependency")
    done = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                           "lint_imports_command()"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_no_import_cycle_anywhere_in_the_package() -> None:
    """grimp counts imports inside functions too: a lazy import does not hide a cycle."""
    assert strongly_connected(_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    class Graph:
        modules = {"a", "b", "c", "d"}
        edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}

        def find_modules_directly_imported_by(self, m: str) -> set[str]:
            return self.edges[m]

    assert strongly_connected(Graph()) == [["a", "b", "c"]]


def test_no_module_is_over_the_line_budget() -> None:
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}, f"split these by concept: {long}"


def test_only_the_cli_prints() -> None:
    """Library code logs (logging) and returns data; printing is the command line's job."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_importing_corrsteer_imports_neither_torch_nor_transformers() -> None:
    code = ("import sys, corrsteer, corrsteer.core, corrsteer.sae, corrsteer.config, corrsteer.storage; "
            "corrsteer.RunConfig; corrsteer.SAE; "
            "bad = [m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_public_api_is_the_workflow() -> None:
    import corrsteer

    assert set(corrsteer.__all__) == {"CorrsteerError", "RunConfig", "SAE", "SAEConfig", "Selection", "capture",
                                      "collect", "evaluate", "get_task", "list_tasks", "load_model", "load_saes", "register_task",
                                      "run", "select", "steer", "__version__"}
    for name in corrsteer.__all__:
        assert getattr(corrsteer, name) is not None
    with pytest.raises(AttributeError, match="corrsteer.core"):
        corrsteer.CorrelationAccumulator  # noqa: B018 - the core's types live in corrsteer.core
