"""The package's layers import one way, and nothing in it forms an import cycle (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gn_plugin"

#: layer of each top-level module or subpackage, lowest first; a module may import its own layer and below
LAYERS = {
    "errors": 0, "registry": 0, "atomic": 0, "config": 0,
    "augment": 1, "losses": 1, "norms": 1, "regularizers": 1, "models": 1, "data": 1, "metrics": 1, "loggers": 1,
    "evaluation": 2,
    "training": 3,
    "experiments": 4,
    "cli": 5, "api": 5, "__init__": 5,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every ``gn_plugin`` module ``path`` imports, at any depth of its code (function-local imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("gn_plugin"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from pkg import module`
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("gn_plugin"))
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (names that are not modules are dropped)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1] if len(parts) > 1 else "__init__"]


def test_every_module_belongs_to_a_layer():
    unplaced = sorted({m.split(".")[1] for m in import_graph() if "." in m} - set(LAYERS))
    assert not unplaced, f"add these to LAYERS and docs/architecture.md: {unplaced}"


def test_no_module_imports_a_higher_layer():
    upward = [
        f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
        for module, targets in import_graph().items()
        for target in targets
        if layer(target) > layer(module)
    ]
    assert not upward, "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None (depth-first search)."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    # a subpackage's __init__ is imported with each of its modules; it must not import them back
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize("graph, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
])
def test_cycle_finder_finds_cycles(graph, cycle):
    assert find_cycle(graph) == cycle


def test_components_reach_nothing_above_them():
    # the brief's rule in its own words: norms, losses, regularizers, models, data and metrics
    # import nothing from evaluation, training or experiments
    components = {"augment", "losses", "norms", "regularizers", "models", "data", "metrics"}
    offenders = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        if module.split(".")[1:2] and module.split(".")[1] in components
        for target in targets
        if target.split(".")[1:2] and target.split(".")[1] in {"evaluation", "training", "experiments", "cli"}
    ]
    assert not offenders, offenders
