"""Operator side of backfills: queue a request (validated first), list, cancel; the run does the work."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from wal2http.config.hook0 import Hook0Mode
from wal2http.config.sections import SinkKind, SourceConfig
from wal2http.config.settings import Config
from wal2http.errors import ConfigError, DatabaseError, KeylessTable
from wal2http.pg import backfill as store
from wal2http.pg import backfill_tables as table_sql
from wal2http.pg import publication as admin
from wal2http.pg.backfill_model import REQUESTS_SCHEMA, REQUESTS_TABLE, TableSpec, Task
from wal2http.pg.connection import Connection, query, source_connection
from wal2http.pg.slot import find_slot

logger = logging.getLogger(__name__)


def backfill_refusal(config: Config) -> str | None:
    """Why a run with this configuration cannot send read events; None when it can."""
    hook0 = config.sink.hook0
    if config.sink.kind == SinkKind.HOOK0 and hook0 is not None and hook0.mode == Hook0Mode.OUTBOX:
        return ("--sink hook0 --hook0-mode outbox cannot backfill: outbox rows are events, not state; "
                "use --hook0-mode changes to send existing rows")
    return None


@dataclass(frozen=True)
class Prepared:
    """A backfill checked in full and ready to queue: nothing about it can fail but the insert itself."""

    tables: tuple[TableSpec, ...]
    skipped: tuple[KeylessTable, ...]  # left out of --all-tables: no key to read them in order
    where: str | None
    created_table: bool  # the requests table, by this preparation

    def warnings(self) -> list[str]:
        return [f"skipped {e.table}: it has neither a primary key nor a replica identity index; give it one "
                f"({e.fix}), then backfill it with --table {e.table}" for e in self.skipped]


@dataclass(frozen=True)
class Requested:
    request: int
    slot: str
    tables: tuple[TableSpec, ...]
    slot_active: bool  # a run streams from the slot now and will pick the request up
    skipped: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    resumed: tuple[tuple[str, Task], ...] = ()  # (table, the failed task it goes on from)

    def lines(self) -> list[str]:
        tables = ", ".join(t.name for t in self.tables)
        lines = [f"backfill request {self.request} queued for slot {self.slot}: {tables}"]
        lines += [f"{name}: goes on where request {task.request} stopped ({task.rows_sent} rows sent)"
                  for name, task in self.resumed]
        if not self.slot_active:
            lines.append("nothing streams from the slot now: the rows are sent once 'wal2http run' runs")
        return lines

    def as_json(self) -> dict[str, Any]:
        return {"request": self.request, "slot": self.slot, "tables": [t.name for t in self.tables],
                "skipped": list(self.skipped), "slot_active": self.slot_active,
                "resumed": {name: {"request": task.request, "rows_sent": task.rows_sent}
                            for name, task in self.resumed}}


def request(source: SourceConfig, tables: tuple[str, ...], all_tables: bool, where: str | None) -> Requested:
    """Validate every table (published, keyed, ``where`` plannable), then queue them; nothing on refusal.

    With ``all_tables``, a table without a key is skipped (Requested.warnings says so), not refused. A
    table whose last request failed part-way goes on where it stopped (``enqueue`` with ``resume``).
    """
    if all_tables and tables:
        raise ConfigError("--all-tables cannot be combined with --table")
    if not all_tables and not tables:
        raise ConfigError("name the tables to backfill with --table SCHEMA.TABLE (repeatable) or --all-tables")
    if where is not None:
        table_sql.check_where(where)
    with source_connection(source) as conn:
        prepared = prepare(conn, source, tables, where)
        slot = find_slot(conn, source.slot)
        if slot is None:
            raise ConfigError(f"replication slot {source.slot!r} does not exist: create it with "
                              "'wal2http slot create --backfill', which also queues this backfill")
        return enqueue(conn, source, prepared, slot.active_pid is not None, resume=True)


def prepare(conn: Connection, source: SourceConfig, tables: tuple[str, ...], where: str | None) -> Prepared:
    """Check everything a backfill of ``tables`` (none: every published table) needs, before anything is queued.

    Every table published, keyed (or, for every published table, skipped without a key), readable, and
    ``where`` plannable; the requests table created or writable. The requests table is the one thing it
    may create (Prepared.created_table).
    """
    if admin.find_publication(conn, source.publication) is None:
        raise ConfigError(f"publication {source.publication!r} does not exist: create it first "
                          "('wal2http slot create --table ...')")
    # (schema, table) pairs from the catalogue, never joined and split again: a name may hold a dot.
    published = [(s, t) for s, t in admin.published_tables(conn, source.publication)
                 if (s, t) != (REQUESTS_SCHEMA, REQUESTS_TABLE)] if not tables else []
    if not tables and not published:
        raise ConfigError(f"publication {source.publication} publishes no table: nothing to backfill")
    specs: list[TableSpec] = []
    skipped: list[KeylessTable] = []
    for name in tables or published:
        try:
            spec = (table_sql.describe_text(conn, source.publication, name) if isinstance(name, str)
                    else table_sql.describe(conn, source.publication, *name))
        except KeylessTable as e:
            if tables:  # named by the operator: refused
                raise
            skipped.append(e)
            continue
        if spec.name in {s.name for s in specs}:
            continue
        if where is not None:
            table_sql.plan_where(conn, spec, where)
        specs.append(spec)
    if not specs:
        raise ConfigError(f"nothing to backfill: no published table has a primary key or replica identity "
                          f"index ({', '.join(e.table for e in skipped)}); give one a key ({skipped[0].fix})")
    unreadable = set(store.unreadable_tables(conn, source.publication)) & {s.name for s in specs}
    if unreadable:
        role = query(conn, "SELECT current_user::text", what="read the role")[0][0]
        listed = ", ".join(sorted(unreadable))
        raise DatabaseError(f"role {role} cannot SELECT {listed}, so it cannot backfill them: GRANT SELECT ON "
                            f"{listed} TO {role};")
    created = store.create_requests_table(conn)
    return Prepared(tuple(specs), tuple(skipped), where, created)


def enqueue(conn: Connection, source: SourceConfig, prepared: Prepared, slot_active: bool, *,
            resume: bool = False) -> Requested:
    """Queue what ``prepare`` checked: one transaction, all its tables or none.

    With ``resume``, a table whose latest request of this slot failed part-way, under the same
    shape and ``where``, goes on after the last key it confirmed (``store.resumable``). Never for a
    new slot: it starts a new history, in which no earlier row was sent.
    """
    queued = [(spec, table_sql.estimate_rows(conn, spec.oid),
               store.resumable(conn, source.slot, spec, prepared.where) if resume else None)
              for spec in prepared.tables]
    number = store.insert_request(conn, source.slot, source.publication, queued, prepared.where)
    resumed = tuple((spec.name, task) for spec, _, task in queued if task is not None)
    logger.info("backfill request %d queued: %s", number, ", ".join(s.name for s in prepared.tables))
    for name, task in resumed:
        logger.info("backfill of %s goes on where request %d stopped (%d rows sent)", name, task.request,
                    task.rows_sent)
    return Requested(number, source.slot, prepared.tables, slot_active,
                     tuple(e.table for e in prepared.skipped), tuple(prepared.warnings()), resumed)


def pending_request(conn: Connection, slot: str) -> int | None:
    """The oldest request of ``slot`` with a table not finished yet; None when every one finished."""
    return next((t.request for t in store.tasks(conn, slot) if not t.state.finished), None)


def tasks(source: SourceConfig, request_id: int | None = None) -> list[Task]:
    with source_connection(source) as conn:
        return store.tasks(conn, source.slot, request_id)


def cancel(source: SourceConfig, request_id: int, tables: tuple[str, ...] = ()) -> list[Task]:
    """Cancel a request's unfinished tables (only ``tables`` of them when named); ConfigError for an unknown one."""
    with source_connection(source) as conn:
        found = store.tasks(conn, source.slot, request_id)
        if not found:
            raise ConfigError(f"no backfill request {request_id} for slot {source.slot}")
        chosen = None
        if tables:
            chosen = [t.id for t in found if t.name in tables or t.table in tables]
            known = {t.name for t in found} | {t.table for t in found}
            unknown = [name for name in tables if name not in known]
            if unknown:
                raise ConfigError(f"{', '.join(unknown)} is not a table of backfill request {request_id} "
                                  f"(its tables: {', '.join(t.name for t in found)})")
        return store.cancel(conn, request_id, chosen)


def unfinished(source: SourceConfig) -> list[Task]:
    """The slot's queued and running backfills (``slot status``); none without the requests table."""
    return [t for t in tasks(source) if not t.state.finished]


def abandon(conn: Connection, slot: str) -> list[Task]:
    """Cancel the slot's unfinished backfills (``slot drop``, first): their rows come through the slot."""
    found = [t for t in store.tasks(conn, slot) if not t.state.finished]
    cancelled: list[Task] = []
    for request in sorted({t.request for t in found}):
        cancelled.extend(store.cancel(conn, request))
    return cancelled


def describe(task: Task) -> str:
    """One line for ``slot status`` and ``slot drop``."""
    estimate = "" if task.rows_estimated is None else f" of about {task.rows_estimated}"
    return f"backfill of {task.name} {task.state.value}: {task.rows_sent}{estimate} rows sent (request {task.request})"
