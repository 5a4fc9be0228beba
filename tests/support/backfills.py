"""Backfill requests as a test makes and follows them: queue one, read the states, wait, fence the stream."""

from __future__ import annotations

from typing import Any

from tests.support import wait_until
from tests.support.pgcluster import Database
from tests.support.process import run_once
from tests.support.receiver import Receiver

__all__ = ["backfill", "fence", "fill", "states", "wait_done"]


def backfill(wal2http_bin: str, db: Database, *args: str, expect: int = 0) -> tuple[str, str]:
    code, out, err = run_once(wal2http_bin, ["backfill", *args], {"WAL2HTTP_DSN": db.dsn})
    assert code == expect, f"exit {code}:\n{out}\n{err}"
    return out, err


def states(db: Database) -> list[tuple[str, str, int]]:
    return [(r[0], r[1], r[2]) for r in db.execute(
        "SELECT schema_name || '.' || table_name, state, rows_sent FROM wal2http.wal2http_backfill ORDER BY id")]


def wait_done(db: Database, timeout: float = 90) -> None:
    def finished() -> bool:
        found = states(db)
        return bool(found) and all(s in ("done", "failed", "cancelled") for _, s, _ in found)

    wait_until(finished, timeout=timeout, interval=0.2, what="backfill finished")


def fence(db: Database, receiver: Receiver, n: int = 1, timeout: float = 60) -> list[dict[str, Any]]:
    """Insert a marker row and wait until it arrives: everything committed before it arrived too."""
    db.execute("INSERT INTO fence VALUES (%s)", (n,))
    wait_until(lambda: any(e["table"] == "fence" and e["op"] == "insert" and e["new"]["n"] == n
                           for e in receiver.events()), timeout=timeout, what=f"fence {n}")
    return receiver.events()


def fill(db: Database, table: str, n: int) -> None:
    db.execute(f"INSERT INTO {table} (id, v, n) SELECT i, 'old ' || i, 0 FROM generate_series(1, %s) i", (n,))
