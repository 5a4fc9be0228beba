"""What pgoutput does not say about a table, read once per Relation: its row identity and its domains' base types."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import psycopg2

from wal2http.decode.events import RelationFacts
from wal2http.decode.pgoutput import Relation
from wal2http.errors import DatabaseError, ReplicationLost
from wal2http.pg.connection import connect_sql, error_text, query

logger = logging.getLogger(__name__)


class LazyConnection:
    """The run's autocommit SQL connection beside the replication one: opened on first use, dropped on error."""

    def __init__(self, dsn: str, *, connect_timeout_s: int = 5, statement_timeout_ms: int = 10_000,
                 require_tls: bool = False, purpose: str = "catalogue") -> None:
        self._dsn = dsn
        self.connect_timeout_s = connect_timeout_s
        self.statement_timeout_ms = statement_timeout_ms
        self.require_tls = require_tls
        self.purpose = purpose
        self._conn: Any = None

    def get(self) -> Any:
        if self._conn is None:
            conn = connect_sql(self._dsn, self.connect_timeout_s, self.require_tls)
            query(conn, "SELECT set_config('statement_timeout', %s, false),"
                        " set_config('application_name', left(current_setting('application_name'), 40) || ' ' || %s,"
                        " false)", (str(self.statement_timeout_ms), self.purpose), what="set up the SQL session")
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self._conn.close()
        self._conn = None


# Primary key, else replica identity index: key columns in index order (INCLUDE columns left out).
_IDENTITY_SQL = """
SELECT c.relreplident::text,
  ARRAY(SELECT a.attname::text FROM pg_index i
        CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = c.oid AND i.indisprimary AND k.n <= i.indnkeyatts ORDER BY k.n),
  ARRAY(SELECT a.attname::text FROM pg_index i
        CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = c.oid AND i.indisreplident AND k.n <= i.indnkeyatts ORDER BY k.n)
FROM pg_class c WHERE c.oid = %s
"""

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
    if replident == "i" and index:
        return replident, tuple(index)
    return replident, tuple(primary) if primary else None


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
