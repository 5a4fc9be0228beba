"""Backfill SQL: chunk selects in the key index's order, bounded by bytes, between their watermarks."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from wal2http.errors import DatabaseError, LockUnavailable
from wal2http.pg.backfill_model import (
    WATERMARK_PREFIX,
    KeyColumn,
    Row,
    TableSpec,
)
from wal2http.pg.backfill_tables import (
    LOCK_NOT_AVAILABLE,
    UNDEFINED_TABLE,
    check_where,
    condition,
    operator,
    shape_of,
    source,
)
from wal2http.pg.connection import Connection, Cursor, error_text, execute, query
from wal2http.pg.snapshot import Snapshot

logger = logging.getLogger(__name__)

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
