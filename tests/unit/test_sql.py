"""No SQL is built by string formatting: values go as parameters, identifiers through psycopg2.sql."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "wal2http"
EXECUTORS = {"execute", "executemany", "mogrify"}
HELPERS = {"query": 1}  # wal2http.pg.connection.query(conn, statement, ...): position of the statement


def _is_literal(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _is_sql_composable(node: ast.expr) -> bool:
    """``sql.SQL("...").format(...)``, ``sql.SQL(...)``, ``sql.Identifier(...)``, ``sql.Composed(...)``."""
    while (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("format", "join")
    ):
        node = node.func.value
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "sql"
    )


def _helper_parameters(tree: ast.Module) -> set[str]:
    """The statement parameters of the helpers: their callers' statements are checked instead."""
    return {
        node.args.args[HELPERS[node.name]].arg
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name in HELPERS
    }


def _assigned(tree: ast.Module) -> dict[str, list[ast.expr]]:
    """Every value assigned to each plain name in a module (module constants and locals alike)."""
    values: dict[str, list[ast.expr]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    values.setdefault(target.id, []).append(node.value)
    return values


def _statement(node: ast.Call) -> ast.expr | None:
    """The SQL argument of a cursor method or of a helper call, else None."""
    func = node.func
    if isinstance(func, ast.Attribute) and func.attr in EXECUTORS and node.args:
        return node.args[0]
    name = func.id if isinstance(func, ast.Name) else None
    if name in HELPERS and len(node.args) > HELPERS[name]:
        return node.args[HELPERS[name]]
    return None


def queries() -> list[tuple[str, ast.expr]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        parameters, assigned = _helper_parameters(tree), _assigned(tree)
        for node in ast.walk(tree):
            statement = _statement(node) if isinstance(node, ast.Call) else None
            if statement is None:
                continue
            if isinstance(statement, ast.Name) and statement.id in parameters:
                continue
            where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
            if isinstance(statement, ast.Name) and statement.id in assigned:
                found.extend((where, value) for value in assigned[statement.id])
            else:
                found.append((where, statement))
    return found


QUERIES = queries()


def test_the_scan_sees_the_queries() -> None:
    for module in ("wal2http/pg/slot.py", "wal2http/pg/publication.py"):
        assert any(where.startswith(module) for where, _ in QUERIES), module
    assert not any(where.startswith("wal2http/pg/connection.py") for where, _ in QUERIES)  # the helper


def test_the_scan_catches_sql_built_from_text() -> None:
    bad = ast.parse('query(conn, "SELECT * FROM " + table, what="x")').body[0]
    assert isinstance(bad, ast.Expr) and isinstance(bad.value, ast.Call)
    statement = _statement(bad.value)
    assert statement is not None and not _is_literal(statement) and not _is_sql_composable(statement)


@pytest.mark.parametrize(("where", "query"), QUERIES, ids=[w for w, _ in QUERIES])
def test_query_is_a_literal_or_composed_with_psycopg2_sql(where: str, query: ast.expr) -> None:
    assert _is_literal(query) or _is_sql_composable(query), (
        f"{where}: SQL built from text ({ast.unparse(query)[:80]}); pass values as parameters and "
        "identifiers with psycopg2.sql.Identifier"
    )
