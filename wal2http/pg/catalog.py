"""What pgoutput does not say about a table, read once per Relation: its row identity and its domains' base types."""

from __future__ import annotations

import contextlib
import logging
import select
import time
from collections.abc import Callable
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from wal2http.config.dsn import redact_dsn
from wal2http.decode.events import RelationFacts
from wal2http.decode.pgoutput import Relation
from wal2http.errors import DatabaseError, ReplicationLost
from wal2http.pg.connection import check_tls, connection_params, error_text

logger = logging.getLogger(__name__)


ANSWER_TIMEOUT_S = 15.0  # longest wait for any answer on the run's SQL connection
WAKE_EVERY_S = 0.5  # how often a wait lets the run look after its replication stream


class _RunConnection(psycopg2.extensions.connection):  # type: ignore[misc]
    """A connection that knows what to do while it waits (keep the replication stream alive)."""

    on_wait: Callable[[], None] | None = None


class LazyConnection:
    """The run's SQL connection beside the replication one: opened on first use, dropped on error.

    Asynchronous (psycopg2 ``async_``), so that every wait for PostgreSQL has a deadline: the main
    loop must never hang on a stalled network path (a statement timeout cannot help there), or the
    replication stream would go unanswered. Async connections are autocommit.
    """

    def __init__(self, dsn: str, *, connect_timeout_s: int = 5, statement_timeout_ms: int = 10_000,
                 require_tls: bool = False, purpose: str = "catalogue") -> None:
        self._dsn = dsn
        # Called at least every WAKE_EVERY_S while waiting for PostgreSQL; may raise to give up.
        self.on_wait: Callable[[], None] | None = None
        self.connect_timeout_s = connect_timeout_s
        self.statement_timeout_ms = statement_timeout_ms
        self.require_tls = require_tls
        self.purpose = purpose
        self._conn: Any = None

    def get(self) -> Any:
        if self._conn is None:
            params = connection_params(self._dsn, self.connect_timeout_s, self.require_tls)
            try:
                conn = psycopg2.connect(**params, async_=True, connection_factory=_RunConnection)
                conn.on_wait = self.on_wait
                wait(conn, self.connect_timeout_s, "connect")
            except psycopg2.Error as e:
                raise DatabaseError(f"cannot connect to PostgreSQL ({redact_dsn(self._dsn)}): "
                                    f"{error_text(e)}") from None
            check_tls(conn, "connection", self.require_tls)
            self._conn = conn
            # Watermarks and progress need no standby's confirmation: waiting for one would hold up
            # the run (the stream decodes them once flushed locally either way).
            query(conn, "SELECT set_config('statement_timeout', %s, false),"
                        " set_config('synchronous_commit', 'local', false),"
                        " set_config('application_name', left(current_setting('application_name'), 40) || ' ' || %s,"
                        " false)", (str(self.statement_timeout_ms), self.purpose), what="set up the SQL session")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self._conn.close()
        self._conn = None


