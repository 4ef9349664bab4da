"""drl's modules import each other without a cycle, deferred (function-level) imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import drl

PACKAGE_DIR = Path(drl.__file__).resolve().parent


def module_names() -> dict[str, Path]:
    """Every module under drl/ by dotted name (a package by its own name, not <name>.__init__)."""
    names = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = ("drl", *path.relative_to(PACKAGE_DIR).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def is_type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def imported_modules(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The drl modules ``module`` imports anywhere (top level or inside functions), but under ``if TYPE_CHECKING:``.

    ``from a.b import c`` imports a.b.c when that is a module, else the name c from a.b.
    """
    found: set[str] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if is_type_checking_block(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package that holds this module
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
        stack.extend(ast.iter_child_nodes(node))
    return {name for name in found if name in known and name != module}


def import_graph() -> dict[str, set[str]]:
    names = module_names()
    known = set(names)
    return {
        name: imported_modules(ast.parse(path.read_text(), str(path)), name, path.name == "__init__.py", known)
        for name, path in names.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_drl_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_walk_sees_deferred_imports_and_skips_type_checking_blocks():
    source = (
        "from typing import TYPE_CHECKING\n"
        "import drl.b\n"
        "if TYPE_CHECKING:\n    from drl.c import C\n"
        "def f():\n    from drl.d import thing\n    from . import e\n"
    )
    known = {"drl.a", "drl.b", "drl.c", "drl.d", "drl.e"}
    assert imported_modules(ast.parse(source), "drl.a", False, known) == {"drl.b", "drl.d", "drl.e"}


def test_find_cycle_names_the_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_nothing_imports_upward():
    """drl-train's entry point and its loop sit on top: no module imports drl.cli, only drl.cli imports drl.train
    (drl-eval and drl-reward-server compose through drl.compose), and drl.errors imports no drl module."""
    graph = import_graph()
    importers = {top: sorted(name for name, imported in graph.items() if top in imported) for top in ("drl.cli", "drl.train")}
    assert importers == {"drl.cli": [], "drl.train": ["drl.cli"]}
    assert graph["drl.errors"] == set()
