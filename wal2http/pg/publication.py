"""Publication, replica identity and server settings SQL for ``slot`` and ``check-config``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from psycopg2 import sql

from wal2http.errors import ConfigError
from wal2http.pg.backfill_model import display_name, parse_table_name
from wal2http.pg.connection import Connection, TlsStatus, is_local, query, tls_status

logger = logging.getLogger(__name__)

OPERATIONS = ("insert", "update", "delete", "truncate")
# Managed services' roles. rds_replication grants replication (Amazon RDS and Aurora never set the
# REPLICATION attribute); the others are their admin roles, whose powers the catalogue does not show.
REPLICATION_ROLES = ("rds_replication",)
ADMIN_ROLES = ("rds_superuser", "cloudsqlsuperuser", "azure_pg_admin", "neon_superuser", "supabase_admin")
# Parameters a managed service uses to switch logical decoding on, instead of wal_level itself.
PROVIDER_SWITCHES = ("rds.logical_replication", "cloudsql.logical_decoding")


@dataclass(frozen=True)
class ServerFacts:
    """What the checks need to know about the server and the connected role."""

    version: str
    version_num: int
    wal_level: str
    max_replication_slots: int
    used_replication_slots: int
    max_wal_senders: int
    used_wal_senders: int
    max_slot_wal_keep_size_mb: int  # -1: unlimited
    wal_sender_timeout_ms: int
    user: str
    database: str
    can_replicate: bool  # superuser or the REPLICATION attribute
    superuser: bool
    member_of: tuple[str, ...]  # of REPLICATION_ROLES and ADMIN_ROLES
    provider_switches: tuple[tuple[str, str], ...]  # (parameter, value) of PROVIDER_SWITCHES present
    synchronized_standby_slots: str | None  # 17+; None before
    tls: TlsStatus
    local: bool  # a Unix socket or loopback: nothing crosses a network
    host: str
    port: str


_FACTS_SQL = """
SELECT current_setting('server_version'), current_setting('server_version_num')::int,
       current_setting('wal_level'),
       current_setting('max_replication_slots')::int, (SELECT count(*) FROM pg_replication_slots),
       current_setting('max_wal_senders')::int, (SELECT count(*) FROM pg_stat_replication),
       (SELECT setting::int FROM pg_settings WHERE name = 'max_slot_wal_keep_size'),
       (SELECT setting::int FROM pg_settings WHERE name = 'wal_sender_timeout'),
       current_user, current_database(), r.rolreplication, r.rolsuper,
       ARRAY(SELECT m.rolname::text FROM pg_roles m WHERE m.rolname = ANY(%(roles)s)
             AND pg_has_role(current_user, m.oid, 'MEMBER') ORDER BY 1),
       ARRAY(SELECT ARRAY[p, current_setting(p, true)] FROM unnest(%(switches)s::text[]) p
             WHERE current_setting(p, true) IS NOT NULL),
       current_setting('synchronized_standby_slots', true)