def wait(conn: Any, seconds: float, what: str) -> None:
    """Poll an asynchronous connection until its operation is done; DatabaseError after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            with contextlib.suppress(psycopg2.Error):
                conn.close()
            raise DatabaseError(f"no answer from PostgreSQL within {seconds:g} s ({what})")
        fd = conn.fileno()
        pause = min(remaining, WAKE_EVERY_S)
        if state == psycopg2.extensions.POLL_READ:
            ready = select.select([fd], [], [], pause)[0]
        else:
            ready = select.select([], [fd], [], pause)[1]
        on_wait = getattr(conn, "on_wait", None)
        if not ready and on_wait is not None:
            try:
                on_wait()
            except BaseException:
                with contextlib.suppress(psycopg2.Error):
                    conn.close()
                raise


def execute(cur: Any, statement: Any, params: Any = None, *, what: str) -> None:
    """``cur.execute``, waiting at most ANSWER_TIMEOUT_S on an asynchronous connection."""
    cur.execute(statement, params)
    if cur.connection.async_:
        wait(cur.connection, ANSWER_TIMEOUT_S, what)


def query(conn: Any, statement: Any, params: Any = None, *, what: str) -> list[tuple[Any, ...]]:
    """Run one statement; its rows (none for a command); DatabaseError("cannot <what>: ...") on failure.

    Like ``pg.connection.query``, and bounded in time on the run's asynchronous connection.
    """
    try:
        with conn.cursor() as cur:
            execute(cur, statement, params, what=what)
            return list(cur.fetchall()) if cur.description is not None else []
    except psycopg2.Error as e:
        raise DatabaseError(f"cannot {what}: {error_text(e)}") from None


# Primary key, else replica identity index: key columns in index order (INCLUDE columns left out).
# Three columns for the table ``c``: relreplident, primary key columns, replica identity index columns.
IDENTITY_COLUMNS = """c.relreplident::text,
  ARRAY(SELECT a.attname::text FROM pg_index i
        CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = c.oid AND i.indisprimary AND k.n <= i.indnkeyatts ORDER BY k.n),
  ARRAY(SELECT a.attname::text FROM pg_index i
        CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = c.oid AND i.indisreplident AND k.n <= i.indnkeyatts ORDER BY k.n)"""
IDENTITY_SQL_COLUMNS = sql.SQL(IDENTITY_COLUMNS)
_IDENTITY_SQL = sql.SQL("SELECT {} FROM pg_class c WHERE c.oid = %s").format(IDENTITY_SQL_COLUMNS)

# Domains (and arrays of domains) to the built-in type they convert as: a domain's base type,
# followed through domains over domains; an array of a domain becomes the array of that base.
_BASE_TYPES_SQL = """
WITH RECURSIVE cols(start, element) AS (
  SELECT t.oid, CASE WHEN t.typcategory = 'A' AND e.typtype = 'd' THEN e.oid END
  FROM pg_type t LEFT JOIN pg_type e ON e.oid = t.typelem WHERE t.oid = ANY(%s)
), chain(start, is_array, oid, typtype, base) AS (
  SELECT c.start, c.element IS NOT NULL, t.oid, t.typtype::text, t.typbasetype
  FROM cols c JOIN pg_type t ON t.oid = coalesce(c.element, c.start) WHERE t.typtype = 'd'
  UNION ALL
  SELECT c.start, c.is_array, t.oid, t.typtype::text, t.typbasetype
  FROM chain c JOIN pg_type t ON t.oid = c.base WHERE c.typtype = 'd'
)
SELECT c.start::bigint, (CASE WHEN c.is_array THEN t.typarray ELSE t.oid END)::bigint
FROM chain c JOIN pg_type t ON t.oid = c.oid WHERE c.typtype <> 'd'
"""


def identity_columns(conn: Any, oid: int) -> tuple[str | None, tuple[str, ...] | None]:
    """(relreplident, the identity columns) of a table; (None, None) when it does not exist any more."""
    rows = query(conn, _IDENTITY_SQL, (oid,), what=f"read the key of table OID {oid}")
    if not rows:
        return None, None
    replident, primary, index = rows[0]
    return replident, row_identity(replident, primary, index)


def row_identity(replident: str, primary: list[str], index: list[str]) -> tuple[str, ...] | None:
    """The replica identity index under REPLICA IDENTITY USING INDEX, else the primary key, else None."""
    if replident == "i" and index:
        return tuple(index)
    return tuple(primary) if primary else None


def base_types(conn: Any, type_oids: list[int]) -> dict[int, int]:
    """Domain type OID (or array-of-domain OID) -> the built-in type OID whose JSON it takes."""
    if not type_oids:
        return {}
    rows = query(conn, _BASE_TYPES_SQL, (sorted(set(type_oids)),), what="read the base types of domains")
    return {int(start): int(base) for start, base in rows if base}


class Catalog:
    """Answers the EventBuilder's question about a Relation; a failure reconnects the stream (and retries)."""

    def __init__(self, connection: LazyConnection) -> None:
        self.connection = connection

    def __call__(self, relation: Relation) -> RelationFacts:
        try:
            conn = self.connection.get()
            _, key = identity_columns(conn, relation.oid)
            bases = base_types(conn, [c.type_oid for c in relation.columns if c.type_oid >= 10000])
        except (DatabaseError, psycopg2.Error) as e:
            self.connection.close()
            text = error_text(e) if isinstance(e, psycopg2.Error) else str(e)
            raise ReplicationLost(f"cannot read the catalogue for table {relation.schema}.{relation.table}: "
                                  f"{text}") from None
        names = {c.name for c in relation.columns}
        if key is not None and not set(key) <= names:
            key = None  # the key is not among the published columns: pgoutput's own flags
        return RelationFacts(key=key, base_types=bases)
