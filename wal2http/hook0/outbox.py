"""``slot create --hook0-outbox``: the outbox table checked or created, and published."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wal2http.checklist import Status, require
from wal2http.config.sections import SourceConfig
from wal2http.errors import ConfigError, DatabaseError
from wal2http.hook0 import checks as hook0_checks
from wal2http.pg import outbox as outbox_sql
from wal2http.pg import publication as publication_sql
from wal2http.pg.connection import Connection


@dataclass(frozen=True)
class Outbox:
    """What ``slot create --hook0-outbox`` did to the outbox table."""

    table: str  # quoted schema.table
    created: bool
    added_to_publication: bool  # by ALTER PUBLICATION ... ADD TABLE

    def as_json(self) -> dict[str, Any]:
        return {"table": self.table, "created": self.created, "added_to_publication": self.added_to_publication}


def existing_outbox(conn: Connection, source: SourceConfig, outbox: tuple[str, str] | None,
                    facts: publication_sql.ServerFacts, if_not_exists: bool,
                    warnings: list[str]) -> outbox_sql.Table | None:
    """The outbox table if it exists, after checking it can serve; raises before anything is created."""
    if outbox is None:
        return None
    schema, table = outbox
    found = outbox_sql.find_table(conn, schema, table)
    if found is None:
        if facts.version_num < outbox_sql.MIN_VERSION:
            raise DatabaseError(f"PostgreSQL {facts.version} cannot create the Hook0 outbox table "
                                "(gen_random_uuid(), xid8): --hook0-outbox needs PostgreSQL 13 or later; "
                                "create the table by hand (see the README, Hook0)")
        return None
    if not if_not_exists:
        raise ConfigError(f"table {found.name} already exists; pass --if-not-exists to use it as the Hook0 "
                          "outbox (its columns are checked first)")
    create = hook0_checks.create_command(outbox, source)
    warnings.extend(require([hook0_checks.outbox_table_check(found, found.name, messages=False, prefix="",
                                                             create=create)]))
    return found


def outbox_into(conn: Connection, publication: publication_sql.Publication, outbox: tuple[str, str],
                existing: outbox_sql.Table | None) -> tuple[bool, bool]:
    """Create the outbox table if missing, and add it to the existing publication unless that streams it
    already, in one transaction; (created, added)."""
    schema, table = outbox
    if existing is not None:
        included = outbox_sql.membership(conn, publication.name, schema, table) is not None
    else:  # a new table is in the publication only through FOR ALL TABLES or FOR TABLES IN SCHEMA
        included = publication.all_tables or schema in publication.schemas
    outbox_sql.set_up(conn, schema, table, create=existing is None,
                      publication=None if included else publication.name)
    return existing is None, not included


def outbox_report(conn: Connection, source: SourceConfig, publication: publication_sql.Publication,
                  outbox: tuple[str, str], created: bool, added: bool, warnings: list[str]) -> Outbox:
    """What was done, and a warning when the publication still does not stream the outbox's rows."""
    found = outbox_sql.find_table(conn, *outbox)
    assert found is not None
    create = hook0_checks.create_command(outbox, source)
    streamed = hook0_checks.outbox_publication_check(conn, publication, *outbox, found, create)
    if streamed.status is not Status.OK:
        warnings.append(streamed.message)
    return Outbox(found.name, created, added)
