"""Filters, column selection and destinations taken from the event, against a real server and receiver."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.integration.conftest import Start, publish
from tests.support import wait_until
from tests.support.pgcluster import Database
from tests.support.process import run_once
from tests.support.receiver import Receiver

PAID = 'op == "update" && old.status != "paid" && new.status == "paid"'
ORDERS = ["CREATE TABLE orders (id int PRIMARY KEY, tenant text, status text, doc text)",
          "CREATE TABLE audit (id int PRIMARY KEY, note text)"]


def test_a_filter_sends_only_the_rows_that_enter_a_condition(db: Database, receiver: Receiver,
                                                            start_wal2http: Start) -> None:
    publish(db, *ORDERS, "ALTER TABLE orders REPLICA IDENTITY FULL", "ALTER TABLE audit REPLICA IDENTITY FULL",
            tables="orders, audit")
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url, "--filter", PAID)
    db.execute("INSERT INTO orders VALUES (1, 'a', 'new', 'x'), (2, 'b', 'new', 'y')")
    db.execute("UPDATE orders SET status = 'paid' WHERE id = 1")
    db.execute("UPDATE orders SET doc = 'z' WHERE id = 1")  # still paid: not entering the condition
    db.execute("INSERT INTO audit VALUES (1, 'n')")
    db.execute("UPDATE orders SET status = 'paid' WHERE id = 2")
    db.execute("DELETE FROM orders")  # new is null: no match, and no error stops the stream
    events = receiver.wait_for_events(2)
    lsn = db.cluster.current_wal_lsn()
    wait_until(lambda: (db.cluster.confirmed_flush_lsn("wal2http") or 0) >= lsn, timeout=20,
               what="the filtered-out changes confirmed")
    assert wal2http.stop() == 0
    assert [(e["table"], e["key"], e["new"]["status"]) for e in receiver.events()] == [
        ("orders", {"id": 1}, "paid"), ("orders", {"id": 2}, "paid")]
    assert [e["old"]["status"] for e in events] == ["new", "new"]


def test_a_filter_dropping_everything_keeps_the_slot_confirmed(db: Database, receiver: Receiver,
                                                              start_wal2http: Start) -> None:
    publish(db, *ORDERS, tables="orders")
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url,
                              "--filter", 'table == "nothing"')
    deadline = time.monotonic() + 6
    n = 0
    while time.monotonic() < deadline and n < 300:  # a bounded load: 300 transactions of 20 rows
        db.execute("INSERT INTO orders SELECT g, 't', 'new', repeat('x', 200) FROM generate_series(%s, %s) g",
                   (n * 20, n * 20 + 19))
        n += 1
    lsn = db.cluster.current_wal_lsn()
    wait_until(lambda: (db.cluster.confirmed_flush_lsn("wal2http") or 0) >= lsn, timeout=10,
               what="the slot confirmed up to the current WAL position")
    assert wal2http.stop() == 0
    assert receiver.requests == []
    assert "0 events delivered" in wal2http.stderr


def test_columns_keep_only_the_named_columns_and_the_whole_key(db: Database, receiver: Receiver,
                                                              start_wal2http: Start, tmp_path: Path) -> None:
    publish(db, *ORDERS, "ALTER TABLE orders REPLICA IDENTITY FULL", tables="orders, audit")
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url,
                              "--columns", "public.orders=status")
    db.execute("INSERT INTO orders VALUES (1, 'a', 'new', repeat('x', 5000))")
    db.execute("UPDATE orders SET status = 'paid'")
    db.execute("INSERT INTO audit VALUES (1, 'n')")
    events = receiver.wait_for_events(3)
    assert wal2http.stop() == 0
    assert events[0]["new"] == {"status": "new"} and events[0]["key"] == {"id": 1}
    assert events[1]["new"] == {"status": "paid"} and events[1]["old"] == {"status": "new"}
    assert events[2]["new"] == {"id": 1, "note": "n"}  # another table: whole


def test_filter_and_columns_apply_to_the_file_sink_and_to_backfills(db: Database, start_wal2http: Start,
                                                                   tmp_path: Path) -> None:
    publish(db, *ORDERS, tables="orders, audit")
    db.execute("INSERT INTO orders SELECT g, 't' || (g % 2), 'new', 'big' FROM generate_series(1, 6) g")
    out = tmp_path / "events.jsonl"
    wal2http = start_wal2http("--create-slot", "--backfill", "--sink", "file", "--file-path", str(out),
                              "--filter", 'table == "orders" && new.tenant == "t1"',
                              "--columns", "public.orders=tenant")
    db.execute("INSERT INTO orders VALUES (7, 't1', 'new', 'big'), (8, 't0', 'new', 'big')")

    def lines() -> list[dict[str, object]]:
        return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []

    def arrived() -> set[tuple[object, object]]:
        return {(e["op"], e["key"]["id"]) for e in lines()}  # type: ignore[index]

    wanted = {("read", 1), ("read", 3), ("read", 5), ("insert", 7)}
    wait_until(lambda: wanted <= arrived(), timeout=30, what="three backfilled rows and one insert")
    assert wal2http.stop() == 0
    got = lines()
    # Only tenant t1's rows; the backfill may read row 7 too, if it reads the table after the insert.
    assert arrived() - wanted <= {("read", 7)}
    assert all(e["new"] == {"tenant": "t1"} for e in got)


def test_url_and_header_templates_split_batches_by_destination(db: Database, receiver: Receiver,
                                                              start_wal2http: Start) -> None:
    publish(db, *ORDERS, tables="orders, audit")
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--batch-size", "50",
                              "--http-url", receiver.url + "/{schema}/{table}/{key.id}?op={op}",
                              "--header", "X-Table: {schema}.{table}")
    with db.connect() as conn, conn.cursor() as cur:
        conn.autocommit = False
        cur.execute("INSERT INTO orders VALUES (1, 'a', 'new', 'x')")
        cur.execute("INSERT INTO audit VALUES (1, 'n'), (2, 'a b/c')")
        cur.execute("UPDATE orders SET status = 'paid'")
        conn.commit()
    db.execute("CREATE TABLE \"we ird\" (id text PRIMARY KEY)")
    db.execute("ALTER PUBLICATION wal2http ADD TABLE \"we ird\"")
    db.execute("INSERT INTO \"we ird\" VALUES ('a/b?c')")
    requests = receiver.wait_for_requests(5)
    assert wal2http.stop() == 0
    assert [(r.path, r.headers["x-table"], len(r.json()) if isinstance(r.json(), list) else 1)
            for r in requests] == [
        ("/hook/public/orders/1?op=insert", "public.orders", 1),
        ("/hook/public/audit/1?op=insert", "public.audit", 1),
        ("/hook/public/audit/2?op=insert", "public.audit", 1),
        ("/hook/public/orders/1?op=update", "public.orders", 1),
        ("/hook/public/we%20ird/a%2Fb%3Fc?op=insert", "public.we ird", 1),
    ]


def test_run_and_check_config_refuse_old_values_without_replica_identity_full(
        db: Database, wal2http_bin: str) -> None:
    publish(db, *ORDERS, "ALTER TABLE audit REPLICA IDENTITY FULL", tables="orders, audit")
    env = {"WAL2HTTP_DSN": db.dsn}
    for command in ("check-config", "run"):
        code, out, err = run_once(wal2http_bin, [command, "--create-slot", "--sink", "stdout", "--filter", PAID],
                                  env, timeout=60)
        err += out  # check-config prints its checklist
        assert code == 2, (command, err)
        assert "ALTER TABLE public.orders REPLICA IDENTITY FULL" in err, err
        assert "audit" not in err.split("ALTER TABLE", 1)[1], err


def test_a_bad_expression_is_a_configuration_error_naming_the_position(db: Database, wal2http_bin: str) -> None:
    code, _out, err = run_once(wal2http_bin, ["run", "--sink", "stdout", "--filter", 'table == "a" &&& op'],
                               {"WAL2HTTP_DSN": db.dsn})
    assert code == 2
    assert "--filter" in err and "line 1, column" in err and "&&&" in err, err
