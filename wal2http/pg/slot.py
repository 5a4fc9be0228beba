"""Replication slot and publication SQL used by ``run``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg2

from wal2http.errors import ConfigError, DatabaseError
from wal2http.lsn import format_lsn, parse_lsn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlotInfo:
    name: str
    plugin: str
    database: str
    active_pid: int | None
    confirmed_flush_lsn: int | None


def find_slot(conn: Any, name: str) -> SlotInfo | None:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT slot_name, plugin, database, active_pid, confirmed_flush_lsn::text"
            " FROM pg_replication_slots WHERE slot_name = %s",
            (name,),
        )
        row = cur.fetchone()
    if row is None:
        return None
    return SlotInfo(row[0], row[1] or "", row[2] or "", row[3], parse_lsn(row[4]) if row[4] else None)


def create_slot(conn: Any, name: str) -> int:
    """Create a pgoutput slot; return its consistent point."""
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))
            lsn = parse_lsn(cur.fetchone()[0])
    except psycopg2.Error as e:
        raise DatabaseError(f"cannot create replication slot {name!r}: {str(e).strip()}") from None
    logger.info("created replication slot %s (pgoutput) at %s", name, format_lsn(lsn))
    return lsn


def publication_exists(conn: Any, name: str) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,))
        return cur.fetchone() is not None


def published_tables(conn: Any, publication: str) -> list[tuple[str, str]]:
    """The (schema, table) pairs a publication streams."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s ORDER BY 1, 2",
            (publication,),
        )
        return [(row[0], row[1]) for row in cur.fetchall()]


def prepare(conn: Any, slot: str, publication: str, create: bool) -> SlotInfo:
    """Check that the slot and publication can be streamed; create the slot if asked."""
    dbname = conn.get_dsn_parameters().get("dbname", "")
    if not publication_exists(conn, publication):
        raise ConfigError(
            f"publication {publication!r} does not exist in database {dbname!r}; "
            f"create it with: CREATE PUBLICATION {publication} FOR TABLE ...;"
        )
    info = find_slot(conn, slot)
    if info is None:
        if not create:
            raise ConfigError(
                f"replication slot {slot!r} does not exist; "
                "pass --create-slot, or run 'wal2http slot create'"
            )
        create_slot(conn, slot)
        info = find_slot(conn, slot)
        assert info is not None
    if info.plugin != "pgoutput":
        raise ConfigError(f"replication slot {slot!r} uses plugin {info.plugin!r}; wal2http needs pgoutput")
    if info.database != dbname:
        raise ConfigError(
            f"replication slot {slot!r} belongs to database {info.database!r}, "
            f"but the DSN connects to {dbname!r}"
        )
    return info
