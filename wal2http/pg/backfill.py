"""Backfill SQL: the requests table, validating a request, chunk selects, watermarks and progress."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from wal2http.decode.pgoutput import Column
from wal2http.errors import ConfigError, DatabaseError, KeylessTable
from wal2http.pg.backfill_model import (
    REQUESTS_SCHEMA,
    REQUESTS_TABLE,
    WATERMARK_PREFIX,
    Row,
    State,
    TableSpec,
    Task,
)
from wal2http.pg.catalog import IDENTITY_SQL_COLUMNS, base_types, identity_columns, row_identity
from wal2http.pg.connection import Connection, Cursor, error_text, execute, query
from wal2http.pg.snapshot import Snapshot

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
    finished_at timestamptz
)""").format(REQUESTS)

_COLUMNS = sql.SQL("id, request, slot::text, schema_name::text, table_name::text, where_condition, state, last_key,"
                   " rows_sent, rows_estimated, chunks, reason, requested_at, started_at, finished_at")


def _task(row: Sequence[Any]) -> Task:
    return Task(id=row[0], request=row[1], slot=row[2], schema=row[3], table=row[4], where=row[5],
                state=State(row[6]), last_key=tuple(row[7]) if row[7] is not None else None,
                rows_sent=row[8], rows_estimated=row[9], chunks=row[10], reason=row[11],
                requested_at=row[12], started_at=row[13], finished_at=row[14])


# -- the requests table ---------------------------------------------------------------------------


def requests_table_exists(conn: Connection) -> bool:
    rows = query(conn, "SELECT to_regclass(%s) IS NOT NULL", (REQUESTS.as_string(conn),),
                 what=f"look up {REQUESTS_NAME}")
    return bool(rows[0][0])


def create_requests_table(conn: Connection) -> bool:
    """Create the requests table when missing (needs CREATE on schema public the first time); True if created.

    An existing table the role may not queue in is refused here, before anything else is done.
    """
    if requests_table_exists(conn):
        rows = query(conn, "SELECT has_table_privilege(%s, 'INSERT'), has_sequence_privilege("
                           "pg_get_serial_sequence(%s, 'id'), 'USAGE'), current_user::text",
                     (REQUESTS.as_string(conn), REQUESTS.as_string(conn)), what=f"check privileges on {REQUESTS_NAME}")
        insert, usage, role = rows[0]
        if not (insert and usage):
            raise DatabaseError(f"role {role} may not queue backfills in {REQUESTS_NAME}: its owner can allow it: "
                                f"GRANT SELECT, INSERT, UPDATE ON {REQUESTS_NAME} TO {role}; GRANT USAGE ON "
                                f"SEQUENCE {REQUESTS_NAME}_id_seq TO {role};")
        return False
    query(conn, _CREATE, what=f"create {REQUESTS_NAME} (a DBA can create it: see README, Backfilling)")
    logger.info("created %s", REQUESTS_NAME)
    return True


def drop_requests_table(conn: Connection) -> None:
    """Undo create_requests_table (``slot create --backfill`` taking back what it did)."""
    query(conn, sql.SQL("DROP TABLE IF EXISTS {}").format(REQUESTS), what=f"drop {REQUESTS_NAME}")


def insert_request(conn: Connection, slot: str, publication: str, tables: list[tuple[TableSpec, int | None]],
                   where: str | None) -> int:
    """Queue one row per table in one transaction; the request id is the first row's id."""
    rows = query(conn, sql.SQL("SELECT nextval(pg_get_serial_sequence({}, 'id'))").format(
        sql.Literal(REQUESTS.as_string(conn))), what="number the backfill request")
    request = int(rows[0][0])
    statements = []
    for n, (spec, estimate) in enumerate(tables):
        statements.append(sql.SQL(
            "INSERT INTO {} (id, request, slot, publication, schema_name, table_name, where_condition,"
            " rows_estimated) VALUES ({}, {}, {}, {}, {}, {}, {}, {})").format(
            REQUESTS, sql.Literal(request) if n == 0 else sql.SQL("DEFAULT"), sql.Literal(request),
            sql.Literal(slot), sql.Literal(publication), sql.Literal(spec.schema), sql.Literal(spec.table),
            sql.Literal(where), sql.Literal(estimate)))
    # One simple query: PostgreSQL runs its statements as one transaction, all rows or none.
    query(conn, sql.SQL("; ").join(statements), what="queue the backfill request")
    return request


