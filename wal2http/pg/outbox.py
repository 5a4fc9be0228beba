"""The Hook0 outbox table: its one definition (README.rst shows the same), creation and inspection."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from psycopg2 import sql

from wal2http.pg.connection import Connection, query

logger = logging.getLogger(__name__)

# The table `slot create --hook0-outbox` makes. README.rst shows this very DDL (with comments), and
# tests/unit/test_outbox_ddl.py keeps the two equal.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("event_id", "uuid PRIMARY KEY DEFAULT gen_random_uuid()"),
    ("event_type", "text NOT NULL"),
    ("payload", "jsonb NOT NULL"),
    ("payload_content_type", "text"),
    ("labels", "jsonb NOT NULL"),
    ("metadata", "jsonb"),
    ("occurred_at", "timestamptz NOT NULL DEFAULT now()"),
    ("txid", "xid8 NOT NULL DEFAULT pg_current_xact_id()"),
)
COMMENT = (
    "Transactional outbox relayed to Hook0 by wal2http: insert one row per event in the same "
    "transaction as the change it announces. wal2http reads inserted rows from the WAL, never from "
    "this table, and never deletes them: delete rows on any schedule (deleting never affects "
    "delivery), or only delivered ones as the wal2http README shows (Hook0, Keeping the outbox "
    "table small)."
)
MIN_VERSION = 130000  # gen_random_uuid(), xid8 and pg_current_xact_id()


def definition(column: str) -> str:
    """A column's definition in the outbox DDL, e.g. ``labels jsonb NOT NULL``."""
    return f"{column} {dict(COLUMNS)[column]}"


def ddl(table: str) -> str:
    """The outbox DDL as text, ``table`` written as given (documentation and tests)."""
    columns = ", ".join(f"{name} {definition}" for name, definition in COLUMNS)
    comment = COMMENT.replace("'", "''")
    return f"CREATE TABLE {table} ({columns}); COMMENT ON TABLE {table} IS '{comment}'"


def create_statement(schema: str, table: str) -> sql.Composed:
    """CREATE TABLE and COMMENT ON TABLE for the outbox, the name quoted."""
    target = sql.Identifier(schema, table)
    columns = sql.SQL(", ").join(sql.SQL(f"{name} {definition}") for name, definition in COLUMNS)
    return sql.SQL("CREATE TABLE {} ({}); COMMENT ON TABLE {} IS {}").format(
        target, columns, target, sql.Literal(COMMENT))


def quoted(conn: Connection, schema: str, table: str) -> str:
    """``schema.table`` quoted only where needed, as pg_publication_tables spells it (for messages)."""
    rows = query(conn, "SELECT format('%%s.%%s', quote_ident(%s), quote_ident(%s))", (schema, table),
                 what="quote a table name")
    name: str = rows[0][0]
    return name


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type() without modifier: 'jsonb', 'timestamp with time zone', ...
    not_null: bool
    enum: bool


@dataclass(frozen=True)
class Table:
    name: str  # schema.table, quoted where needed
    kind: str  # pg_class.relkind
    columns: tuple[Column, ...]

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


def find_table(conn: Connection, schema: str, table: str) -> Table | None:
    """The relation named ``schema.table`` (names taken literally) and its columns; None if missing."""
    rows = query(
        conn,
        "SELECT c.relkind::text, a.attname, format_type(a.atttypid, NULL), a.attnotnull, t.typtype = 'e',"
        " format('%%s.%%s', quote_ident(n.nspname), quote_ident(c.relname))"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
        " LEFT JOIN pg_type t ON t.oid = a.atttypid"
        " WHERE n.nspname = %s AND c.relname = %s ORDER BY a.attnum",
        (schema, table), what=f"read the columns of {schema}.{table}",
    )
    if not rows:
        return None
    columns = tuple(Column(r[1], r[2], bool(r[3]), bool(r[4])) for r in rows if r[1] is not None)
    return Table(rows[0][5], rows[0][0], columns)


@dataclass(frozen=True)
class Membership:
    """How a publication streams one table."""

    columns: tuple[str, ...] | None  # the published columns (a PostgreSQL 15 column list); None: all
    row_filter: str | None


def membership(conn: Connection, publication: str, schema: str, table: str) -> Membership | None:
    """How ``publication`` streams the table; None when it does not."""
    pg15 = conn.server_version >= 150000
    rows = query(
        conn,
        sql.SQL("SELECT {} FROM pg_publication_tables WHERE pubname = %s AND schemaname = %s AND tablename = %s")
        .format(sql.SQL("attnames, rowfilter" if pg15 else "NULL::name[], NULL::text")),
        (publication, schema, table), what=f"read publication {publication!r}",
    )
    if not rows:
        return None
    published, row_filter = rows[0]
    return Membership(None if published is None else tuple(published), row_filter)


def set_up(conn: Connection, schema: str, table: str, *, create: bool, publication: str | None) -> None:
    """Create the table (if ``create``) and add it to ``publication`` (if given), in one transaction."""
    statements = [create_statement(schema, table)] if create else []
    if publication is not None:
        statements.append(sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
            sql.Identifier(publication), sql.Identifier(schema, table)))
    if not statements:
        return
    # One simple query: PostgreSQL runs its statements as one transaction.
    query(conn, sql.SQL("; ").join(statements), what=f"set up the Hook0 outbox {schema}.{table}")
    if create:
        logger.info("created the Hook0 outbox table %s.%s", schema, table)
    if publication is not None:
        logger.info("added %s.%s to publication %s", schema, table, publication)


def undo(conn: Connection, schema: str, table: str, *, created: bool, publication: str | None) -> None:
    """Take back what ``slot create`` did to the outbox when the slot could not be made.

    The table is dropped only while empty: the application may already write to it.
    """
    if publication is not None:
        query(conn, sql.SQL("ALTER PUBLICATION {} DROP TABLE {}").format(
            sql.Identifier(publication), sql.Identifier(schema, table)),
            what=f"remove {schema}.{table} from publication {publication!r}")
    if created:
        target = sql.Identifier(schema, table)
        if not query(conn, sql.SQL("SELECT 1 FROM {} LIMIT 1").format(target), what=f"read {schema}.{table}"):
            query(conn, sql.SQL("DROP TABLE {}").format(target), what=f"drop {schema}.{table}")
            logger.info("dropped outbox table %s.%s again", schema, table)
