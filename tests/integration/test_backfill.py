"""Backfill: a receiver applying the events in order ends with exactly the table's rows (README, Backfilling)."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterable
from typing import Any

import psycopg2

from tests.integration.conftest import Start, publish
from tests.support import wait_until
from tests.support.pgcluster import Database
from tests.support.process import run_once
from tests.support.receiver import Receiver

Rows = dict[tuple[str, str], dict[str, Any]]


def materialize(events: Iterable[dict[str, Any]]) -> dict[str, Rows]:
    """Apply events as README says: read/insert/update upsert ``new`` by ``key`` (an update whose ``old``
    key differs removes that one first), delete removes ``key``, truncate empties the table."""
    tables: dict[str, Rows] = {}
    for e in events:
        op = e["op"]
        if op == "message":
            continue
        rows = tables.setdefault(f"{e['schema']}.{e['table']}", {})
        if op == "truncate":
            rows.clear()
            continue
        key = e["key"]
        if op == "delete":
            rows.pop(_key(key), None)
            continue
        if op == "update" and e["old"] is not None:
            old_key = {name: e["old"].get(name) for name in key}
            if old_key != key:
                rows.pop(_key(old_key), None)
        rows[_key(key)] = e["new"]
    return tables


def _key(key: dict[str, Any]) -> tuple[str, str]:
    return ("key", json.dumps(key, sort_keys=True))


def table_rows(db: Database, table: str, key: list[str]) -> Rows:
    """The table as JSON objects by key (columns of plain types: int, text)."""
    rows: Rows = {}
    for (row,) in db.execute(f"SELECT row_to_json(t) FROM {table} t"):
        rows[_key({k: row[k] for k in key})] = row
    return rows


def backfill(wal2http_bin: str, db: Database, *args: str, expect: int = 0) -> tuple[str, str]:
    code, out, err = run_once(wal2http_bin, ["backfill", *args], {"WAL2HTTP_DSN": db.dsn})
    assert code == expect, f"exit {code}:\n{out}\n{err}"
    return out, err


def states(db: Database) -> list[tuple[str, str, int]]:
    return [(r[0], r[1], r[2]) for r in db.execute(
        "SELECT schema_name || '.' || table_name, state, rows_sent FROM wal2http_backfill ORDER BY id")]


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


class Writer(threading.Thread):
    """Inserts, updates, deletes and key changes on ``items`` while a backfill runs; bounded in count and time."""

    def __init__(self, db: Database, table: str, first_free: int, operations: int = 600, rate: float = 300) -> None:
        super().__init__(daemon=True)
        self.db, self.table, self.next_id = db, table, first_free
        self.operations, self.rate = operations, rate
        self.done = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(13)
        deadline = time.monotonic() + 60
        try:
            with self.db.connect() as conn:
                conn.autocommit = True
                with conn.cursor() as cur:
                    for i in range(self.operations):
                        if time.monotonic() > deadline:
                            break
                        self._one(cur, rng, i)
                        self.done += 1
                        time.sleep(1 / self.rate)
        except BaseException as e:  # reported by the test
            self.error = e

    def _one(self, cur: Any, rng: random.Random, i: int) -> None:
        t = self.table
        pick = rng.random()
        victim = rng.randrange(1, self.next_id)
        if pick < 0.3:
            cur.execute(f"INSERT INTO {t} (id, v, n) VALUES (%s, %s, %s)", (self.next_id, f"new {i}", i))
            self.next_id += 1
        elif pick < 0.6:
            cur.execute(f"UPDATE {t} SET v = %s, n = n + 1 WHERE id = %s", (f"upd {i}", victim))
        elif pick < 0.8:
            cur.execute(f"DELETE FROM {t} WHERE id = %s", (victim,))
        else:  # a primary-key change: to a fresh key, beyond or before the backfill's position
            try:
                cur.execute(f"UPDATE {t} SET id = %s WHERE id = %s", (self.next_id, victim))
                self.next_id += 1
            except psycopg2.errors.UniqueViolation:
                pass


ITEMS = ["CREATE TABLE items (id int PRIMARY KEY, v text, n int)", "CREATE TABLE fence (n int PRIMARY KEY)"]
# A condition true for every row that makes each chunk select take about 0.1 s (1 ms a row): the writer's
# changes then often commit while a chunk is between its watermarks, the case the algorithm is about.
SLOW = "CREATE FUNCTION slow(int) RETURNS bool LANGUAGE sql AS 'SELECT pg_sleep(0.001) IS NOT NULL'"


def fill(db: Database, table: str, n: int) -> None:
    db.execute(f"INSERT INTO {table} (id, v, n) SELECT i, 'old ' || i, 0 FROM generate_series(1, %s) i", (n,))


def test_backfill_under_concurrent_changes_reproduces_the_table(
        db: Database, receiver: Receiver, start_wal2http: Start, wal2http_bin: str) -> None:
    publish(db, *ITEMS, SLOW, tables="items, fence")
    fill(db, "items", 3000)
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url, "--batch-size", "50",
                              "--backfill-chunk-size", "100")
    writer = Writer(db, "items", 3001, operations=2000)
    writer.start()
    out, _ = backfill(wal2http_bin, db, "--table", "public.items", "--where", "slow(id)")
    assert "backfill request 1 queued" in out
    wait_done(db)
    writer.join(70)
    assert writer.error is None and writer.done > 100
    events = fence(db, receiver)
    assert wal2http.running
    reads = [e for e in events if e["op"] == "read"]
    assert len(reads) > 2000
    assert materialize(events)["public.items"] == table_rows(db, "items", ["id"])
    assert states(db) == [("public.items", "done", len(reads))]
    assert all(r["old"] is None and r["key"] == {"id": r["new"]["id"]} for r in reads)
    assert len({e["id"] for e in events}) == len(events)