def tasks(conn: Connection, slot: str | None = None, request: int | None = None) -> list[Task]:
    """Requested tables, oldest first; none when the requests table does not exist."""
    if not requests_table_exists(conn):
        return []
    rows = query(conn, sql.SQL("SELECT {} FROM {} WHERE (%(slot)s::text IS NULL OR slot = %(slot)s)"
                               " AND (%(request)s::bigint IS NULL OR request = %(request)s) ORDER BY id").format(
        _COLUMNS, REQUESTS), {"slot": slot, "request": request}, what=f"read {REQUESTS_NAME}")
    return [_task(row) for row in rows]


def next_task(conn: Connection, slot: str) -> Task | None:
    """The table to work on next for this slot: a running one first, else the oldest queued."""
    if not requests_table_exists(conn):
        return None
    rows = query(conn, sql.SQL("SELECT {} FROM {} WHERE slot = %s AND state = ANY(%s)"
                               " ORDER BY state = %s DESC, id LIMIT 1").format(_COLUMNS, REQUESTS),
                 (slot, UNFINISHED, State.RUNNING.value), what=f"read {REQUESTS_NAME}")
    return _task(rows[0]) if rows else None


def start_task(conn: Connection, task_id: int, estimate: int | None) -> Task | None:
    """Mark a table running; None when it was cancelled meanwhile."""
    rows = query(conn, sql.SQL("UPDATE {} SET state = %s, started_at = coalesce(started_at, now()),"
                               " rows_estimated = coalesce(%s, rows_estimated)"
                               " WHERE id = %s AND state = ANY(%s) RETURNING {}").format(REQUESTS, _COLUMNS),
                 (State.RUNNING.value, estimate, task_id, UNFINISHED), what="start a backfill")
    return _task(rows[0]) if rows else None


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
    rows = query(conn, sql.SQL("UPDATE {} SET state = %s, finished_at = now(), reason = %s"
                               " WHERE request = %s AND state = ANY(%s) AND (%s::bigint[] IS NULL OR id = ANY(%s))"
                               " RETURNING {}").format(REQUESTS, _COLUMNS),
                 (State.CANCELLED.value, State.CANCELLED.value, request, UNFINISHED, task_ids, task_ids),
                 what="cancel the backfill")
    return [_task(row) for row in rows]


def unreadable_tables(conn: Connection, publication: str) -> list[str]:
    """Published tables the connected role may not SELECT (a backfill of them would fail)."""
    rows = query(conn, "SELECT format('%%I.%%I', schemaname, tablename) FROM pg_publication_tables"
                       " WHERE pubname = %s AND NOT has_table_privilege(format('%%I.%%I', schemaname, tablename),"
                       " 'SELECT') ORDER BY 1", (publication,), what="check SELECT privileges")
    return [row[0] for row in rows]


# -- what a table looks like ----------------------------------------------------------------------


def describe(conn: Connection, publication: str, name: str) -> TableSpec:
    """The table as the publication streams it; ConfigError with the fix when it cannot be backfilled.

    ``name`` is ``schema.table`` or ``table``, taken literally (case kept), as ``slot create`` takes it.
    """
    schema, dot, table = name.partition(".")
    if not schema or (dot and not table):
        raise ConfigError(f"invalid table name {name!r}: use schema.table or table")
    identifier = sql.Identifier(schema, table) if dot else sql.Identifier(schema)
    rows = query(conn, "SELECT c.oid, n.nspname::text, c.relname::text, c.relreplident::text, c.relkind::text"
                       " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)",
                 (identifier.as_string(conn),), what=f"look up table {name!r}")
    if not rows or rows[0][4] not in ("r", "p"):
        raise ConfigError(f"table {name!r} does not exist (names are case-sensitive; use SCHEMA.TABLE)")
    return describe_oid(conn, publication, rows[0][0])


