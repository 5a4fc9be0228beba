"""Backfill SQL: the requests table (queue, states, progress, cancel) and who may use it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from psycopg2 import sql

from wal2http.errors import DatabaseError
from wal2http.pg import privileges
from wal2http.pg.backfill_model import (
    REQUESTS_SCHEMA,
    REQUESTS_TABLE,
    State,
    TableSpec,
    Task,
)
from wal2http.pg.connection import Connection, query

logger = logging.getLogger(__name__)


REQUESTS = sql.Identifier(REQUESTS_SCHEMA, REQUESTS_TABLE)
REQUESTS_NAME = f"{REQUESTS_SCHEMA}.{REQUESTS_TABLE}"
UNFINISHED = [State.QUEUED.value, State.RUNNING.value]  # a parameter: state = ANY(%s)

_CREATE = sql.SQL("""
CREATE TABLE IF NOT EXISTS {} (
    id bigserial PRIMARY KEY,
    request bigint NOT NULL,
    slot name NOT NULL,
    publication name NOT NULL,
    schema_name name NOT NULL,
    table_name name NOT NULL,
    where_condition text,
    state text NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    last_key text[],
    rows_sent bigint NOT NULL DEFAULT 0,
    rows_estimated bigint,
    chunks bigint NOT NULL DEFAULT 0,
    reason text,
    requested_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz,
    shape text
)""").format(REQUESTS)
# A requests table created before ``shape`` existed gets it when its owner next requests a backfill;
# until then no request resumes another, and every column is read through to_jsonb (never missing).
_ADD_SHAPE = sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS shape text").format(REQUESTS)

# Statements name the requests table ``r``.
_COLUMNS = sql.SQL("r.id, r.request, r.slot::text, r.schema_name::text, r.table_name::text, r.where_condition,"
                   " r.state, r.last_key, r.rows_sent, r.rows_estimated, r.chunks, r.reason, r.requested_at,"
                   " r.started_at, r.finished_at, to_jsonb(r) ->> 'shape'")


def _task(row: Sequence[Any]) -> Task:
    return Task(id=row[0], request=row[1], slot=row[2], schema=row[3], table=row[4], where=row[5],
                state=State(row[6]), last_key=tuple(row[7]) if row[7] is not None else None,
                rows_sent=row[8], rows_estimated=row[9], chunks=row[10], reason=row[11],
                requested_at=row[12], started_at=row[13], finished_at=row[14], shape=row[15])


# -- the requests table ---------------------------------------------------------------------------


def requests_table_exists(conn: Connection) -> bool:
    # Not to_regclass(): naming a table in a schema the role may not use is an error, not "missing".
    rows = query(conn, "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                       " WHERE n.nspname = %s AND c.relname = %s)", (REQUESTS_SCHEMA, REQUESTS_TABLE),
                 what=f"look up {REQUESTS_NAME}")
    return bool(rows[0][0])


def create_requests_table(conn: Connection) -> bool:
    """Make sure this role can queue requests: the table created when missing (with schema wal2http when
    the role may create it), or DatabaseError naming the statement that allows it, before anything is done.
    True when the table was created."""
    access = privileges.requests_access(conn)
    refusal = access.migration() or access.queue_refusal()
    if refusal is not None:
        raise DatabaseError("; ".join(refusal))
    if access.exists:
        if not has_shape_column(conn):
            try:
                query(conn, _ADD_SHAPE, what=f"add column shape to {REQUESTS_NAME}")
            except DatabaseError as e:
                logger.warning("%s; until its owner runs %s, no request goes on where a failed one stopped",
                               e, _ADD_SHAPE.as_string(conn))
        return False
    statement = _CREATE
    if not access.schema_exists:  # one simple query: schema and table both, or neither
        statement = sql.SQL("CREATE SCHEMA IF NOT EXISTS {}; COMMENT ON SCHEMA {} IS {}; {}").format(
            sql.Identifier(REQUESTS_SCHEMA), sql.Identifier(REQUESTS_SCHEMA), sql.Literal(_SCHEMA_COMMENT), _CREATE)
    query(conn, statement, what=f"create {REQUESTS_NAME} (a DBA can create it: see README, Backfilling)")
    logger.info("created %s", REQUESTS_NAME)
    return True


# Marks the schema as made by create_requests_table, so that undoing it never drops a DBA's schema.
_SCHEMA_COMMENT = "wal2http's own tables (created by wal2http)"


def drop_requests_table(conn: Connection) -> str:
    """Undo create_requests_table (``slot create --backfill`` taking back what it did); what was dropped."""
    query(conn, sql.SQL("DROP TABLE IF EXISTS {}").format(REQUESTS), what=f"drop {REQUESTS_NAME}")
    made = query(conn, "SELECT obj_description(n.oid, 'pg_namespace') = %s AND NOT EXISTS"
                       " (SELECT 1 FROM pg_class c WHERE c.relnamespace = n.oid)"
                       " FROM pg_namespace n WHERE n.nspname = %s", (_SCHEMA_COMMENT, REQUESTS_SCHEMA),
                 what=f"look up schema {REQUESTS_SCHEMA}")
    if not (made and made[0][0]):
        return f"table {REQUESTS_NAME}"
    query(conn, sql.SQL("DROP SCHEMA IF EXISTS {}").format(sql.Identifier(REQUESTS_SCHEMA)),
          what=f"drop schema {REQUESTS_SCHEMA}")
    return f"table {REQUESTS_NAME} and schema {REQUESTS_SCHEMA}"


def has_shape_column(conn: Connection) -> bool:
    # By names in the catalogue, as requests_table_exists: to_regclass() fails in a schema the role may not use.
    rows = query(conn, "SELECT EXISTS (SELECT FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
                       " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s"
                       " AND a.attname = 'shape' AND NOT a.attisdropped)", (REQUESTS_SCHEMA, REQUESTS_TABLE),
                 what=f"read the columns of {REQUESTS_NAME}")
    return bool(rows[0][0])


def resumable(conn: Connection, slot: str, spec: TableSpec, where: str | None) -> Task | None:
    """The slot's latest task of this table when it failed part-way under the same shape and condition.

    Its rows up to its last key were sent, and their changes since streamed (the same slot): a new
    request goes on after that key instead of reading them again.
    """
    if not requests_table_exists(conn):
        return None
    rows = query(conn, sql.SQL("SELECT {} FROM {} r WHERE r.slot = %s AND r.schema_name = %s AND r.table_name = %s"
                               " ORDER BY r.id DESC LIMIT 1").format(_COLUMNS, REQUESTS),
                 (slot, spec.schema, spec.table), what=f"read {REQUESTS_NAME}")
    if not rows:
        return None
    task = _task(rows[0])
    if (task.state is State.FAILED and task.last_key is not None and task.where == where
            and task.shape == spec.signature()):
        return task
    return None


def insert_request(conn: Connection, slot: str, publication: str,
                   tables: list[tuple[TableSpec, int | None, Task | None]], where: str | None) -> int:
    """Queue one row per table in one transaction; the request id is the first row's id.

    A table given a failed task goes on from that task's last key and counts (see ``resumable``).
    """
    rows = query(conn, sql.SQL("SELECT nextval(pg_get_serial_sequence({}, 'id'))").format(
        sql.Literal(REQUESTS.as_string(conn))), what="number the backfill request")
    request = int(rows[0][0])
    shaped = has_shape_column(conn)
    statements = []
    for n, (spec, estimate, resumed) in enumerate(tables):
        values = [sql.Literal(request) if n == 0 else sql.SQL("DEFAULT"), sql.Literal(request),
                  sql.Literal(slot), sql.Literal(publication), sql.Literal(spec.schema), sql.Literal(spec.table),
                  sql.Literal(where), sql.Literal(estimate),
                  sql.Literal(list(resumed.last_key) if resumed and resumed.last_key is not None else None),
                  sql.Literal(resumed.rows_sent if resumed else 0), sql.Literal(resumed.chunks if resumed else 0)]
        columns: sql.Composable = sql.SQL("id, request, slot, publication, schema_name, table_name, where_condition,"
                          " rows_estimated, last_key, rows_sent, chunks")
        if shaped:
            columns = columns + sql.SQL(", shape")
            values.append(sql.Literal(spec.signature()))
        statements.append(sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            REQUESTS, columns, sql.SQL(", ").join(values)))
    # One simple query: PostgreSQL runs its statements as one transaction, all rows or none.
    query(conn, sql.SQL("; ").join(statements), what="queue the backfill request")
    return request


def tasks(conn: Connection, slot: str | None = None, request: int | None = None) -> list[Task]:
    """Requested tables, oldest first; none when the requests table does not exist."""
    if not requests_table_exists(conn):
        return []
    try:
        rows = query(conn, sql.SQL("SELECT {} FROM {} r WHERE (%(slot)s::text IS NULL OR r.slot = %(slot)s)"
                                   " AND (%(request)s::bigint IS NULL OR r.request = %(request)s) ORDER BY r.id"
                                   ).format(_COLUMNS, REQUESTS), {"slot": slot, "request": request},
                     what=f"read {REQUESTS_NAME}")
    except DatabaseError:
        refusal = privileges.requests_access(conn).read_refusal()  # a refusal names the GRANT
        if refusal is None:
            raise
        raise DatabaseError("; ".join(refusal)) from None
    return [_task(row) for row in rows]


def next_task(conn: Connection, slot: str) -> Task | None:
    """The table to work on next for this slot: a running one first, else the oldest queued."""
    if not requests_table_exists(conn):
        return None
    rows = query(conn, sql.SQL("SELECT {} FROM {} r WHERE r.slot = %s AND r.state = ANY(%s)"
                               " ORDER BY r.state = %s DESC, r.id LIMIT 1").format(_COLUMNS, REQUESTS),
                 (slot, UNFINISHED, State.RUNNING.value), what=f"read {REQUESTS_NAME}")
    return _task(rows[0]) if rows else None


def start_task(conn: Connection, task_id: int, estimate: int | None, shape: str) -> Task | None:
    """Mark a table running under ``shape``; None when it was cancelled meanwhile.

    Its last key is forgotten (the table is read from the start) when it was stored under another
    shape: the table was altered (its key order, say) while no run was reading it.
    """
    restart = sql.SQL("")
    if has_shape_column(conn):
        restart = sql.SQL(", last_key = CASE WHEN r.shape IS DISTINCT FROM %(shape)s THEN NULL ELSE r.last_key END,"
                          " shape = %(shape)s")
    # A wait it noted before a restart of ``run`` is over; the new run notes its own.
    rows = query(conn, sql.SQL("UPDATE {} r SET state = %(running)s, started_at = coalesce(r.started_at, now()),"
                               " reason = NULL,"
                               " rows_estimated = coalesce(%(estimate)s, r.rows_estimated){}"
                               " WHERE r.id = %(id)s AND r.state = ANY(%(unfinished)s) RETURNING {}").format(
        REQUESTS, restart, _COLUMNS), {"running": State.RUNNING.value, "estimate": estimate, "id": task_id,
                                       "unfinished": UNFINISHED, "shape": shape}, what="start a backfill")
    return _task(rows[0]) if rows else None


def restart_task(conn: Connection, task_id: int, shape: str) -> bool:
    """Read a running table again from the start under a new shape; False when no longer running."""
    rows = query(conn, sql.SQL("UPDATE {} r SET last_key = NULL{} WHERE r.id = %(id)s AND r.state = %(running)s"
                               " RETURNING r.id").format(
        REQUESTS, sql.SQL(", shape = %(shape)s") if has_shape_column(conn) else sql.SQL("")),
        {"id": task_id, "running": State.RUNNING.value, "shape": shape}, what="restart a backfill")
    return bool(rows)


def note_wait(conn: Connection, task_id: int, reason: str | None) -> None:
    """Say (or stop saying) in a running table's reason what it waits for."""
    query(conn, sql.SQL("UPDATE {} SET reason = %s WHERE id = %s AND state = %s").format(REQUESTS),
          (reason, task_id, State.RUNNING.value), what="note a backfill wait")


