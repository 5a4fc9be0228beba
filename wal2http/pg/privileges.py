"""What the connected role may do with wal2http's own tables and publications, and the statement that allows it."""

from __future__ import annotations

from dataclasses import dataclass

from wal2http.checklist import ident
from wal2http.pg.backfill_model import LEGACY_REQUESTS_SCHEMA, REQUESTS_SCHEMA, REQUESTS_TABLE
from wal2http.pg.connection import Connection, query

REQUESTS_NAME = f"{REQUESTS_SCHEMA}.{REQUESTS_TABLE}"
LEGACY_NAME = f"{LEGACY_REQUESTS_SCHEMA}.{REQUESTS_TABLE}"

# By catalogue lookups, not to_regclass(): naming a table in a schema the role may not use is an error.
_ACCESS_SQL = """
WITH t AS (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = %(schema)s AND c.relname = %(table)s AND c.relkind IN ('r', 'p')),
     s AS (SELECT d.objid AS oid FROM pg_depend d JOIN t ON d.refobjid = t.oid
           WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
             AND d.deptype IN ('a', 'i') AND (SELECT relkind FROM pg_class WHERE oid = d.objid) = 'S')
SELECT current_user::text, current_database()::text,
       EXISTS (SELECT 1 FROM t),
       EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = %(legacy)s AND c.relname = %(table)s AND c.relkind IN ('r', 'p')),
       n.oid IS NOT NULL,
       CASE WHEN n.oid IS NULL THEN has_database_privilege(current_database(), 'CREATE')
            ELSE has_schema_privilege(n.oid, 'CREATE') END,
       n.oid IS NOT NULL AND has_schema_privilege(n.oid, 'USAGE'),
       coalesce((SELECT has_table_privilege(oid, 'SELECT') FROM t), false),
       coalesce((SELECT has_table_privilege(oid, 'UPDATE') FROM t), false),
       coalesce((SELECT has_table_privilege(oid, 'INSERT') FROM t), false),
       coalesce((SELECT bool_and(has_sequence_privilege(oid, 'USAGE')) FROM s), false)
FROM (SELECT 1) one LEFT JOIN pg_namespace n ON n.nspname = %(schema)s
"""


@dataclass(frozen=True)
class RequestsAccess:
    """Where backfill requests are kept (schema ``wal2http``) and what the role may do there."""

    role: str
    database: str
    exists: bool
    legacy: bool  # public.wal2http_backfill, where wal2http 0.1 kept them
    schema_exists: bool
    may_create: bool  # CREATE on the schema, or on the database while the schema is missing
    schema_usage: bool
    may_select: bool
    may_update: bool
    may_insert: bool
    sequence_usage: bool

    @property
    def grant(self) -> str:
        role = ident(self.role)
        return (f"GRANT USAGE ON SCHEMA {REQUESTS_SCHEMA} TO {role}; GRANT SELECT, INSERT, UPDATE ON {REQUESTS_NAME} "
                f"TO {role}; GRANT USAGE ON SEQUENCE {REQUESTS_NAME}_id_seq TO {role};")

    def migration(self) -> tuple[str, str] | None:
        """The requests table is still where 0.1 kept it: what is wrong, and the statement that moves it."""
        if not self.legacy or self.exists:
            return None
        create = "" if self.schema_exists else f"CREATE SCHEMA {REQUESTS_SCHEMA} AUTHORIZATION {ident(self.role)}; "
        detail = (f"backfill requests are kept in {REQUESTS_NAME} now, and {LEGACY_NAME} (where wal2http 0.1 kept "
                  "them) is not read: its unfinished requests wait, and no backfill can be queued until it is moved")
        fix = (f"as the owner of {LEGACY_NAME} (or a superuser): {create}"
               f"ALTER TABLE {LEGACY_NAME} SET SCHEMA {REQUESTS_SCHEMA};")
        return detail, fix

    def queue_refusal(self) -> tuple[str, str] | None:
        """Why this role cannot queue a backfill request (creating the table first if needed), and the fix."""
        role = ident(self.role)
        if self.exists:
            if self.schema_usage and self.may_select and self.may_insert and self.may_update and self.sequence_usage:
                return None
            return f"role {self.role} may not queue backfill requests in {REQUESTS_NAME}", self.grant
        if self.may_create:
            return None
        if self.schema_exists:
            detail = f"role {self.role} may not create {REQUESTS_NAME}, where backfill requests are kept"
            fix = (f"as the owner of schema {REQUESTS_SCHEMA} (or a superuser): GRANT USAGE, CREATE ON SCHEMA "
                   f"{REQUESTS_SCHEMA} TO {role}; or ALTER SCHEMA {REQUESTS_SCHEMA} OWNER TO {role};")
            return detail, fix
        detail = f"role {self.role} may not create schema {REQUESTS_SCHEMA}, where backfill requests are kept"
        fix = (f"as a superuser or the owner of database {self.database}: "
               f"CREATE SCHEMA {REQUESTS_SCHEMA} AUTHORIZATION {role};")
        return detail, fix

    def read_refusal(self) -> tuple[str, str] | None:
        """Why ``run`` cannot work through the requests (read them, record progress), and the fix."""
        if not self.exists or (self.schema_usage and self.may_select and self.may_update):
            return None
        return f"role {self.role} may not read and update {REQUESTS_NAME}: queued backfills never run", self.grant


