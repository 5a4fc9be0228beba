"""What a slot holds beyond its confirmed position: its changes peeked without consuming them, and a marker
of the present position written into the WAL (``run --until now``)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import psycopg2
import psycopg2.errors

from wal2http.errors import DatabaseError, SlotInUse
from wal2http.lsn import parse_lsn
from wal2http.pg.connection import Connection, error_text, query

# pg_logical_emit_message() prefix of the marker ``run --until now`` writes; never delivered as a 'message'.
UNTIL_PREFIX = "wal2http.until"
_ACTIVE_PID_RE = re.compile(r"active for PID (\d+)")
FETCH_ROWS = 500  # rows fetched at a time from the peek's cursor


def mark_now(conn: Connection, slot: str) -> int:
    """Write a marker into the WAL and return its position: every transaction committed before lies before it."""
    rows = query(conn, "SELECT pg_logical_emit_message(false, %s, %s)::text", (UNTIL_PREFIX, slot),
                 what="mark the present WAL position (pg_logical_emit_message)")
    return parse_lsn(rows[0][0])


def peek_changes(conn: Connection, slot: str, publication: str, upto_changes: int) -> Iterator[tuple[int, bytes]]:
    """(position, pgoutput message) of the slot's next changes, as ``run`` would stream them; consumes nothing.

    PostgreSQL decodes whole transactions: it stops after the one in which ``upto_changes`` messages
    were reached. Rows are fetched a few hundred at a time, so a large transaction is never all in memory here.
    """
    autocommit = conn.autocommit
    conn.autocommit = False  # a named (server-side) cursor lives in a transaction
    try:
        with conn.cursor(name="wal2http_peek") as cur:
            cur.itersize = FETCH_ROWS
            cur.execute("SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes(%s, NULL, %s,"
                        " 'proto_version', '1', 'publication_names', %s, 'messages', 'true')",
                        (slot, upto_changes, publication))
            for lsn, data in cur:
                yield parse_lsn(lsn), bytes(data)
    except psycopg2.errors.ObjectInUse as e:
        match = _ACTIVE_PID_RE.search(str(e))
        raise SlotInUse(f"replication slot {slot!r} is in use by another consumer"
                        + (f" (PID {match.group(1)})" if match else "")
                        + ": peek only while nothing streams from it", int(match.group(1)) if match else None) from None
    except psycopg2.Error as e:
        raise DatabaseError(f"cannot peek into replication slot {slot!r}: {error_text(e)}") from None
    finally:
        with contextlib.suppress(psycopg2.Error):
            conn.rollback()
            conn.autocommit = autocommit
