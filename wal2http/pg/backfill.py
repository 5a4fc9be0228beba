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
from wal2http.errors import ConfigError, DatabaseError, KeylessTable, LockUnavailable
from wal2http.pg import privileges
from wal2http.pg.backfill_model import (
    REQUESTS_SCHEMA,
    REQUESTS_TABLE,
    WATERMARK_PREFIX,
    KeyColumn,
    QualifiedName,
    Row,
    State,
    TableSpec,
    Task,
    display_name,
    parse_table_name,
)
from wal2http.pg.catalog import (
    IDENTITY_SQL_COLUMNS,
    base_types,
    identity_columns,
    row_identity,
)
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


# -- what a table looks like ----------------------------------------------------------------------


def describe_text(conn: Connection, publication: str, text: str) -> TableSpec:
    """The table ``--table`` names: ``schema.table`` or ``table``, parts taken literally, quoted ones may hold dots."""
    try:
        candidates = parse_table_name(text)
    except ValueError as e:
        raise ConfigError(f"{e} (use SCHEMA.TABLE; quote a part holding a dot: '\"eu.west\".orders')") from None
    found = [(oid, s, t) for s, t in candidates for oid in [_find(conn, s, t)] if oid is not None]
    if len(found) > 1:
        spellings = " or ".join(repr(display_name(s, t)) for _, s, t in found if s is not None)
        raise ConfigError(f"table name {text!r} is ambiguous: quote the part holding the dot, {spellings}")
    if not found:
        hint = ""
        if len(candidates) > 1:
            hint = "; quote a part holding a dot: " + " or ".join(
                repr(display_name(s, t)) for s, t in candidates if s is not None)
        raise ConfigError(f"table {text!r} does not exist (names are case-sensitive; use SCHEMA.TABLE{hint})")
    return describe_oid(conn, publication, found[0][0])


def describe(conn: Connection, publication: str, schema: str, table: str) -> TableSpec:
    """The table as the publication streams it; ConfigError with the fix when it cannot be backfilled."""
    oid = _find(conn, schema, table)
    if oid is None:
        raise ConfigError(f"table {display_name(schema, table)} does not exist (dropped or renamed since the "
                          "request?)")
    return describe_oid(conn, publication, oid)


def _find(conn: Connection, schema: str | None, table: str) -> int | None:
    """A table's OID (a plain or partitioned table): by schema and name, or on the search path."""
    if schema is None:
        rows = query(conn, "SELECT c.oid FROM pg_class c WHERE c.oid = to_regclass(quote_ident(%s))"
                           " AND c.relkind IN ('r', 'p')", (table,), what=f"look up table {table!r}")
    else:
        rows = query(conn, "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                           " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
                     (schema, table), what=f"look up table {display_name(schema, table)}")
    return int(rows[0][0]) if rows else None


# The columns a publication sends: generated ones only from 18 on, when it publishes them (stored ones).
_NOT_GENERATED = "a.attgenerated = ''"
_NOT_GENERATED_OR_STORED = "(a.attgenerated = '' OR a.attgenerated = 's')"


