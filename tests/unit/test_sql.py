"""No SQL is built by string formatting: values go as parameters, identifiers through psycopg2.sql."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "wal2http"
EXECUTORS = {"execute", "executemany", "mogrify"}


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


def queries() -> list[tuple[str, ast.expr]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in EXECUTORS
                and node.args
            ):
                found.append((f"{path.relative_to(PACKAGE.parent)}:{node.lineno}", node.args[0]))
    return found


QUERIES = queries()


def test_the_scan_sees_the_queries() -> None:
    assert any(where.startswith("wal2http/pg/slot.py") for where, _ in QUERIES)


@pytest.mark.parametrize(("where", "query"), QUERIES, ids=[w for w, _ in QUERIES])
def test_query_is_a_literal_or_composed_with_psycopg2_sql(where: str, query: ast.expr) -> None:
    literal = isinstance(query, ast.Constant) and isinstance(query.value, str)
    assert literal or _is_sql_composable(query), (
        f"{where}: SQL built from text ({ast.unparse(query)[:80]}); pass values as parameters and "
        "identifiers with psycopg2.sql.Identifier"
    )
