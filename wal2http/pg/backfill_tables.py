"""Backfill SQL: what a table looks like to a chunk select (columns, key order, shape) and its conditions."""

from __future__ import annotations

import logging

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from wal2http.decode.pgoutput import Column
from wal2http.errors import ConfigError, KeylessTable, LockUnavailable
from wal2http.pg.backfill_model import (
    KeyColumn,
    QualifiedName,
    TableSpec,
    display_name,
    parse_table_name,
)
from wal2http.pg.catalog import (
    IDENTITY_SQL_COLUMNS,
    base_types,
    identity_columns,
    row_identity,
)
from wal2http.pg.connection import Connection, error_text, execute, query

logger = logging.getLogger(__name__)

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