def requests_access(conn: Connection) -> RequestsAccess:
    params = {"table": REQUESTS_TABLE, "legacy": LEGACY_REQUESTS_SCHEMA, "schema": REQUESTS_SCHEMA}
    (row,) = query(conn, _ACCESS_SQL, params, what=f"check the privileges on {REQUESTS_NAME}")
    return RequestsAccess(*row)


@dataclass(frozen=True)
class PublishAccess:
    """Whether the role may create a publication of these tables: CREATE on the database, owning each."""

    role: str
    database: str
    superuser: bool
    may_create: bool
    not_owned: tuple[str, ...]

    def refusal(self, publication: str, tables: list[str], everything: str | None) -> str | None:
        """None when allowed; else what is missing and the statements that allow it.

        ``everything`` names a FOR ALL TABLES or TABLES IN SCHEMA target, which only a superuser may publish.
        """
        role = ident(self.role)
        if self.superuser:
            return None
        if everything is not None:
            return (f"role {self.role} may not create publication {publication!r}: publishing {everything} needs "
                    f"a superuser; have one run slot create, or CREATE PUBLICATION {ident(publication)} ...; "
                    "(README: The publication)")
        if self.may_create and not self.not_owned:
            return None
        grants = [] if self.may_create else [f"GRANT CREATE ON DATABASE {ident(self.database)} TO {role};"]
        grants += [f"ALTER TABLE {t} OWNER TO {role};" for t in self.not_owned]
        needs = [] if self.may_create else [f"CREATE on database {self.database}"]
        if self.not_owned:
            needs.append(f"ownership of {', '.join(self.not_owned)}")
        return (f"role {self.role} may not create publication {publication!r}: CREATE PUBLICATION needs "
                f"{' and '.join(needs)}; as a superuser: {' '.join(grants)} or have a superuser or the tables' "
                f"owner create it: CREATE PUBLICATION {ident(publication)} FOR TABLE {', '.join(tables)};")


def publish_access(conn: Connection, tables: list[str]) -> PublishAccess:
    """``tables`` as ``resolve_tables`` spells them (schema-qualified, quoted where needed)."""
    rows = query(conn, "SELECT current_user::text, current_database()::text, r.rolsuper,"
                       " has_database_privilege(current_database(), 'CREATE'),"
                       " ARRAY(SELECT t FROM unnest(%s::text[]) t"
                       "       WHERE NOT pg_has_role((SELECT relowner FROM pg_class WHERE oid = t::regclass),"
                       "                             'USAGE'))"
                       " FROM pg_roles r WHERE r.rolname = current_user", (tables,),
                 what="check the privileges CREATE PUBLICATION needs")
    role, database, superuser, may_create, not_owned = rows[0]
    return PublishAccess(role, database, bool(superuser), bool(may_create), tuple(not_owned))
