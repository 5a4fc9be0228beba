"""The database checks of --filter and --columns: old values need REPLICA IDENTITY FULL, columns must exist."""

from __future__ import annotations

from wal2http.checklist import Check, failed, ident, ok, warning
from wal2http.config.routing import RoutingConfig
from wal2http.pg.publication import PublishedTable

FILTER = "filter"
COLUMNS = "columns"
COLUMN_LISTS_VERSION = 150000  # publication column lists


def routing_checks(routing: RoutingConfig, tables: list[PublishedTable], publication: str,
                   server_version: int) -> list[Check]:
    checks: list[Check] = []
    expression = routing.filter
    if expression is not None:
        not_full = [t.quoted for t in tables if not t.full_identity]
        if expression.needs_old_row and not_full:
            checks.append(failed(
                FILTER, f"--filter {expression.text!r} reads old values (old or changed), which "
                        f"{', '.join(not_full)} do not send: their updates carry only the new row",
                " ".join(f"ALTER TABLE {t} REPLICA IDENTITY FULL;" for t in not_full)))
        else:
            checks.append(ok(FILTER, f"{expression.text!r} compiles; reads {', '.join(expression.variables)}"))
    if routing.columns:
        checks.append(columns_check(routing, tables, publication, server_version))
    return checks


def columns_check(routing: RoutingConfig, tables: list[PublishedTable], publication: str,
                  server_version: int) -> Check:
    by_name = {(t.schema, t.table): t for t in tables}
    for selection in routing.columns:
        table = by_name.get((selection.schema, selection.table))
        if table is None:
            return failed(COLUMNS, f"--columns {selection.schema}.{selection.table}: publication {publication} "
                                   "does not publish this table", "name a published table")
        unknown = [name for name in selection.names if name not in table.columns]
        if unknown:
            return failed(COLUMNS, f"--columns {table.quoted}: no column {', '.join(unknown)}",
                          f"its columns are {', '.join(table.columns)}")
    targets = ", ".join(f"{c.schema}.{c.table}" for c in routing.columns)
    if server_version < COLUMN_LISTS_VERSION:
        return ok(COLUMNS, f"kept columns of {targets} are chosen by wal2http")
    hint = " ".join(
        f"ALTER PUBLICATION {ident(publication)} SET TABLE {by_name[(c.schema, c.table)].quoted} "
        f"({', '.join(ident(n) for n in c.names)}) (add the key columns, and the publication's other tables);"
        for c in routing.columns)
    return warning(COLUMNS, f"the dropped columns of {targets} are still read from the WAL and decoded; a "
                            "publication column list (PostgreSQL 15+) would leave them on the server", hint)