def describe_oid(conn: Connection, publication: str, oid: int) -> TableSpec:
    rows = query(conn, "SELECT n.nspname::text, c.relname::text, c.relreplident::text, c.relkind::text FROM pg_class c"
                       " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s",
                 (oid,), what=f"look up table OID {oid}")
    if not rows:
        raise ConfigError(f"table OID {oid} does not exist any more (dropped)")
    schema, table, replident, relkind = rows[0]
    name = display_name(schema, table)
    new_style = conn.server_version >= 150000  # row filters and column lists
    published = query(conn, sql.SQL("SELECT {} FROM pg_publication_tables"
                                    " WHERE pubname = %s AND schemaname = %s AND tablename = %s").format(
        sql.SQL("attnames::text[], rowfilter" if new_style else "NULL::text[], NULL::text")),
        (publication, schema, table), what=f"read publication {publication!r}")
    if not published:
        raise ConfigError(_unpublished(conn, publication, oid, name, relkind))
    attnames, row_filter = published[0]
    columns = query(conn, sql.SQL("SELECT a.attname::text, a.atttypid::bigint, a.atttypmod, t.typname::text"
                                  " FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
                                  " WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped AND {}"
                                  " ORDER BY a.attnum").format(
        sql.SQL(_NOT_GENERATED_OR_STORED if _generated(conn) else _NOT_GENERATED)),
                    (oid,), what=f"read the columns of {name}")
    listed = set(attnames) if attnames is not None else None
    cols = tuple(Column(c[0], int(c[1]), c[2], False) for c in columns if listed is None or c[0] in listed)
    _, key = identity_columns(conn, oid)
    if key is None:
        raise KeylessTable(name)
    missing = [k for k in key if k not in {c.name for c in cols}]
    if missing:
        raise ConfigError(f"table {name}: key column {', '.join(missing)} is not in the publication's column "
                          f"list; add it to the column list of {publication}")
    index, order = key_order(conn, oid)
    if tuple(k.name for k in order) != key:
        raise ConfigError(f"table {name}: cannot read the order of its key index (columns {', '.join(key)})")
    type_names = {int(c[1]): c[3] for c in columns if int(c[1]) >= 10000}
    return TableSpec(oid, schema, table, replident, cols, key, type_names, row_filter, index, order,
                     only=relkind == "r")


def _generated(conn: Connection) -> bool:
    return bool(conn.server_version >= 180000)  # publish_generated_columns came with 18


def _unpublished(conn: Connection, publication: str, oid: int, name: str, relkind: str) -> str:
    """Why a table is not in the publication, with the fix that works."""
    if relkind == "p":
        leaves = query(conn, "SELECT pt.schemaname::text, pt.tablename::text FROM pg_partition_tree(%s) p"
                             " JOIN pg_class c ON c.oid = p.relid JOIN pg_namespace n ON n.oid = c.relnamespace"
                             " JOIN pg_publication_tables pt ON pt.pubname = %s AND pt.schemaname = n.nspname"
                             " AND pt.tablename = c.relname WHERE p.isleaf ORDER BY 1, 2",
                       (oid, publication), what=f"read the partitions of {name}")
        if leaves:
            tables = " ".join(f"--table {_shell_word(display_name(schema, table))}" for schema, table in leaves)
            return (f"table {name} is partitioned and publication {publication} streams its partitions as "
                    f"tables of their own (publish_via_partition_root = false): backfill the partitions, "
                    f"{tables}")
    return (f"table {name} is not published by publication {publication}: a backfill sends only what the "
            f"stream sends; add it (ALTER PUBLICATION {publication} ADD TABLE {name}) or name a published table")


def _shell_word(text: str) -> str:
    """A name as typed in a shell: quoted when it holds anything but letters, digits, ``_``, ``.``, ``$``."""
    return text if all(ch.isalnum() or ch in "_.$" for ch in text) else "'" + text.replace("'", "'\\''") + "'"


# The key index (the replica identity index under REPLICA IDENTITY USING INDEX, else the primary key)
# and how it orders each key column: collation, operator class, and that class's <, <=, =, >=, >
# (strategies 1 to 5) when it is not the type's default class.
_KEY_ORDER_SQL = """
SELECT x.indexrelid::bigint, a.attname::text, coalesce(k.coll, 0)::bigint, cn.nspname::text, co.collname::text,
       k.opclass::bigint, oc.opcdefault,
       ARRAY(SELECT ARRAY[o_n.nspname::text, o.oprname::text] FROM pg_amop ao
             JOIN pg_operator o ON o.oid = ao.amopopr JOIN pg_namespace o_n ON o_n.oid = o.oprnamespace
             WHERE ao.amopfamily = oc.opcfamily AND ao.amoplefttype = oc.opcintype
               AND ao.amoprighttype = oc.opcintype AND ao.amopstrategy BETWEEN 1 AND 5 ORDER BY ao.amopstrategy)
FROM (SELECT i.* FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
      WHERE i.indrelid = %s AND (i.indisprimary OR (i.indisreplident AND c.relreplident = 'i'))
      ORDER BY i.indisreplident AND c.relreplident = 'i' DESC LIMIT 1) x
CROSS JOIN LATERAL unnest(x.indkey::int2[], x.indcollation::oid[], x.indclass::oid[])
    WITH ORDINALITY AS k(attnum, coll, opclass, n)
JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
JOIN pg_opclass oc ON oc.oid = k.opclass
LEFT JOIN pg_collation co ON co.oid = k.coll
LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
WHERE k.n <= x.indnkeyatts
ORDER BY k.n
"""


