"""What pgoutput does not say about a table, read once per Relation: its row identity and its domains' base types."""

from __future__ import annotations

import logging

import psycopg2
from psycopg2 import sql

from wal2http.decode.events import RelationFacts
from wal2http.decode.pgoutput import Relation
from wal2http.errors import DatabaseError, ReplicationLost
from wal2http.pg.connection import Connection, LazyConnection, error_text, query

logger = logging.getLogger(__name__)


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


def identity_columns(conn: Connection, oid: int) -> tuple[str | None, tuple[str, ...] | None]:
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


def base_types(conn: Connection, type_oids: list[int]) -> dict[int, int]:
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
