"""Publications and slots of a test database: set them up, and read back what wal2http left."""

from __future__ import annotations

from typing import Any

from tests.support.pgcluster import Database

__all__ = ["publish", "published", "ready", "slot_row"]


def publish(db: Database, *ddl: str, tables: str = "") -> None:
    """Run DDL, then create the ``wal2http`` publication for ``tables`` (all tables when empty)."""
    for statement in ddl:
        db.execute(statement)
    target = f"FOR TABLE {tables}" if tables else "FOR ALL TABLES"
    db.execute(f"CREATE PUBLICATION wal2http {target}")


def ready(db: Database) -> None:
    """A table ``t``, published, and the ``wal2http`` slot: what ``run`` needs to start without --create-slot."""
    publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    db.execute("SELECT pg_create_logical_replication_slot('wal2http', 'pgoutput')")


def slot_row(db: Database, name: str = "wal2http") -> tuple[Any, ...] | None:
    """The slot's plugin, whether it is active, and its confirmed_flush_lsn as text; None if it is gone."""
    rows = db.execute("SELECT plugin, active, confirmed_flush_lsn::text FROM pg_replication_slots "
                      "WHERE slot_name = %s", (name,))
    return rows[0] if rows else None


def published(db: Database, publication: str = "wal2http") -> list[str]:
    """The tables of the publication, as schema.table, sorted."""
    rows = db.execute("SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = %s "
                      "ORDER BY 1", (publication,))
    return [r[0] for r in rows]
