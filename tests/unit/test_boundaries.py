"""The package's import boundaries: libraries stay in their layer, no cycles, the streaming core stays lean."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "wal2http"

# Third-party libraries and the only parts of the package allowed to import them.
CONFINED = {
    "click": ("wal2http.cli",),
    "psycopg2": ("wal2http.pg",),
    "requests": ("wal2http.sinks", "wal2http.hook0"),
    "urllib3": ("wal2http.sinks", "wal2http.hook0"),
}
# Set-up and check code: the operator commands. The streaming pipeline must not need any of it.
SET_UP = ("wal2http.cli", "wal2http.ops", "wal2http.hook0.checks", "wal2http.hook0.outbox",
          "wal2http.pg.publication")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(tree: ast.AST) -> Iterator[str]:
    """Every module a file imports, wherever the statement is: top level, functions, TYPE_CHECKING."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            for alias in node.names:
                yield f"{node.module}.{alias.name}"  # a submodule, when it is one


def internal_edges(name: str, tree: ast.AST) -> set[str]:
    return {target for target in imports(tree) if target in MODULES and target != name}


def graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    return {name: internal_edges(name, ast.parse(path.read_text())) for name, path in modules.items()}


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def closure(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(edges[name])
    return seen


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for target in sorted(edges[name]):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[name] = 2
        return None

    for name in sorted(edges):
        if name not in state and (found := visit(name)):
            return found
    return None


EDGES = graph(MODULES)

# The packages (and top-level modules) from the bottom up: each may import only those before it, so the
# data flow reads top-down in the tree. ``wal2http`` is the package root (its ``__version__``).
PACKAGE_ORDER = (
    "wal2http", "lsn", "errors", "sizes", "deadline", "runtime", "checklist",  # leaves
    "config", "decode", "pg", "observe", "delivery", "routing", "sinks", "hook0", "backfill",  # the streaming layers
    "pipeline", "ops", "cli", "__main__",  # the run loop, then operator commands
)


def package(module: str) -> str:
    """``wal2http.pg.slot`` -> ``pg``; the root itself -> ``wal2http``."""
    return module.split(".")[1] if "." in module else module


def package_edges(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """Which packages each package imports (itself excluded)."""
    packages: dict[str, set[str]] = {package(name): set() for name in edges}
    for name, targets in edges.items():
        packages[package(name)].update(package(t) for t in targets if package(t) != package(name))
    return packages


@pytest.mark.parametrize("library", sorted(CONFINED))
def test_libraries_stay_in_their_layer(library: str) -> None:
    def uses(path: Path) -> bool:
        return any(within(target, (library,)) for target in imports(ast.parse(path.read_text())))

    offenders = sorted(name for name, path in MODULES.items() if not within(name, CONFINED[library]) and uses(path))
    assert offenders == [], f"{library} imported outside {', '.join(CONFINED[library])}"


def test_no_import_cycle() -> None:
    found = cycle(EDGES)
    assert found is None, "import cycle: " + " -> ".join(found or [])


def test_no_package_cycle() -> None:
    """Modules without cycles are not enough: two packages importing each other are one concept misplaced."""
    found = cycle(package_edges(EDGES))
    assert found is None, "package cycle: " + " -> ".join(found or [])


def test_packages_import_only_lower_packages() -> None:
    packages = package_edges(EDGES)
    assert sorted(packages) == sorted(PACKAGE_ORDER), "a package was added or removed: place it in PACKAGE_ORDER"
    rank = {name: i for i, name in enumerate(PACKAGE_ORDER)}
    upward = sorted(f"{name} -> {target}" for name, targets in packages.items() for target in targets
                    if rank[target] > rank[name])
    assert upward == [], f"imports of a higher package (PACKAGE_ORDER): {upward}"


def test_the_pipeline_needs_no_set_up_code() -> None:
    needed = closure(EDGES, "wal2http.pipeline")
    assert sorted(name for name in needed if within(name, SET_UP)) == []


def test_sinks_know_nothing_of_hook0() -> None:
    """Hook0 builds on the generic sinks, never the other way round (the sink is chosen in ops.start)."""
    assert sorted(name for name in MODULES if within(name, ("wal2http.sinks",))
                  and any(within(target, ("wal2http.hook0",)) for target in EDGES[name])) == []


def test_the_checks_catch_what_they_guard() -> None:
    """The walk sees function-level and TYPE_CHECKING imports, and the cycle finder finds a cycle."""
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import click\n"
                     "def f():\n    from wal2http.pipeline import Pipeline\n")
    assert {"click", "wal2http.pipeline"} <= set(imports(tree))
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
    # Two packages importing each other through different modules: a package cycle, no module cycle.
    modules = {"wal2http.x.a": {"wal2http.y.b"}, "wal2http.y.b": set(), "wal2http.y.c": {"wal2http.x.d"},
               "wal2http.x.d": set()}
    assert cycle(modules) is None
    assert cycle(package_edges(modules)) == ["x", "y", "x"]
