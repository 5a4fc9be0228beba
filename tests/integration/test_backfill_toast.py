"""Large (TOASTed) values: backfilled rows arrive whole, chunks are bounded by bytes, --reselect-toast."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from typing import Any

import pytest

from tests.support import wait_until
from tests.support.materialize import materialize, table_rows
from tests.support.pgcluster import Database
from tests.support.process import Start, run_once
from tests.support.receiver import Receiver
from tests.support.replication import publish

MB = 1_000_000
BIG = ("CREATE TABLE big (id int PRIMARY KEY, n int NOT NULL DEFAULT 0, v text)",
       # Out of line and uncompressed: every value is TOASTed and costs no compression time.
       "ALTER TABLE big ALTER COLUMN v SET STORAGE EXTERNAL",
       "CREATE TABLE fence (n int PRIMARY KEY)")
# Makes each chunk select last about 50 ms a row, so updates often land between a chunk's watermarks.
SLOW = "CREATE FUNCTION slow(int) RETURNS bool LANGUAGE sql AS 'SELECT pg_sleep(0.05) IS NOT NULL'"
EVENT_BYTES = str(8 * 1024 * 1024)  # a read event carries a whole 1.2 MB value


def fill_big(db: Database, rows: int, size: int) -> None:
    """``rows`` rows whose ``v`` is ``size`` bytes of text, distinct per row."""
    db.execute("INSERT INTO big (id, v) SELECT i, repeat(md5(i::text), %s) FROM generate_series(1, %s) i",
               (size // 32, rows))


def request(wal2http_bin: str, db: Database, *args: str) -> None:
    code, out, err = run_once(wal2http_bin, ["backfill", "--table", "public.big", *args], {"WAL2HTTP_DSN": db.dsn})
    assert code == 0, f"exit {code}:\n{out}\n{err}"


def state(db: Database) -> tuple[str, int, int] | None:
    rows = db.execute("SELECT state, rows_sent, chunks FROM wal2http.wal2http_backfill ORDER BY id DESC LIMIT 1")
    return (rows[0][0], rows[0][1], rows[0][2]) if rows else None


def wait_finished(db: Database, timeout: float) -> tuple[str, int, int]:
    def finished() -> tuple[str, int, int] | None:
        found = state(db)
        return found if found is not None and found[0] in ("done", "failed", "cancelled") else None

    return wait_until(finished, timeout=timeout, interval=0.2, what="backfill finished")


def fence(db: Database, receiver: Receiver, n: int = 1, timeout: float = 60) -> list[dict[str, Any]]:
    """Insert a marker row and wait until it arrives: everything committed before it arrived too."""
    db.execute("INSERT INTO fence VALUES (%s)", (n,))
    wait_until(lambda: any(e["table"] == "fence" and e["op"] == "insert" and e["new"]["n"] == n
                           for e in receiver.events()), timeout=timeout, what=f"fence {n}")
    return receiver.events()


class Updater(threading.Thread):
    """Updates ``n`` (never ``v``) of random rows at ``rate`` a second until stopped; bounded in count and time."""

    def __init__(self, db: Database, rows: int, rate: float = 50, limit: int = 3000, seconds: float = 90) -> None:
        super().__init__(daemon=True)
        self.db, self.rows, self.rate, self.limit, self.seconds = db, rows, rate, limit, seconds
        self.stopped = threading.Event()
        self.done = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(21)
        deadline = time.monotonic() + self.seconds
        try:
            # Not ``with conn``: psycopg2 opens a transaction block for it even in autocommit, and every
            # update would then reach the stream at once, at the end.
            with contextlib.closing(self.db.connect()) as conn:
                conn.autocommit = True
                with conn.cursor() as cur:
                    while self.done < self.limit and time.monotonic() < deadline and not self.stopped.is_set():
                        cur.execute("UPDATE big SET n = n + 1 WHERE id = %s", (rng.randint(1, self.rows),))
                        self.done += 1
                        self.stopped.wait(1 / self.rate)
        except BaseException as e:  # reported by the test
            self.error = e


@pytest.mark.parametrize("identity", ["default", "full"])
def test_large_values_arrive_whole_while_other_columns_change(
        db: Database, receiver: Receiver, start_wal2http: Start, wal2http_bin: str, identity: str) -> None:
    publish(db, *BIG, SLOW, *(["ALTER TABLE big REPLICA IDENTITY FULL"] if identity == "full" else []),
            tables="big, fence")
    fill_big(db, 40, int(1.2 * MB))
    start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url, "--backfill-chunk-size", "5",
                   "--max-event-bytes", EVENT_BYTES)
    # Under FULL every update carries the old and new 1.2 MB row (2.4 MB a body, kept by the receiver):
    # 300 of them are enough to land between watermarks, and keep the recorded events near 1.5 GB.
    updater = Updater(db, 40, limit=3000 if identity == "default" else 300)
    updater.start()
    try:
        request(wal2http_bin, db, "--where", "slow(id)")
        assert wait_finished(db, timeout=120)[0] == "done"
    finally:
        updater.stopped.set()
        updater.join(10)
    assert updater.error is None and updater.done > 50
    events = fence(db, receiver)
    # Updates arrived without the large value: the table's rows are whole only through the reads.
    if identity == "default":
        assert any(e["op"] == "update" and e["unchanged_toast"] == ["v"] for e in events)
    result = materialize(events)["public.big"]
    expected = table_rows(db, "big", ["id"])
    lacking = sorted(row["id"] for key, row in expected.items() if "v" not in result.get(key, {}))
    assert lacking == []
    assert result == expected
    assert all(len(e["new"]["v"]) >= MB for e in events if e["op"] == "read")


def test_a_chunk_holds_at_most_its_byte_budget(db: Database, receiver: Receiver, start_wal2http: Start,
                                                wal2http_bin: str) -> None:
    publish(db, *BIG, tables="big, fence")
    fill_big(db, 20, int(1.2 * MB))
    db.execute("INSERT INTO big (id, v) SELECT i, 'small ' || i FROM generate_series(21, 60) i")
    # 3 MB hold two of the large rows; the 40 small ones (under 10 bytes each) fit beside the last two.
    start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url, "--backfill-chunk-size", "1000",
                   "--backfill-chunk-bytes", str(3 * MB), "--max-event-bytes", EVENT_BYTES)
    request(wal2http_bin, db)
    assert wait_finished(db, timeout=60) == ("done", 60, 10)
    events = fence(db, receiver)
    assert materialize(events)["public.big"] == table_rows(db, "big", ["id"])
    reads: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        if e["op"] == "read":
            reads.setdefault(e["commit_lsn"], []).append(e)
    # Each chunk's reads share their high watermark's commit: chunks of two large rows, the last with the rest.
    assert [len(chunk) for chunk in reads.values()] == [2] * 9 + [42]
    assert all(sum(len(e["new"]["v"]) for e in chunk) <= 3 * MB for chunk in reads.values())


def test_reselect_toast_follows_an_update_lacking_a_large_value_with_a_read_of_the_row(
        db: Database, receiver: Receiver, start_wal2http: Start) -> None:
    publish(db, *BIG, "CREATE TABLE plain (id int PRIMARY KEY, v text)", tables="big, plain, fence")
    fill_big(db, 6, 100_000)
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url, "--reselect-toast",
                              "--max-event-bytes", EVENT_BYTES)
    # Rows the receiver never saw: an update that leaves v alone does not carry it.
    db.execute("UPDATE big SET n = 1 WHERE id = 1")
    with db.connect() as conn, conn.cursor() as cur:  # one transaction, several rows: one select for them
        cur.execute("UPDATE big SET n = 2 WHERE id IN (2, 3, 4)")
        cur.execute("INSERT INTO plain VALUES (1, 'x')")
    db.execute("UPDATE big SET v = repeat('w', 50000) WHERE id = 5")  # v changed: carried, nothing to re-read
    db.execute("DELETE FROM big WHERE id = 4")  # deleted before its re-read may be taken, or after: either way gone
    fence(db, receiver)

    def read_keys() -> set[int]:
        return {e["key"]["id"] for e in receiver.events() if e["table"] == "big" and e["op"] == "read"}

    # The reads come in a later watermark window, which may follow the fence's commit.
    wait_until(lambda: {1, 2, 3} <= read_keys(), timeout=60, what="reads of rows 1, 2 and 3")
    events = receiver.events()
    big = [e for e in events if e["table"] == "big"]
    updates = [e for e in big if e["op"] == "update"]
    assert [(e["key"]["id"], e["unchanged_toast"]) for e in updates] == [
        (1, ["v"]), (2, ["v"]), (3, ["v"]), (4, ["v"]), (5, [])]
    reads = [e for e in big if e["op"] == "read"]
    assert {e["key"]["id"] for e in reads} <= {1, 2, 3, 4}
    assert {1, 2, 3} <= {e["key"]["id"] for e in reads}
    by_key = {e["key"]["id"]: e["commit_lsn"] for e in reads}
    assert by_key[2] == by_key[3]  # one transaction's rows of one table: one select, one window
    for e in reads:  # each after the update it completes, whole
        assert e["unchanged_toast"] == [] and len(e["new"]["v"]) == 100_000
        assert big.index(e) > next(i for i, u in enumerate(big) if u["op"] == "update" and u["key"] == e["key"])
    assert not [e for e in events if e["table"] == "plain" and e["op"] == "read"]
    result = materialize(events)["public.big"]
    expected = table_rows(db, "big", ["id"])
    assert {k: v for k, v in result.items() if k in expected and v["id"] != 6} == {
        k: v for k, v in expected.items() if v["id"] != 6}
    assert wal2http.running
