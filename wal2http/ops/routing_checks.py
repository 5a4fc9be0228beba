"""The database checks of --filter, --columns, templates and --routes: old values need FULL, columns exist."""

from __future__ import annotations

from wal2http.checklist import Check, failed, ident, ok, warning
from wal2http.config.routing import Columns, RoutingConfig, parse_template
from wal2http.config.sections import HttpConfig
from wal2http.pg.backfill_model import REQUESTS_SCHEMA, REQUESTS_TABLE
from wal2http.pg.publication import PublishedTable

FILTER = "filter"
TEMPLATES = "templates"
COLUMNS = "columns"
COLUMN_LISTS_VERSION = 150000  # publication column lists


def routing_checks(routing: RoutingConfig, http: HttpConfig | None, tables: list[PublishedTable],
                   publication: str, server_version: int) -> list[Check]:
    """The filters (old values need FULL), the templates' key columns, and --columns, against the tables."""
    checks: list[Check] = []
    # wal2http's own backfill table is published under FOR ALL TABLES, but its changes are never events.
    tables = [t for t in tables if (t.schema, t.table) != (REQUESTS_SCHEMA, REQUESTS_TABLE)]
    not_full = [t.quoted for t in tables if not t.full_identity]
    for where, expression in routing.expressions():
        if expression.needs_old_row and not_full:
            checks.append(failed(
                FILTER, f"{where}: {expression.text!r} reads old values (old or changed), which "
                        f"{', '.join(not_full)} do not send: their updates carry only the new row",
                " ".join(f"ALTER TABLE {t} REPLICA IDENTITY FULL;" for t in not_full)))
        else:
            checks.append(ok(FILTER, f"{where}: {expression.text!r} compiles; reads "
                                     f"{', '.join(expression.variables) or 'nothing'}"))
    templates = template_check(routing, http, tables)
    if templates is not None:
        checks.append(templates)
    if routing.columns:
        checks.append(columns_check(routing.columns, tables, publication, server_version))
    for route in routing.routes:
        if route.columns:
            checks.append(columns_check(route.columns, tables, publication, server_version, f"route {route.name!r}"))
    return checks


def template_check(routing: RoutingConfig, http: HttpConfig | None, tables: list[PublishedTable]) -> Check | None:
    """Every ``{key.COLUMN}`` must name a column some published table has (else no event could fill it)."""
    destinations = [("--http-url", http)] if http is not None and not routing.routes else []
    destinations.extend((f"route {r.name!r}", r.http) for r in routing.routes)
    columns = {name for t in tables for name in t.columns}
    used = False
    for where, settings in destinations:
        texts = [settings.url, *(h.value for h in settings.headers if isinstance(h.value, str))]
        for text in texts:
            for name in parse_template(text, where).key_columns:
                used = True
                if name not in columns:
                    return failed(TEMPLATES, f"{where}: {{key.{name}}} in {text!r}: no published table has a "
                                             f"column {name}", "name a key column of a published table")
    return ok(TEMPLATES, "every {key.COLUMN} names a column of a published table") if used else None


def columns_check(selections: tuple[Columns, ...], tables: list[PublishedTable], publication: str,
                  server_version: int, where: str = "--columns") -> Check:
    by_name = {(t.schema, t.table): t for t in tables}
    for selection in selections:
        table = by_name.get((selection.schema, selection.table))
        if table is None:
            return failed(COLUMNS, f"{where} {selection.schema}.{selection.table}: publication {publication} "
                                   "does not publish this table", "name a published table")
        unknown = [name for name in selection.names if name not in table.columns]
        if unknown:
            return failed(COLUMNS, f"{where} {table.quoted}: no column {', '.join(unknown)}",
                          f"its columns are {', '.join(table.columns)}")
    targets = ", ".join(f"{c.schema}.{c.table}" for c in selections)
    if server_version < COLUMN_LISTS_VERSION:
        return ok(COLUMNS, f"kept columns of {targets} are chosen by wal2http")
    hint = " ".join(
        f"ALTER PUBLICATION {ident(publication)} SET TABLE {by_name[(c.schema, c.table)].quoted} "
        f"({', '.join(ident(n) for n in c.names)}) (add the key columns, and the publication's other tables);"
        for c in selections)
    return warning(COLUMNS, f"the dropped columns of {targets} are still read from the WAL and decoded; a "
                            "publication column list (PostgreSQL 15+) would leave them on the server", hint)