FROM pg_roles r WHERE r.rolname = current_user
"""


def server_facts(conn: Connection) -> ServerFacts:
    params_sql = {"roles": list(REPLICATION_ROLES + ADMIN_ROLES), "switches": list(PROVIDER_SWITCHES)}
    (row,) = query(conn, _FACTS_SQL, params_sql, what="read the server settings")
    params = conn.get_dsn_parameters()
    host = params.get("host") or params.get("hostaddr") or "local socket"
    return ServerFacts(
        version=row[0], version_num=row[1], wal_level=row[2],
        max_replication_slots=row[3], used_replication_slots=row[4],
        max_wal_senders=row[5], used_wal_senders=row[6],
        max_slot_wal_keep_size_mb=row[7], wal_sender_timeout_ms=row[8],
        user=row[9], database=row[10], can_replicate=bool(row[11] or row[12]), superuser=bool(row[12]),
        member_of=tuple(row[13]), provider_switches=tuple((p, v) for p, v in row[14]),
        synchronized_standby_slots=row[15],
        tls=tls_status(conn), local=is_local(conn.info.host), host=host, port=params.get("port", "5432"),
    )


# -- publications ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Publication:
    name: str
    all_tables: bool
    operations: tuple[str, ...]
    schemas: tuple[str, ...]
    tables: tuple[str, ...]  # every published table, schema-qualified, as pg_publication_tables lists them

    def describe(self) -> str:
        ops = ", ".join(self.operations) or "nothing"
        if self.all_tables:
            what = "all tables"
        elif self.schemas:
            what = "tables in schema " + ", ".join(self.schemas)
            if self.tables:
                what += f" ({len(self.tables)} now)"
        else:
            what = f"{len(self.tables)} table{'s' if len(self.tables) != 1 else ''}"
        listed = ": " + ", ".join(self.tables) if self.tables else ""
        return f"publishes {ops} for {what}{listed}"


def find_publication(conn: Connection, name: str) -> Publication | None:
    # pg_publication_namespace (FOR TABLES IN SCHEMA) exists from PostgreSQL 15 on.
    schemas = sql.SQL("ARRAY(SELECT n.nspname FROM pg_publication_namespace pn JOIN pg_namespace n"
                      " ON n.oid = pn.pnnspid WHERE pn.pnpubid = p.oid ORDER BY 1)"
                      if conn.server_version >= 150000 else "ARRAY[]::name[]")
    rows = query(
        conn,
        sql.SQL(
            "SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate, {},"
            " ARRAY(SELECT format('%%s.%%s', quote_ident(schemaname), quote_ident(tablename))"
            "       FROM pg_publication_tables WHERE pubname = p.pubname ORDER BY 1)"
            " FROM pg_publication p WHERE pubname = %s"
        ).format(schemas),
        (name,), what=f"read publication {name!r}",
    )
    if not rows:
        return None
    row = rows[0]
    operations = tuple(op for op, on in zip(OPERATIONS, row[1:5], strict=True) if on)
    return Publication(name, bool(row[0]), operations, tuple(row[5]), tuple(row[6]))


def published_tables(conn: Connection, publication: str) -> list[tuple[str, str]]:
    """The (schema, table) pairs a publication streams."""
    rows = query(conn, "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s ORDER BY 1, 2",
                 (publication,), what=f"read the tables of publication {publication!r}")
    return [(row[0], row[1]) for row in rows]


def table_identifier(name: str) -> sql.Identifier:
    """``schema.table`` or ``table`` as an identifier; names are taken literally (case kept), a quoted part
    may hold dots (``"eu.west".orders``), as ``backfill --table`` takes them."""
    try:
        meant = parse_table_name(name)
    except ValueError as e:
        raise ConfigError(f"{e}: use schema.table or table") from None
    if len(meant) > 1:
        spellings = " or ".join(repr(display_name(s, t)) for s, t in meant if s is not None)
        raise ConfigError(f"table name {name!r} has more than one dot: quote the part holding one, {spellings}")
    schema, table = meant[0]
    return sql.Identifier(schema, table) if schema is not None else sql.Identifier(table)


def resolve_tables(conn: Connection, names: list[str]) -> list[str]:
    """The schema-qualified names of existing tables, as pg_publication_tables spells them."""
    resolved = []
    for name in names:
        rows = query(
            conn,
            "SELECT format('%%s.%%s', quote_ident(n.nspname), quote_ident(c.relname))"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)",
            (table_identifier(name).as_string(conn),), what=f"look up table {name!r}",
        )
        if not rows:
            raise ConfigError(f"table {name!r} does not exist (names are case-sensitive)")
        resolved.append(rows[0][0])
    return resolved


def create_publication(conn: Connection, name: str, *, tables: list[str], schemas: list[str], all_tables: bool,
                       operations: list[str], before: sql.Composable | None = None) -> None:
    """``CREATE PUBLICATION`` for the tables, the schemas, or all tables, publishing ``operations``.

    ``before`` runs first in the same transaction (creating a table to publish): both or neither.
    """
    target: sql.Composable
    if all_tables:
        target = sql.SQL("FOR ALL TABLES")
    else:
        parts = []
        if tables:
            parts.append(sql.SQL("TABLE {}").format(sql.SQL(", ").join(table_identifier(t) for t in tables)))
        if schemas:
            parts.append(sql.SQL("TABLES IN SCHEMA {}").format(
                sql.SQL(", ").join(sql.Identifier(s) for s in schemas)))
        target = sql.Composed([sql.SQL("FOR "), sql.SQL(", ").join(parts)])
    statement = sql.SQL("CREATE PUBLICATION {} {} WITH (publish = {})").format(
        sql.Identifier(name), target, sql.Literal(", ".join(operations)))
    if before is not None:
        # One simple query: PostgreSQL runs its statements as one transaction.
        statement = sql.SQL("{}; {}").format(before, statement)
    query(conn, statement, what=f"create publication {name!r}")
    logger.info("created publication %s", name)


def drop_publication(conn: Connection, name: str) -> bool:
    """Drop a publication; False when it did not exist."""
    what = f"drop publication {name!r}"
    if not query(conn, "SELECT 1 FROM pg_publication WHERE pubname = %s", (name,), what=what):
        return False
    query(conn, sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name)), what=what)
    logger.info("dropped publication %s", name)
    return True


def tables_without_replica_identity(conn: Connection, publication: str) -> list[str]:
    """Published tables on which UPDATE and DELETE fail: no primary key, index or FULL identity."""
    rows = query(
        conn,
        "SELECT format('%%s.%%s', quote_ident(pt.schemaname), quote_ident(pt.tablename))"
        " FROM pg_publication_tables pt"
        " JOIN pg_namespace n ON n.nspname = pt.schemaname"
        " JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename"
        " WHERE pt.pubname = %s AND NOT ("
        "   c.relreplident = 'f'"
        "   OR (c.relreplident = 'd' AND EXISTS"
        "       (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))"
        "   OR (c.relreplident = 'i' AND EXISTS"
        "       (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)))"
        " ORDER BY 1",
        (publication,), what="read the replica identity of published tables",
    )
    return [row[0] for row in rows]


@dataclass(frozen=True)
class PublishedTable:
    """A published table's identity setting and columns, for the checks of --filter and --columns."""

    schema: str
    table: str
    quoted: str  # schema.table, quoted where needed
    full_identity: bool  # REPLICA IDENTITY FULL: updates and deletes carry the whole old row
    columns: tuple[str, ...]


def published_table_facts(conn: Connection, publication: str) -> list[PublishedTable]:
    rows = query(
        conn,
        "SELECT pt.schemaname, pt.tablename,"
        "  format('%%s.%%s', quote_ident(pt.schemaname), quote_ident(pt.tablename)), c.relreplident = 'f',"
        "  ARRAY(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0"
        "        AND NOT a.attisdropped ORDER BY a.attnum)"
        " FROM pg_publication_tables pt"
        " JOIN pg_namespace n ON n.nspname = pt.schemaname"
        " JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename"
        " WHERE pt.pubname = %s ORDER BY 3",
        (publication,), what="read the published tables' replica identity and columns",
    )
    return [PublishedTable(s, t, q, bool(full), tuple(cols)) for s, t, q, full, cols in rows]