def describe_oid(conn: Connection, publication: str, oid: int) -> TableSpec:
    rows = query(conn, "SELECT n.nspname::text, c.relname::text, c.relreplident::text FROM pg_class c"
                       " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s",
                 (oid,), what=f"look up table OID {oid}")
    if not rows:
        raise ConfigError(f"table OID {oid} does not exist any more (dropped)")
    schema, table, replident = rows[0]
    name = f"{schema}.{table}"
    new_style = conn.server_version >= 150000  # row filters and column lists
    published = query(conn, sql.SQL("SELECT {} FROM pg_publication_tables"
                                    " WHERE pubname = %s AND schemaname = %s AND tablename = %s").format(
        sql.SQL("attnames::text[], rowfilter" if new_style else "NULL::text[], NULL::text")),
        (publication, schema, table), what=f"read publication {publication!r}")
    if not published:
        raise ConfigError(f"table {name} is not published by publication {publication}: a backfill sends only "
                          f"what the stream sends; add it (ALTER PUBLICATION {publication} ADD TABLE {name}) "
                          "or name a published table")
    attnames, row_filter = published[0]
    columns = query(conn, "SELECT a.attname::text, a.atttypid::bigint, a.atttypmod, t.typname::text"
                          " FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
                          " WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''"
                          " ORDER BY a.attnum", (oid,), what=f"read the columns of {name}")
    listed = set(attnames) if attnames is not None else None
    cols = tuple(Column(c[0], int(c[1]), c[2], False) for c in columns if listed is None or c[0] in listed)
    _, key = identity_columns(conn, oid)
    if key is None:
        raise KeylessTable(name)
    missing = [k for k in key if k not in {c.name for c in cols}]
    if missing:
        raise ConfigError(f"table {name}: key column {', '.join(missing)} is not in the publication's column "
                          f"list; add it to the column list of {publication}")
    type_names = {int(c[1]): c[3] for c in columns if int(c[1]) >= 10000}
    return TableSpec(oid, schema, table, replident, cols, key, type_names, row_filter)


# What TableSpec.shape() holds, in one round trip (checked before every chunk): the published
# columns and their types, the row identity, the row filter; no row when unpublished or dropped.
_SHAPE_SQL = """
SELECT ARRAY(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
             AND NOT a.attisdropped AND a.attgenerated = '' AND {listed} ORDER BY a.attnum),
       ARRAY(SELECT a.atttypid::bigint FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
             AND NOT a.attisdropped AND a.attgenerated = '' AND {listed} ORDER BY a.attnum),
       {row_filter}, {identity}
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_publication_tables pt ON pt.pubname = %s AND pt.schemaname = n.nspname AND pt.tablename = c.relname
WHERE c.oid = %s
"""


def shape_of(conn: Connection, publication: str, oid: int) -> tuple[object, ...] | None:
    """``TableSpec.shape()`` as the catalogue says now; None when the table is gone or unpublished."""
    new_style = conn.server_version >= 150000  # row filters and column lists
    statement = sql.SQL(_SHAPE_SQL).format(
        listed=sql.SQL("(pt.attnames IS NULL OR a.attname = ANY(pt.attnames))" if new_style else "true"),
        row_filter=sql.SQL("pt.rowfilter" if new_style else "NULL::text"),
        identity=IDENTITY_SQL_COLUMNS)
    rows = query(conn, statement, (publication, oid), what=f"check table OID {oid}")
    if not rows:
        return None
    names, types, row_filter, replident, primary, index = rows[0]
    return (oid, tuple(zip(names, (int(t) for t in types), strict=True)), row_identity(replident, primary, index),
            row_filter)


def domain_bases(conn: Connection, spec: TableSpec) -> dict[int, int]:
    return base_types(conn, [c.type_oid for c in spec.columns if c.type_oid >= 10000])


def estimate_rows(conn: Connection, oid: int) -> int | None:
    rows = query(conn, "SELECT reltuples::bigint FROM pg_class WHERE oid = %s", (oid,), what="estimate rows")
    return int(rows[0][0]) if rows and rows[0][0] is not None and rows[0][0] >= 0 else None