def key_order(conn: Connection, oid: int) -> tuple[int, tuple[KeyColumn, ...]]:
    """The key index's OID and its key columns as it orders them ((0, ()) without one)."""
    rows = query(conn, _KEY_ORDER_SQL, (oid,), what=f"read the key order of table OID {oid}")
    columns: list[KeyColumn] = []
    for _, name, coll, coll_schema, coll_name, opclass, default, operators in rows:
        collation = (coll_schema, coll_name) if coll and coll_name is not None else None
        ops = None
        if not default:
            if len(operators) != 5:
                raise ConfigError(f"key column {name}: its operator class (OID {opclass}) is not a btree class "
                                  "with the five comparison operators; a backfill cannot page in its order")
            ops = tuple((o[0], o[1]) for o in operators)
        columns.append(KeyColumn(name, collation, ops, (int(coll), int(opclass))))
    return (int(rows[0][0]) if rows else 0), tuple(columns)


# What TableSpec.shape() holds, in one round trip with key_order's: the name, the published columns and
# their types, the row identity, the row filter; no row when unpublished or dropped.
_SHAPE_SQL = """
SELECT n.nspname::text, c.relname::text,
       ARRAY(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
             AND NOT a.attisdropped AND {generated} AND {listed} ORDER BY a.attnum),
       ARRAY(SELECT a.atttypid::bigint FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
             AND NOT a.attisdropped AND {generated} AND {listed} ORDER BY a.attnum),
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
        generated=sql.SQL(_NOT_GENERATED_OR_STORED if _generated(conn) else _NOT_GENERATED),
        row_filter=sql.SQL("pt.rowfilter" if new_style else "NULL::text"),
        identity=IDENTITY_SQL_COLUMNS)
    rows = query(conn, statement, (publication, oid), what=f"check table OID {oid}")
    if not rows:
        return None
    schema, table, names, types, row_filter, replident, primary, index = rows[0]
    key_index, order = key_order(conn, oid)
    return (oid, schema, table, tuple(zip(names, (int(t) for t in types), strict=True)),
            row_identity(replident, primary, index), row_filter, key_index,
            tuple((k.name, *k.identity) for k in order))


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

    A ``%`` in it (``LIKE 'a%'``) is doubled: a statement holding a condition is always run with a
    parameter list (empty, if need be), so psycopg2 reads ``%%`` back as ``%``, never as a placeholder.
    """
    text = text.replace("%", "%%")
    return sql.SQL("({})").format(sql.SQL(text))


def plan_where(conn: Connection, spec: TableSpec, where: str) -> None:
    """EXPLAIN the condition on the table; ConfigError with PostgreSQL's words when it cannot be planned."""
    check_where(where)
    try:
        with conn.cursor() as cur:
            execute(cur, sql.SQL("EXPLAIN SELECT FROM {} WHERE {}").format(source(spec), condition(where)), [],
                    what="plan --where")
    except psycopg2.Error as e:
        if e.pgcode in (LOCK_NOT_AVAILABLE, QUERY_CANCELED):  # DDL holds the table: not the condition's fault
            raise LockUnavailable(f"cannot plan --where on {spec.name}: {error_text(e)}") from None
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


# What a backfill's statements are made of: the table as the stream publishes it, its key in the key
# index's order (each column under the index's collation, compared by its operator class's operators).
LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout expired
UNDEFINED_TABLE = "42P01"  # renamed or dropped since described
QUERY_CANCELED = "57014"  # statement_timeout expired
_OPERATOR_CHARACTERS = frozenset("+-*/<>=~!@#%^&|`?")


