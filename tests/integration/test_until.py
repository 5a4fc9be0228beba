"""For CI smoke checks and cron: ``run --until now|LSN`` ends by itself, ``slot peek`` shows without consuming."""

from __future__ import annotations

import json

from tests.support.events import assert_confirmed_past
from tests.support.pgcluster import Database
from tests.support.process import Wal2http, run_once
from tests.support.receiver import Receiver
from tests.support.replication import publish
from wal2http.lsn import parse_lsn


def slot_positions(db: Database) -> tuple[str, str]:
    ((restart, confirmed),) = db.execute(
        "SELECT restart_lsn::text, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'wal2http'")
    return restart, confirmed


def wal2http(wal2http_bin: str, db: Database, *args: str, timeout: float = 60) -> tuple[int, str, str]:
    code, out, err = run_once(wal2http_bin, list(args), {"WAL2HTTP_DSN": db.dsn}, timeout=timeout)
    assert "Traceback" not in err, err
    return code, out, err


def test_run_until_now_delivers_what_was_committed_and_queued_before_it_started(
        wal2http_bin: str, db: Database, receiver: Receiver) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY, v text)", "CREATE TABLE items (id int PRIMARY KEY)",
            "INSERT INTO items SELECT generate_series(1, 50)", tables="t, items")
    assert wal2http(wal2http_bin, db, "slot", "create")[0] == 0
    assert wal2http(wal2http_bin, db, "backfill", "--table", "public.items")[0] == 0
    for i in range(1, 4):
        db.execute("INSERT INTO t VALUES (%s, 'x')", (i,))
    args = ("run", "--until", "now", "--sink", "http", "--http-url", receiver.url, "--backfill-chunk-size", "20")
    code, _, err = wal2http(wal2http_bin, db, *args)
    assert code == 0, err
    events = receiver.events()
    assert [e["new"]["id"] for e in events if e["table"] == "t"] == [1, 2, 3]
    assert sorted(e["new"]["id"] for e in events if e["op"] == "read") == list(range(1, 51))
    assert_confirmed_past(db, [e for e in events if e["table"] == "t"])
    assert "stopped:" in err.strip().splitlines()[-1], err
    # Nothing pending: it still ends by itself, having sent nothing.
    receiver.clear()
    code, _, err = wal2http(wal2http_bin, db, *args, timeout=30)
    assert code == 0 and receiver.events() == [], err


def test_run_until_an_lsn_stops_there(wal2http_bin: str, db: Database, receiver: Receiver) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY, v text)", tables="t")
    assert wal2http(wal2http_bin, db, "slot", "create")[0] == 0
    for i in range(1, 4):
        db.execute("INSERT INTO t VALUES (%s, 'x')", (i,))
    (until,) = db.execute("SELECT pg_current_wal_insert_lsn()::text")[0]  # the test cluster commits asynchronously
    for i in range(4, 7):
        db.execute("INSERT INTO t VALUES (%s, 'y')", (i,))
    http = ("--sink", "http", "--http-url", receiver.url)
    code, _, err = wal2http(wal2http_bin, db, "run", "--until", until, *http)
    assert code == 0, err
    events = receiver.events()
    assert [e["new"]["id"] for e in events] == [1, 2, 3]
    confirmed = parse_lsn(slot_positions(db)[1])
    assert parse_lsn(events[-1]["commit_lsn"]) < confirmed <= parse_lsn(until)
    # What comes after it stayed in the slot.
    follower = Wal2http(wal2http_bin, ["run", *http], {"WAL2HTTP_DSN": db.dsn}).start()
    try:
        rest = receiver.wait_for_events(6)
    finally:
        assert follower.stop() == 0
    assert [e["new"]["id"] for e in rest] == [1, 2, 3, 4, 5, 6]
    code, _, err = wal2http(wal2http_bin, db, "run", "--until", "yesterday", *http)
    assert code == 2 and "--until" in err, err


def test_slot_peek_shows_the_events_run_would_send_and_consumes_nothing(
        wal2http_bin: str, db: Database, receiver: Receiver) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY, v text)", tables="t")
    assert wal2http(wal2http_bin, db, "slot", "create")[0] == 0
    db.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    db.execute("UPDATE t SET v = 'c' WHERE id = 1")
    db.execute("SELECT pg_logical_emit_message(true, 'app', 'hello')")  # sent by run only with --messages
    # Committed synchronously, so flushed with all before it: SQL decoding (peek) stops at the flushed WAL, and
    # the test cluster commits asynchronously (the walwriter may take its wal_writer_delay to flush).
    db.execute("SET synchronous_commit = on; DELETE FROM t WHERE id = 2")
    before = slot_positions(db)
    code, out, err = wal2http(wal2http_bin, db, "slot", "peek", "--json")
    assert code == 0, err
    peeked = json.loads(out)
    assert [(e["op"], e["key"]) for e in peeked["events"]] == [
        ("insert", {"id": 1}), ("insert", {"id": 2}), ("update", {"id": 1}), ("delete", {"id": 2})]
    assert peeked["more"] is False
    code, out, _ = wal2http(wal2http_bin, db, "slot", "peek", "--limit", "2", "--json")
    limited = json.loads(out)
    assert code == 0 and limited["events"] == peeked["events"][:2] and limited["more"] is True
    code, out, _ = wal2http(wal2http_bin, db, "slot", "peek", "--limit", "3")
    lines = out.strip().splitlines()
    assert code == 0 and [e["id"] for e in peeked["events"][:3]] == [x.split()[0] for x in lines[1:4]], out
    assert "public.t" in lines[1] and "insert" in lines[1]
    # Peeking consumed nothing: the confirmed position stays. PostgreSQL itself may move restart_lsn up to it
    # while decoding (a running_xacts record between the two), which frees WAL but skips no change.
    restart, confirmed = slot_positions(db)
    assert confirmed == before[1] and parse_lsn(before[0]) <= parse_lsn(restart) <= parse_lsn(confirmed)
    follower = Wal2http(wal2http_bin, ["run", "--sink", "http", "--http-url", receiver.url],
                        {"WAL2HTTP_DSN": db.dsn}).start()
    try:
        delivered = receiver.wait_for_events(4)
    finally:
        assert follower.stop() == 0
    assert delivered == peeked["events"]