def check_where(where: str) -> None:
    """The one rule a condition must meet before it reaches PostgreSQL: a single expression."""
    if ";" in where:
        raise ConfigError("--where must be one condition, without ';'")
    if not where.strip():
        raise ConfigError("--where must not be empty")


def condition(text: str) -> sql.Composed:
    """A condition known only at run time, in parentheses: the one place raw SQL text enters a statement.

    Two sources, both SQL expressions by nature: a publication's row filter, as PostgreSQL deparses
    it in ``pg_publication_tables.rowfilter``, and the operator's ``--where``, refused at request time
    unless it is one expression (no ``;``) that PostgreSQL can plan, and run in a read-only
    transaction. tests/unit/test_sql.py allows this function, and only it, to give sql.SQL such text.
    """
    return sql.SQL("({})").format(sql.SQL(text))


def plan_where(conn: Connection, spec: TableSpec, where: str) -> None:
    """EXPLAIN the condition on the table; ConfigError with PostgreSQL's words when it cannot be planned."""
    check_where(where)
    try:
        with conn.cursor() as cur:
            execute(cur, sql.SQL("EXPLAIN SELECT FROM {} WHERE {}").format(
                sql.Identifier(spec.schema, spec.table), condition(where)), what="plan --where")
    except psycopg2.Error as e:
        raise ConfigError(f"--where {where!r} cannot be used on {spec.name}: {error_text(e)}") from None


# -- chunks and watermarks ------------------------------------------------------------------------


def emit_watermark(conn: Connection, payload: str) -> None:
    """A transactional message: decoded at its commit, in commit order with the changes."""
    query(conn, "SELECT pg_logical_emit_message(true, %s, %s)", (WATERMARK_PREFIX, payload),
          what="write a backfill watermark")


def current_snapshot(conn: Connection) -> Snapshot:
    rows = query(conn, "SELECT pg_current_snapshot()::text", what="read the current snapshot")
    return Snapshot.parse(rows[0][0])


def _text_caster() -> Any:
    # Every value as PostgreSQL prints it (what pgoutput sends), whatever psycopg2 would make of it.
    oids = tuple(psycopg2.extensions.string_types)
    return psycopg2.extensions.new_type(oids, "WAL2HTTP_TEXT", lambda value, _cur: value)


FETCH_ROWS = 1000  # rows one FETCH of a chunk asks for at most
_CURSOR = sql.Identifier("wal2http_chunk")


@dataclass(frozen=True)
class Selected:
    """What one chunk select read, in one snapshot."""

    rows: list[Row]  # the next rows in key order
    rereads: list[Row]  # rows read again by key
    snapshot: Snapshot
    complete: bool  # the rows reach the end of the table
    rereads_complete: bool  # every key was looked up (else the budget stopped after the last row read again)


def _filters(spec: TableSpec, where: str | None) -> list[sql.Composable]:
    conditions: list[sql.Composable] = []
    if spec.row_filter:
        conditions.append(condition(spec.row_filter))
    if where:
        check_where(where)
        conditions.append(condition(where))
    return conditions


def _where(conditions: list[sql.Composable]) -> sql.Composable:
    return sql.SQL("WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")


def _by_key(spec: TableSpec, where: str | None, keys: int) -> sql.Composed:
    """The rows with the given keys (``keys`` of them, as parameters), where the filters still hold."""
    key = sql.SQL(", ").join(sql.Identifier(k) for k in spec.key)
    one = sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * len(spec.key)))
    conditions = [*_filters(spec, where), sql.SQL("({}) IN ({})").format(key, sql.SQL(", ").join([one] * keys))]
    return sql.SQL("SELECT {} FROM {} {} ORDER BY {}").format(
        sql.SQL(", ").join(sql.Identifier(c.name) for c in spec.columns), sql.Identifier(spec.schema, spec.table),
        _where(conditions), key)