def source(spec: TableSpec) -> sql.Composed:
    """The table to read: ``ONLY`` a plain table, as its inheritance children are published as tables of their own."""
    return sql.SQL("ONLY {}" if spec.only else "{}").format(sql.Identifier(spec.schema, spec.table))


def operator(name: QualifiedName) -> sql.Composed:
    """``OPERATOR(schema.op)``: an operator of a key index's operator class, named by the catalogue.

    An operator's name is made only of the characters PostgreSQL allows in one (checked here), never
    of anything a statement could be changed by; tests/unit/test_sql.py allows this function to give
    sql.SQL such text.
    """
    schema, text = name
    if not text or not set(text) <= _OPERATOR_CHARACTERS:
        raise ConfigError(f"operator {text!r} of a key index is not an operator name")
    return sql.SQL("OPERATOR({}.{})").format(sql.Identifier(schema), sql.SQL(text))


def key_column(column: KeyColumn) -> sql.Composed:
    """A key column as its index compares it: under the index's collation."""
    if column.collation is None:
        return sql.Composed([sql.Identifier(column.name)])
    return sql.SQL("{} COLLATE {}").format(sql.Identifier(column.name), sql.Identifier(*column.collation))


def key_order_by(spec: TableSpec) -> sql.Composed:
    """``ORDER BY``'s list: the key index's order, with its operator class's ``<`` where not the default."""
    terms = []
    for column in spec.key_order:
        if column.operators is None:
            terms.append(key_column(column))
        else:
            terms.append(sql.SQL("{} USING {}").format(key_column(column), operator(column.operators[0])))
    return sql.SQL(", ").join(terms)


def after_key(spec: TableSpec, after: tuple[str | None, ...]) -> tuple[sql.Composed, list[str | None]]:
    """The keyset condition ``key > after`` in the key index's order, and its parameters.

    A row comparison when every column has its type's default operator class (an index can start
    there); else column by column with the class's operators, the first column bounded by ``>=``.
    """
    order = spec.key_order
    if all(c.operators is None for c in order):
        return sql.SQL("({}) > ({})").format(sql.SQL(", ").join(key_column(c) for c in order),
                                             sql.SQL(", ").join(sql.Placeholder() * len(order))), list(after)

    def equal(column: KeyColumn) -> sql.Composable:
        return sql.SQL("=") if column.operators is None else operator(column.operators[2])

    def greater(column: KeyColumn) -> sql.Composable:
        return sql.SQL(">") if column.operators is None else operator(column.operators[4])

    params: list[str | None] = []
    later: sql.Composable | None = None
    for n in range(len(order) - 1, -1, -1):  # (c_n > v_n) OR (c_n = v_n AND (later)), innermost first
        column, value = order[n], after[n]
        beyond = sql.SQL("{} {} %s").format(key_column(column), greater(column))
        if later is None:
            later, params = beyond, [value]
        else:
            later = sql.SQL("({} OR ({} {} %s AND {}))").format(beyond, key_column(column), equal(column), later)
            params = [value, value, *params]
    assert later is not None
    first = order[0]  # an index scan starts at the first column's bound
    at_least = sql.SQL(">=") if first.operators is None else operator(first.operators[3])
    bound = sql.SQL("{} {} %s").format(key_column(first), at_least)
    return sql.SQL("{} AND {}").format(bound, later), [after[0], *params]


def chunk_statement(spec: TableSpec, where: str | None, after: tuple[str | None, ...] | None,
                    limit: int) -> tuple[sql.Composed, list[str | None]]:
    """The select of the next ``limit`` rows after ``after`` in the key index's order, and its parameters.

    Keyset pagination (never OFFSET) in exactly the order of the key index: its collations (a
    column's own may be non-deterministic, a key's tie group then spans chunks) and operator classes.
    The publication's row filter and ``where`` apply.
    """
    conditions = _filters(spec, where)
    params: list[str | None] = []
    if after is not None:
        keyset, params = after_key(spec, after)
        conditions.append(keyset)
    statement = sql.SQL("SELECT {} FROM {} {} ORDER BY {} LIMIT {}").format(
        sql.SQL(", ").join(sql.Identifier(c.name) for c in spec.columns), source(spec), _where(conditions),
        key_order_by(spec), sql.Literal(limit))
    return statement, params


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
    """The rows with the given keys (``keys`` of them, as parameters), where the filters still hold.

    Keys compare under the key index's collations: under a column's non-deterministic one, a key
    would also find the rows whose keys only it finds equal.
    """
    key = sql.SQL(", ").join(key_column(c) for c in spec.key_order)
    one = sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * len(spec.key_order)))
    conditions = [*_filters(spec, where), sql.SQL("({}) IN ({})").format(key, sql.SQL(", ").join([one] * keys))]
    return sql.SQL("SELECT {} FROM {} {} ORDER BY {}").format(
        sql.SQL(", ").join(sql.Identifier(c.name) for c in spec.columns), source(spec), _where(conditions),
        key_order_by(spec))