def lock_holders(conn: Connection, oid: int) -> str:
    """Who holds a lock on the table that a select waits for: ``AccessExclusiveLock held by pid N``, or ""."""
    rows = query(conn, "SELECT string_agg(format('%%s held by pid %%s', l.mode, l.pid), ', ' ORDER BY l.pid)"
                       " FROM pg_locks l JOIN pg_database d ON d.oid = l.database AND d.datname = current_database()"
                       " WHERE l.locktype = 'relation' AND l.relation = %s AND l.granted"
                       " AND l.mode = 'AccessExclusiveLock'", (oid,), what="read who holds the table's lock")
    return str(rows[0][0]) if rows and rows[0][0] else ""


def record_progress(conn: Connection, task_id: int, last_key: tuple[str | None, ...] | None, rows: int,
                    done: bool) -> bool:
    """Store a confirmed chunk; False when the table is no longer running (cancelled)."""
    rows_updated = query(conn, sql.SQL(
        "UPDATE {} SET last_key = %s, rows_sent = rows_sent + %s, chunks = chunks + 1,"
        " state = CASE WHEN %s THEN %s ELSE state END,"
        " finished_at = CASE WHEN %s THEN now() ELSE finished_at END"
        " WHERE id = %s AND state = %s RETURNING id").format(REQUESTS),
        (list(last_key) if last_key is not None else None, rows, done, State.DONE.value, done, task_id,
         State.RUNNING.value),
        what="record backfill progress")
    return bool(rows_updated)


