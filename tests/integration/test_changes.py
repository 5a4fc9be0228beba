"""Every kind of change arrives once, in commit order, and the slot is confirmed past the last commit."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support import wait_until
from tests.support.events import assert_confirmed_past, assert_in_commit_order
from tests.support.pgcluster import Database
from tests.support.process import Start
from tests.support.receiver import Receiver
from tests.support.replication import publish

TABLES = [
    "CREATE TABLE orders (id int PRIMARY KEY, status text, total numeric)",
    "CREATE TABLE lines (order_id int, n int, sku text, PRIMARY KEY (order_id, n))",
    "CREATE TABLE audit (id int PRIMARY KEY, note text)",
    "ALTER TABLE audit REPLICA IDENTITY FULL",
]


def test_inserts_updates_deletes_truncates(db: Database, receiver: Receiver, start_wal2http: Start) -> None:
    publish(db, *TABLES, tables="orders, lines, audit")
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url)
    db.execute("INSERT INTO orders VALUES (1, 'new', 10.50), (2, 'new', 3)")
    db.execute("UPDATE orders SET status = 'paid' WHERE id = 1")
    db.execute("UPDATE orders SET id = 3 WHERE id = 2")  # key change
    db.execute("DELETE FROM orders WHERE id = 1")
    db.execute("INSERT INTO audit VALUES (1, 'x')")
    db.execute("UPDATE audit SET note = 'y'")
    db.execute("DELETE FROM audit")
    # One transaction across two tables, several statements.
    with db.connect() as conn, conn.cursor() as cur:
        conn.autocommit = False
        cur.execute("INSERT INTO orders VALUES (10, 'new', 1)")
        cur.execute("INSERT INTO lines VALUES (10, 1, 'A'), (10, 2, 'B')")
        cur.execute("UPDATE orders SET status = 'paid' WHERE id = 10")
        conn.commit()
    db.execute("TRUNCATE lines")
    events = receiver.wait_for_events(13)
    assert wal2http.stop() == 0
    summary = [(e["op"], e["table"], e["key"]) for e in events]
    assert summary == [
        ("insert", "orders", {"id": 1}), ("insert", "orders", {"id": 2}),
        ("update", "orders", {"id": 1}), ("update", "orders", {"id": 3}),
        ("delete", "orders", {"id": 1}),
        # REPLICA IDENTITY FULL: the key is still the primary key (the row's identity).
        ("insert", "audit", {"id": 1}), ("update", "audit", {"id": 1}), ("delete", "audit", {"id": 1}),
        ("insert", "orders", {"id": 10}), ("insert", "lines", {"order_id": 10, "n": 1}),
        ("insert", "lines", {"order_id": 10, "n": 2}), ("update", "orders", {"id": 10}),
        ("truncate", "lines", None),
    ]
    assert events[3]["old"] == {"id": 2} and events[3]["new"]["id"] == 3
    assert events[2]["old"] == {"id": 1} and events[2]["new"]["status"] == "paid"
    assert events[6]["old"] == {"id": 1, "note": "x"}  # REPLICA IDENTITY FULL: whole old row
    assert events[4]["new"] is None and events[4]["old"] == {"id": 1}
    txn = events[8:12]
    assert len({e["xid"] for e in txn}) == 1 and [e["seq"] for e in txn] == [1, 2, 3, 4]
    assert events[12]["cascade"] is False and events[12]["restart_identity"] is False
    assert_in_commit_order(events)
    assert_confirmed_past(db, events)
    assert len(receiver.events()) == 13  # nothing more arrived while stopping


def test_added_column_shows_up_in_later_events(db: Database, receiver: Receiver,
                                              start_wal2http: Start) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url)
    db.execute("INSERT INTO t VALUES (1)")
    db.execute("ALTER TABLE t ADD COLUMN note text DEFAULT 'd'")
    db.execute("INSERT INTO t VALUES (2, 'two')")
    first, second = receiver.wait_for_events(2)
    assert wal2http.stop() == 0
    assert first["new"] == {"id": 1}
    assert second["new"] == {"id": 2, "note": "two"}


def test_large_transaction_in_batches(db: Database, receiver: Receiver, start_wal2http: Start) -> None:
    publish(db, "CREATE TABLE big (id int PRIMARY KEY, v text)", tables="big")
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url,
                              "--batch-size", "500")
    db.execute("INSERT INTO big SELECT i, md5(i::text) FROM generate_series(1, 50000) i")
    db.execute("INSERT INTO big VALUES (0, 'after')")
    events = receiver.wait_for_events(50001, timeout=120)
    assert wal2http.stop() == 0
    assert [e["new"]["id"] for e in events] == [*range(1, 50001), 0]
    ok = [r for r in receiver.requests if r.ok]
    assert all(isinstance(r.json(), list) and len(r.json()) <= 500 for r in ok)
    assert len(ok) >= 100  # 50,000 rows needed at least 100 requests
    for request in ok:
        body = request.json()
        expected_id = body[0]["id"] if len(body) == 1 else f"{body[0]['id']}--{body[-1]['id']}"
        assert request.headers["webhook-id"] == expected_id == request.headers["idempotency-key"]
    assert_in_commit_order(events)
    assert_confirmed_past(db, events)


def test_file_and_stdout_sinks_write_json_lines(db: Database, start_wal2http: Start, tmp_path: Path) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    db.execute("SELECT pg_create_logical_replication_slot('wal2http', 'pgoutput')")
    db.execute("SELECT pg_create_logical_replication_slot('second', 'pgoutput')")
    out = tmp_path / "events.jsonl"
    to_file = start_wal2http("--sink", "file", "--file-path", str(out), "--batch-size", "10")
    to_stdout = start_wal2http("--slot", "second")
    db.execute("INSERT INTO t SELECT generate_series(1, 25)")
    wait_until(lambda: out.exists() and len(out.read_text().splitlines()) == 25, timeout=20,
               what="25 lines in the file")
    wait_until(lambda: len(to_stdout.stdout.splitlines()) == 25, timeout=20, what="25 lines on stdout")
    assert to_file.stop() == 0 and to_stdout.stop() == 0
    for text in (out.read_text(), to_stdout.stdout):
        assert [json.loads(line)["new"]["id"] for line in text.splitlines()] == list(range(1, 26))


def test_quiet_publication_does_not_pin_wal(db: Database, receiver: Receiver, start_wal2http: Start) -> None:
    publish(db, "CREATE TABLE published (id int)", "CREATE TABLE other (id int)", tables="published")
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url)
    start = db.cluster.confirmed_flush_lsn("wal2http") or 0
    for i in range(20):
        db.execute("INSERT INTO other VALUES (%s)", (i,))
    # Asynchronous commit in the test cluster: the insert position is where the traffic ends.
    target = int(db.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")[0][0])
    wait_until(lambda: (db.cluster.confirmed_flush_lsn("wal2http") or 0) >= target, timeout=30,
               what="the idle slot to confirm past unpublished traffic")
    assert (db.cluster.confirmed_flush_lsn("wal2http") or 0) > start
    assert receiver.events() == []
    assert wal2http.stop() == 0


def test_proxy_variables_apply_to_every_request(db: Database, receiver: Receiver,
                                                 start_wal2http: Start) -> None:
    # The HTTP sink reads the environment once at start (not per request): HTTP_PROXY still applies.
    publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    proxy = receiver.url.rsplit("/", 1)[0]
    env = {"HTTP_PROXY": proxy, "http_proxy": proxy, "NO_PROXY": "", "no_proxy": ""}
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", "http://hooks.invalid/pg",
                              env=env)
    db.execute("INSERT INTO t VALUES (1)")
    db.execute("INSERT INTO t VALUES (2)")
    events = receiver.wait_for_events(2)
    assert wal2http.stop() == 0
    assert [e["new"]["id"] for e in events] == [1, 2]
    assert {r.path for r in receiver.requests} == {"http://hooks.invalid/pg"}