def shape_in(conn: Connection, publication: str, spec: TableSpec) -> bool:
    """Whether the table still has the shape ``spec`` was described with (see ``shape_of``)."""
    return shape_of(conn, publication, spec.oid) == spec.shape()


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


def select_chunk(conn: Connection, publication: str, spec: TableSpec, where: str | None,
                 after: tuple[str | None, ...] | None, limit: int, max_bytes: int,
                 keys: Sequence[tuple[str | None, ...]], statement_timeout_ms: int, high_mark: str) -> Selected | None:
    """The next rows after ``after`` in key order, the rows with ``keys``, and the snapshot they were read with.

    At most ``limit`` rows and ``max_bytes`` of column text (one row at least); the rows with
    ``keys`` (read again) take what the budget leaves, one row at least, in the same snapshot.
    In a short read-only transaction of its own, followed (same round trip) by the high watermark
    ``high_mark`` in a transaction of its own. Keyset pagination in the key index's order (see
    ``chunk_statement``), through a cursor so a chunk of large rows is never held whole. The
    table's ACCESS SHARE lock comes first, then the snapshot: the select and the check that the
    table still has the shape of ``spec`` (None when not: altered, renamed, or its key order
    changed) see the same table, and no DDL changes it before the commit. LockUnavailable when
    DDL holds the table longer than the lock timeout.
    """
    statement, params = chunk_statement(spec, where, after, limit)
    what = f"read a chunk of {spec.name}"
    try:
        with conn.cursor() as cur:
            psycopg2.extensions.register_type(_text_caster(), cur)
            # Repeatable read: the snapshot is taken by the first SELECT, after the lock, and kept.
            execute(cur, sql.SQL("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL statement_timeout = {};"
                                 " SET LOCAL lock_timeout = {}").format(
                sql.Literal(statement_timeout_ms), sql.Literal(min(statement_timeout_ms, 2000))), what=what)
            try:
                try:
                    # ONLY: a partitioned root's partitions are locked by the select itself (locking them
                    # here would need privileges on each, which a read through the root does not).
                    execute(cur, sql.SQL("LOCK TABLE ONLY {} IN ACCESS SHARE MODE").format(
                        sql.Identifier(spec.schema, spec.table)), what=what)
                except psycopg2.Error as e:
                    if e.pgcode == UNDEFINED_TABLE:  # renamed or dropped: the shape check says which
                        execute(cur, "ROLLBACK", what=what)
                        return None
                    raise
                execute(cur, "SELECT pg_current_snapshot()::text", what=what)
                found = cur.fetchone()
                assert found is not None  # the SELECT returns one row
                snapshot = Snapshot.parse(found[0])
                if not shape_in(conn, publication, spec):
                    execute(cur, "ROLLBACK", what=what)
                    return None
                rows: list[Row] = []
                complete = True
                if limit > 0:
                    # Parameters as a list, even empty: see condition().
                    execute(cur, sql.SQL("DECLARE {} NO SCROLL CURSOR FOR {}").format(_CURSOR, statement), params,
                            what=what)
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
        if e.pgcode == LOCK_NOT_AVAILABLE:
            raise LockUnavailable(f"cannot {what}: {error_text(e)}") from None
        raise DatabaseError(f"cannot {what}: {error_text(e)}") from None
    return Selected(rows, rereads, snapshot, complete, rereads_complete)