def finish_task(conn: Connection, task_id: int, state: State, reason: str | None) -> None:
    query(conn, sql.SQL("UPDATE {} SET state = %s, reason = %s, finished_at = now()"
                        " WHERE id = %s AND state = ANY(%s)").format(REQUESTS),
          (state.value, reason, task_id, UNFINISHED), what="end a backfill")


def cancel(conn: Connection, request: int, task_ids: list[int] | None = None) -> list[Task]:
    """Cancel a request's unfinished tables (only ``task_ids`` of them when given); the rows changed."""
    if not requests_table_exists(conn):
        return []
    rows = query(conn, sql.SQL("UPDATE {} r SET state = %s, finished_at = now(), reason = %s"
                               " WHERE r.request = %s AND r.state = ANY(%s)"
                               " AND (%s::bigint[] IS NULL OR r.id = ANY(%s)) RETURNING {}").format(REQUESTS, _COLUMNS),
                 (State.CANCELLED.value, State.CANCELLED.value, request, UNFINISHED, task_ids, task_ids),
                 what="cancel the backfill")
    return [_task(row) for row in rows]


def unreadable_tables(conn: Connection, publication: str) -> list[str]:
    """Published tables the connected role may not SELECT (a backfill of them would fail)."""
    rows = query(conn, "SELECT format('%%I.%%I', schemaname, tablename) FROM pg_publication_tables"
                       " WHERE pubname = %s AND NOT has_table_privilege(format('%%I.%%I', schemaname, tablename),"
                       " 'SELECT') ORDER BY 1", (publication,), what="check SELECT privileges")
    return [row[0] for row in rows]