def _take(cur: Cursor, limit: int, max_bytes: int, what: str) -> tuple[list[Row], bool]:
    """Rows from the open chunk cursor: at most ``limit`` and ``max_bytes`` of column text (one row at least).

    Each FETCH asks for as many rows as the rest of the budget holds at the largest row seen so far
    (one row first), so rows of similar size never overshoot it by more than one row, which is
    read again as the next chunk's first. Also whether the cursor reached the end.
    """
    rows: list[Row] = []
    used = largest = 0
    while len(rows) < limit:
        want = 1 if largest == 0 else max(1, (max_bytes - used) // largest)
        want = min(want, limit - len(rows), FETCH_ROWS)
        execute(cur, sql.SQL("FETCH FORWARD {} FROM {}").format(sql.Literal(want), _CURSOR), what=what)
        fetched: list[Row] = cur.fetchall()
        for row in fetched:
            size = sum(len(value) for value in row if value is not None)
            largest = max(largest, size)
            if rows and used + size > max_bytes:
                return rows, False
            rows.append(row)
            used += size
        if len(fetched) < want:
            return rows, True
    return rows, False


def select_chunk(conn: Connection, spec: TableSpec, where: str | None, after: tuple[str | None, ...] | None,
                 limit: int, max_bytes: int, keys: Sequence[tuple[str | None, ...]], statement_timeout_ms: int,
                 high_mark: str) -> Selected:
    """The next rows after ``after`` in key order, the rows with ``keys``, and the snapshot they were read with.

    At most ``limit`` rows and ``max_bytes`` of column text (one row at least); the rows with
    ``keys`` (read again) take what the budget leaves, one row at least, in the same snapshot.
    In a short read-only transaction of its own, followed (same round trip) by the high watermark
    ``high_mark`` in a transaction of its own. Keyset pagination (never OFFSET), through a cursor
    so a chunk of large rows is never held whole; the publication's row filter and ``where``
    apply. Takes only the ACCESS SHARE lock of any SELECT, and gives up quickly when DDL holds
    the table.
    """
    conditions = _filters(spec, where)
    key = sql.SQL(", ").join(sql.Identifier(k) for k in spec.key)
    if after is not None:
        conditions.append(sql.SQL("({}) > ({})").format(key, sql.SQL(", ").join(sql.Placeholder() * len(after))))
    statement = sql.SQL("SELECT {} FROM {} {} ORDER BY {} LIMIT {}").format(
        sql.SQL(", ").join(sql.Identifier(c.name) for c in spec.columns),
        sql.Identifier(spec.schema, spec.table),
        _where(conditions),
        key, sql.Literal(limit))
    what = f"read a chunk of {spec.name}"
    try:
        with conn.cursor() as cur:
            psycopg2.extensions.register_type(_text_caster(), cur)
            # Repeatable read: the snapshot the first statement reports is the one the select uses.
            execute(cur, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;"
                         " SELECT pg_current_snapshot()::text, set_config('statement_timeout', %s, true),"
                         " set_config('lock_timeout', %s, true)",
                    (str(statement_timeout_ms), str(min(statement_timeout_ms, 2000))), what=what)
            try:
                found = cur.fetchone()
                assert found is not None  # the SELECT returns one row
                snapshot = Snapshot.parse(found[0])
                rows: list[Row] = []
                complete = True
                if limit > 0:
                    execute(cur, sql.SQL("DECLARE {} NO SCROLL CURSOR FOR {}").format(_CURSOR, statement),
                            list(after) if after is not None else None, what=what)
                    rows, complete = _take(cur, limit, max_bytes, what)
                    execute(cur, sql.SQL("CLOSE {}").format(_CURSOR), what=what)
                rereads: list[Row] = []
                rereads_complete = True
                if keys:
                    left = max_bytes - sum(len(v) for row in rows for v in row if v is not None)
                    execute(cur, sql.SQL("DECLARE {} NO SCROLL CURSOR FOR {}").format(
                        _CURSOR, _by_key(spec, where, len(keys))), [text for k in keys for text in k], what=what)
                    rereads, rereads_complete = _take(cur, len(keys), max(left, 1), what)
            except BaseException:
                if conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_INERROR:
                    execute(cur, "ROLLBACK", what=what)
                raise
            execute(cur, "COMMIT; SELECT pg_logical_emit_message(true, %s, %s)", (WATERMARK_PREFIX, high_mark),
                    what=what)
    except psycopg2.Error as e:
        raise DatabaseError(f"cannot {what}: {error_text(e)}") from None
    return Selected(rows, rereads, snapshot, complete, rereads_complete)
