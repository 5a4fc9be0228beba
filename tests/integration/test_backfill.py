"""Backfill: a receiver applying the events in order ends with exactly the table's rows (README, Backfilling)."""

from __future__ import annotations

import contextlib
import json
import random
import signal
import threading
import time
from typing import Any

import psycopg2
import pytest

from tests.support import free_port, wait_until
from tests.support.admin import Admin
from tests.support.backfills import backfill, fence, fill, states, wait_done
from tests.support.fake_hook0 import FakeHook0, hook0_args, token_env
from tests.support.materialize import materialize, table_rows
from tests.support.pgcluster import Database, PgCluster
from tests.support.process import Start, Wal2http, check, run_once
from tests.support.receiver import Receiver
from tests.support.replication import publish, ready
from tests.support.typed_row import EXPECTED, ROW_SQL, SCHEMA, TEXT


class Writer(threading.Thread):
    """Inserts, updates, deletes and key changes on ``items`` while a backfill runs; bounded in count and time."""

    def __init__(self, db: Database, table: str, first_free: int, operations: int = 600, rate: float = 300,
                 other: str = "") -> None:
        super().__init__(daemon=True)
        self.other = other
        self.db, self.table, self.next_id = db, table, first_free
        self.operations, self.rate = operations, rate
        self.done = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(13)
        deadline = time.monotonic() + 60
        try:
            # Not ``with conn``: psycopg2 2.9 opens a transaction block for it even in autocommit, and
            # every change would then reach the stream at once, after the backfill.
            with contextlib.closing(self.db.connect()) as conn:
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
        if self.other:  # a change of another table, with keys the backfilled table has too
            cur.execute(f"INSERT INTO {self.other} VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET v = excluded.v",
                        (victim, f"other {i}"))
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


def test_backfill_under_concurrent_changes_reproduces_the_table(
        db: Database, receiver: Receiver, start_wal2http: Start, wal2http_bin: str) -> None:
    publish(db, *ITEMS, SLOW, "CREATE TABLE other (id int PRIMARY KEY, v text)", tables="items, fence, other")
    fill(db, "items", 3000)
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url, "--batch-size", "50",
                              "--backfill-chunk-size", "100")
    writer = Writer(db, "items", 3001, operations=2000, other="other")
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
    # The writer's changes were transactions of their own, streamed among the chunks.
    during = events[events.index(reads[0]):events.index(reads[-1])]
    assert len({e["commit_lsn"] for e in during if e["table"] == "items" and e["op"] != "read"}) > 50
    assert materialize(events)["public.items"] == table_rows(db, "items", ["id"])
    assert states(db) == [("public.items", "done", len(reads))]
    assert all(r["old"] is None and r["key"] == {"id": r["new"]["id"]} for r in reads)
    assert len({e["id"] for e in events}) == len(events)


def test_composite_key_and_replica_identity_full(db: Database, receiver: Receiver, start_wal2http: Start,
                                                 wal2http_bin: str) -> None:
    publish(db, "CREATE TABLE lines (order_id int, n int, sku text, PRIMARY KEY (order_id, n))",
            "CREATE TABLE audit (id int PRIMARY KEY, note text)", "ALTER TABLE audit REPLICA IDENTITY FULL",
            "CREATE TABLE coded (id int PRIMARY KEY, code text NOT NULL UNIQUE, v text)",
            "ALTER TABLE coded REPLICA IDENTITY USING INDEX coded_code_key",
            "CREATE TABLE fence (n int PRIMARY KEY)", tables="lines, audit, coded, fence")
    db.execute("INSERT INTO coded SELECT i, 'c' || i, 'v' FROM generate_series(1, 90) i")
    db.execute("INSERT INTO lines SELECT o, n, 'sku' || o || '-' || n FROM generate_series(1, 60) o,"
               " generate_series(1, 5) n")
    db.execute("INSERT INTO audit SELECT i, 'note ' || i FROM generate_series(1, 250) i")
    start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url, "--batch-size", "100",
                   "--backfill-chunk-size", "40")
    backfill(wal2http_bin, db, "--table", "public.lines", "--table", "public.audit", "--table", "public.coded")
    db.execute("UPDATE coded SET v = 'w' WHERE id % 4 = 0")
    db.execute("UPDATE coded SET code = code || 'x' WHERE id % 9 = 0")  # a replica identity change
    db.execute("UPDATE audit SET note = 'changed' WHERE id % 7 = 0")
    db.execute("DELETE FROM audit WHERE id % 11 = 0")
    db.execute("UPDATE lines SET n = n + 100 WHERE order_id = 3")
    wait_done(db)
    events = fence(db, receiver)
    result = materialize(events)
    assert result["public.lines"] == table_rows(db, "lines", ["order_id", "n"])
    assert result["public.audit"] == table_rows(db, "audit", ["id"])
    # Under REPLICA IDENTITY FULL the key is still the primary key, for changes and reads alike.
    audit = [e for e in events if e["table"] == "audit"]
    assert {tuple(e["key"]) for e in audit} == {("id",)}
    assert any(e["op"] == "update" for e in audit) and any(e["op"] == "read" for e in audit)
    assert {tuple(e["key"]) for e in events if e["table"] == "lines"} == {("order_id", "n")}
    assert result["public.coded"] == table_rows(db, "coded", ["code"])
    # REPLICA IDENTITY USING INDEX: the index's columns are the key (deletes carry only those).
    assert {tuple(e["key"]) for e in events if e["table"] == "coded"} == {("code",)}
    assert [s for _, s, _ in states(db)] == ["done", "done", "done"]


def test_kill_9_mid_backfill_resumes_from_the_last_confirmed_chunk(
        db: Database, receiver: Receiver, start_wal2http: Start, wal2http_bin: str) -> None:
    publish(db, *ITEMS, tables="items, fence")
    fill(db, "items", 2000)
    args = ("--create-slot", "--sink", "http", "--http-url", receiver.url, "--batch-size", "20",
            "--backfill-chunk-size", "100")
    receiver.set_delay(0.02)  # about 1,000 rows a second: slow enough to kill in the middle
    first = start_wal2http(*args)
    backfill(wal2http_bin, db, "--table", "public.items")
    wait_until(lambda: states(db)[0][2] >= 500, timeout=60, what="500 rows confirmed")
    db.execute("UPDATE items SET v = 'while down' WHERE id IN (1, 1999)")
    first.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    first.proc.wait(10)  # type: ignore[union-attr]
    before = states(db)[0]
    assert before[1] == "running" and 500 <= before[2] < 2000
    receiver.set_delay(0)
    start_wal2http(*args)
    wait_done(db)
    events = fence(db, receiver)
    assert materialize(events)["public.items"] == table_rows(db, "items", ["id"])
    reads = [e["key"]["id"] for e in events if e["op"] == "read"]
    resent = len(reads) - len(set(reads))
    # At most the chunk in flight (and the batch being delivered) is read twice.
    assert resent <= 100 + 20, resent
    assert states(db)[0][1:] == ("done", 2000)


def test_a_standby_instance_takes_over_a_backfill(db: Database, receiver: Receiver, start_wal2http: Start,
                                                 wal2http_bin: str) -> None:
    publish(db, *ITEMS, tables="items, fence")
    fill(db, "items", 2000)
    args = ("--create-slot", "--sink", "http", "--http-url", receiver.url, "--batch-size", "20",
            "--backfill-chunk-size", "100")
    receiver.set_delay(0.02)
    active = start_wal2http(*args)
    standby = start_wal2http(*args, wait=False)
    wait_until(lambda: "standing by" in standby.stderr, timeout=30, what="the second instance standing by")
    backfill(wal2http_bin, db, "--table", "public.items")
    wait_until(lambda: states(db)[0][2] >= 400, timeout=60, what="400 rows confirmed")
    active.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    receiver.set_delay(0)
    standby.wait_streaming(60)
    wait_done(db)
    events = fence(db, receiver)
    assert materialize(events)["public.items"] == table_rows(db, "items", ["id"])
    assert states(db)[0][1:] == ("done", 2000)
    assert "backfill of public.items resumed" in standby.stderr


def test_row_filter_column_list_and_where(db: Database, receiver: Receiver, start_wal2http: Start,
                                         wal2http_bin: str) -> None:
    db.execute("CREATE TABLE people (id int PRIMARY KEY, name text, secret text, active bool)")
    db.execute("CREATE TABLE fence (n int PRIMARY KEY)")
    filters = int(db.execute("SHOW server_version_num")[0][0]) >= 150000  # row filters, column lists: 15+
    if filters:
        db.execute("CREATE PUBLICATION wal2http FOR TABLE people (id, name, active) WHERE (active), fence")
    else:
        db.execute("CREATE PUBLICATION wal2http FOR TABLE people, fence")
    db.execute("INSERT INTO people SELECT i, 'p' || i, 'hush', i % 3 <> 0 FROM generate_series(1, 300) i")
    start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url, "--batch-size", "100",
                   "--backfill-chunk-size", "64")
    backfill(wal2http_bin, db, "--table", "public.people", "--where", "id <= 200")
    wait_done(db)
    reads = [e for e in fence(db, receiver) if e["op"] == "read"]
    if filters:
        expected = [{"id": i, "name": f"p{i}", "active": True} for i in range(1, 201) if i % 3 != 0]
    else:  # --where alone narrows the rows; every column is published
        expected = [{"id": i, "name": f"p{i}", "secret": "hush", "active": i % 3 != 0} for i in range(1, 201)]
    assert [e["new"] for e in reads] == expected  # in key order, no hidden row, no hidden column
    assert states(db) == [("public.people", "done", len(expected))]


def test_cancel_stops_a_backfill(db: Database, receiver: Receiver, start_wal2http: Start,
                                 wal2http_bin: str) -> None:
    publish(db, *ITEMS, tables="items, fence")
    fill(db, "items", 3000)
    receiver.set_delay(0.02)
    start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url, "--batch-size", "10",
                   "--backfill-chunk-size", "50")
    backfill(wal2http_bin, db, "--table", "public.items")
    wait_until(lambda: states(db)[0][2] >= 100, timeout=60, what="100 rows confirmed")
    out, _ = backfill(wal2http_bin, db, "cancel", "1")
    assert "public.items: cancelled after" in out
    receiver.set_delay(0)
    events = fence(db, receiver)
    time.sleep(3)  # a run that ignored the cancel would go on reading chunks
    reads = [e for e in receiver.events() if e["op"] == "read"]
    assert 100 <= len(reads) <= states(db)[0][2] + 100, len(reads)
    assert states(db)[0][1] == "cancelled"
    assert len(events) < 3000
    status, _ = backfill(wal2http_bin, db, "status", "--json")
    assert json.loads(status)["requests"][0]["state"] == "cancelled"
    text, _ = backfill(wal2http_bin, db, "status")
    header, line = text.splitlines()
    assert header.split() == ["ID", "TABLE", "STATE", "SENT", "ESTIMATED", "STARTED", "FINISHED"]
    assert line.split()[:4] == ["1", "public.items", "cancelled", str(states(db)[0][2])]


@pytest.mark.parametrize(("ddl", "args", "expected"), [
    ([], ["--table", "public.unpublished"], "is not published by publication wal2http"),
    ([], ["--table", "public.keyless"], "neither a primary key nor a replica identity index"),
    ([], ["--table", "public.nowhere"], "does not exist"),
    ([], ["--table", "public.items", "--where", "no_such_column > 1"], "cannot be used on public.items"),
    ([], ["--table", "public.items", "--where", "true; DROP TABLE items"], "without ';'"),
    ([], [], "--table SCHEMA.TABLE"),
])
def test_refusals_queue_nothing(db: Database, start_wal2http: Start, wal2http_bin: str, ddl: list[str],
                                args: list[str], expected: str) -> None:
    publish(db, "CREATE TABLE items (id int PRIMARY KEY, v text, n int)", "CREATE TABLE keyless (v text)",
            "CREATE TABLE unpublished (id int PRIMARY KEY)", tables="items, keyless")
    db.execute("SELECT pg_create_logical_replication_slot('wal2http', 'pgoutput')")
    backfill(wal2http_bin, db, "--table", "public.items")  # the requests table exists, with one request
    _, err = backfill(wal2http_bin, db, *args, expect=2)
    assert expected in err
    assert len(states(db)) == 1
    assert db.execute("SELECT count(*) FROM items") == [(0,)]


def test_a_table_dropped_mid_backfill_fails_the_request_and_streaming_goes_on(
        db: Database, receiver: Receiver, start_wal2http: Start, wal2http_bin: str) -> None:
    publish(db, *ITEMS, "CREATE TABLE doomed (id int PRIMARY KEY)", tables="items, fence, doomed")
    db.execute("INSERT INTO doomed SELECT generate_series(1, 3000)")
    receiver.set_delay(0.02)
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url, "--batch-size", "10",
                              "--backfill-chunk-size", "50")
    backfill(wal2http_bin, db, "--table", "public.doomed")
    wait_until(lambda: states(db)[0][2] >= 50, timeout=60, what="a chunk confirmed")
    db.execute("DROP TABLE doomed")
    receiver.set_delay(0)
    wait_done(db)
    ((name, state, _),) = states(db)
    assert name == "public.doomed"
    assert state == "failed"
    reason = db.execute("SELECT reason FROM wal2http.wal2http_backfill")[0][0]
    assert "does not exist" in reason or "dropped" in reason
    db.execute("INSERT INTO items VALUES (1, 'after', 0)")
    wait_until(lambda: any(e["table"] == "items" for e in receiver.events()), timeout=30, what="a later change")
    assert wal2http.running


def test_slot_create_backfill_sends_existing_rows_and_hides_its_own_table(
        db: Database, receiver: Receiver, start_wal2http: Start, wal2http_bin: str) -> None:
    publish(db, *ITEMS)  # FOR ALL TABLES: the requests table is published too
    fill(db, "items", 500)
    code, out, err = run_once(wal2http_bin, ["slot", "create", "--backfill"], {"WAL2HTTP_DSN": db.dsn})
    assert code == 0, err
    assert "backfill request 1 queued" in out and "public.items" in out
    start_wal2http("--sink", "http", "--http-url", receiver.url, "--batch-size", "100")
    wait_done(db)
    events = fence(db, receiver)
    assert materialize(events)["public.items"] == table_rows(db, "items", ["id"])
    assert not [e for e in events if e["table"] == "wal2http_backfill"]
    assert {s for _, s, _ in states(db)} == {"done"}


def test_a_row_of_every_type_reads_as_it_streams(db: Database, receiver: Receiver, start_wal2http: Start,
                                                wal2http_bin: str) -> None:
    publish(db, *SCHEMA, "CREATE DOMAIN posint AS int CHECK (VALUE > 0)",
            "CREATE DOMAIN label AS text", "ALTER TABLE everything ADD COLUMN dom posint, ADD COLUMN doms posint[],"
            " ADD COLUMN lab label", tables="everything")
    db.execute(ROW_SQL, (TEXT,))  # id 1: exists before the slot, so only a backfill sends it
    db.execute("UPDATE everything SET dom = 5, doms = '{1,2}', lab = 'x'")
    start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url)
    backfill(wal2http_bin, db, "--table", "public.everything")
    wait_done(db)
    db.execute(ROW_SQL, (TEXT,))  # id 2: streamed
    db.execute("UPDATE everything SET dom = 5, doms = '{1,2}', lab = 'x' WHERE id = 2")
    read, insert, update = receiver.wait_for_events(3)
    assert (read["op"], insert["op"], update["op"]) == ("read", "insert", "update")
    backfilled, streamed = dict(read["new"]), dict(update["new"])
    assert backfilled.pop("id") == 1 and streamed.pop("id") == 2
    assert backfilled == streamed
    assert {k: backfilled[k] for k in EXPECTED} == EXPECTED
    assert (backfilled["dom"], backfilled["doms"], backfilled["lab"]) == (5, [1, 2], "x")  # domains: base type
    assert read["key"] == {"id": 1}


def test_hook0_changes_mode_reads_and_outbox_mode_refuses(db: Database, start_wal2http: Start,
                                                         wal2http_bin: str) -> None:

    publish(db, "CREATE TABLE orders (id int PRIMARY KEY, status text)", tables="orders")
    db.execute("INSERT INTO orders VALUES (1, 'new'), (2, 'paid')")
    with FakeHook0() as hook0:
        # --messages: without an outbox table, outbox mode delivers only messages (else run refuses to start).
        outbox = start_wal2http("--create-slot", "--messages", *hook0_args(hook0), env=token_env(hook0))
        backfill(wal2http_bin, db, "--table", "public.orders")
        wait_done(db, timeout=30)
        assert states(db) == [("public.orders", "failed", 0)]
        reason = db.execute("SELECT reason FROM wal2http.wal2http_backfill")[0][0]
        assert "outbox rows are events, not state" in reason
        assert outbox.stop() == 0
        start_wal2http(*hook0_args(hook0, "--hook0-mode", "changes", "--hook0-service", "shop",
                                   "--hook0-ensure-event-types"), env=token_env(hook0))
        backfill(wal2http_bin, db, "--table", "public.orders")
        stored = hook0.wait_for_events(2)
        assert [e.raw["event_type"] for e in stored] == ["shop.orders.read", "shop.orders.read"]
        assert [json.loads(e.raw["payload"])["new"] for e in stored] == [{"id": 1, "status": "new"},
                                                                         {"id": 2, "status": "paid"}]


def test_an_active_backfill_shows_in_metrics_readyz_and_slot_status(
        db: Database, receiver: Receiver, start_wal2http: Start, wal2http_bin: str) -> None:
    publish(db, *ITEMS, tables="items, fence")
    fill(db, "items", 1000)
    port = free_port()
    receiver.set_delay(0.05)
    start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url, "--batch-size", "10",
                   "--backfill-chunk-size", "100", "--metrics-addr", f"127.0.0.1:{port}")
    admin = Admin(port)
    assert admin.value("wal2http_backfill_active") == 0
    backfill(wal2http_bin, db, "--table", "public.items")
    wait_until(lambda: states(db)[0][2] >= 100, timeout=60, what="a chunk confirmed")
    assert admin.value("wal2http_backfill_active") == 1
    _, ready = admin.status("/readyz")
    assert ready["backfill"]["table"] == "public.items" and ready["backfill"]["rows_sent"] >= 100
    code, out, _ = run_once(wal2http_bin, ["slot", "status", "--json"], {"WAL2HTTP_DSN": db.dsn})
    assert code == 0
    (running,) = json.loads(out)["backfills"]
    assert running["table"] == "public.items" and running["state"] == "running"
    receiver.set_delay(0)
    wait_done(db)
    wait_until(lambda: admin.value("wal2http_backfill_active") == 0, timeout=10, what="backfill inactive")
    assert admin.value("wal2http_backfill_rows_total", table="public.items") == 1000
    code, out, _ = run_once(wal2http_bin, ["slot", "status", "--json"], {"WAL2HTTP_DSN": db.dsn})
    assert json.loads(out)["backfills"] == []


def test_wait_follows_the_request_and_run_backfill_needs_a_sink_that_can_take_reads(
        db: Database, receiver: Receiver, start_wal2http: Start, wal2http_bin: str) -> None:
    publish(db, *ITEMS, tables="items, fence")
    fill(db, "items", 300)
    code, _, err = run_once(wal2http_bin, ["run", "--create-slot", "--backfill", "--sink", "hook0",
                                           "--hook0-api-url", "http://127.0.0.1:9/api/v1",
                                           "--hook0-application-id", "00000000-0000-4000-8000-000000000000"],
                            {"WAL2HTTP_DSN": db.dsn, "WAL2HTTP_HOOK0_API_TOKEN": "token"})
    assert code == 2 and "outbox rows are events, not state" in err
    assert db.execute("SELECT count(*) FROM pg_replication_slots") == [(0,)]
    start_wal2http("--create-slot", "--backfill", "--sink", "http", "--http-url", receiver.url,
                   "--batch-size", "100")
    wait_done(db)
    out, _ = backfill(wal2http_bin, db, "--table", "public.items", "--wait")
    assert "public.items: done, 300 rows sent" in out
    events = fence(db, receiver)
    assert len([e for e in events if e["op"] == "read"]) == 600  # the initial snapshot, then the request
    assert materialize(events)["public.items"] == table_rows(db, "items", ["id"])


def test_check_config_says_what_a_backfill_needs(db: Database, wal2http_bin: str) -> None:
    ready(db)
    role = f"reader_{db.name}"[:63]
    db.execute(f'CREATE ROLE "{role}" LOGIN REPLICATION')
    try:
        _, as_owner = check(wal2http_bin, db.dsn)
        _, as_role = check(wal2http_bin, db.cluster.dsn(db.name, user=role))
    finally:
        db.execute(f'DROP ROLE "{role}"')
    assert as_owner["backfill"]["status"] == "ok"
    assert as_role["backfill"]["status"] == "warning"
    assert "cannot SELECT public.t" in as_role["backfill"]["detail"]
    assert as_role["backfill"]["fix"] == f"GRANT SELECT ON public.t TO {role};"


def test_a_table_altered_mid_backfill_fails_the_request(db: Database, receiver: Receiver, start_wal2http: Start,
                                                       wal2http_bin: str) -> None:
    publish(db, *ITEMS, tables="items, fence")
    fill(db, "items", 3000)
    receiver.set_delay(0.02)
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url, "--batch-size", "10",
                              "--backfill-chunk-size", "50")
    backfill(wal2http_bin, db, "--table", "public.items")
    wait_until(lambda: states(db)[0][2] >= 50, timeout=60, what="a chunk confirmed")
    db.execute("ALTER TABLE items ADD COLUMN extra text DEFAULT 'x'")
    receiver.set_delay(0)
    wait_done(db)
    assert states(db)[0][1] == "failed"
    assert "was altered during the backfill" in db.execute("SELECT reason FROM wal2http.wal2http_backfill")[0][0]
    db.execute("UPDATE items SET v = 'after' WHERE id = 1")
    wait_until(lambda: any(e["op"] == "update" for e in receiver.events()), timeout=30, what="a later change")
    assert [e["new"]["extra"] for e in receiver.events() if e["op"] == "update"] == ["x"]
    assert wal2http.running


def test_a_change_decoded_before_it_became_visible_is_not_overwritten(receiver: Receiver, wal2http_bin: str) -> None:
    """Synchronous replication: a commit is decoded (and delivered) while other sessions cannot see it yet.

    A chunk selected then must not send the row's older value after the change.
    """
    cluster = PgCluster(settings={"wal_sender_timeout": "10s"})
    cluster.start()
    run: Wal2http | None = None
    try:
        db = cluster.create_database("sync_rep")
        publish(db, *ITEMS, tables="items, fence")
        fill(db, "items", 200)
        run = Wal2http(wal2http_bin, ["run", "--create-slot", "--sink", "http", "--http-url", receiver.url,
                                      "--backfill-chunk-size", "500"], {"WAL2HTTP_DSN": db.dsn}).start()
        run.wait_streaming()
        cluster.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
        cluster.execute("SELECT pg_reload_conf()")
        waiting = db.connect()
        waiting.autocommit = True
        waiting.cursor().execute("SET synchronous_commit = on")  # the suite's servers default to off
        pid = waiting.get_backend_pid()
        update = threading.Thread(target=lambda: waiting.cursor().execute(
            "UPDATE items SET v = 'new' WHERE id = 50"), daemon=True)
        update.start()  # committed locally, then waits for a standby that never answers: invisible
        wait_until(lambda: any(e["op"] == "update" for e in receiver.events()), timeout=30,
                   what="the update decoded and delivered before it is visible")
        assert db.execute("SELECT v FROM items WHERE id = 50") == [("old 50",)]
        local = {"WAL2HTTP_DSN": f"{db.dsn} options='-c synchronous_commit=local'"}
        code, _, err = run_once(wal2http_bin, ["backfill", "--table", "public.items"], local)
        assert code == 0, err
        wait_until(lambda: states(db)[0][1] == "running", timeout=30, what="the backfill started")
        time.sleep(3)  # the run waits: a chunk selected now would not see the update it already sent
        assert states(db) == [("public.items", "running", 0)]
        db.execute("SELECT pg_cancel_backend(%s)", (pid,))  # the commit stops waiting: now visible
        wait_done(db)
        update.join(10)
        waiting.close()
        cluster.execute("ALTER SYSTEM RESET synchronous_standby_names")
        cluster.execute("SELECT pg_reload_conf()")
        assert db.execute("SELECT v FROM items WHERE id = 50") == [("new",)]
        events = fence(db, receiver)
        assert materialize(events)["public.items"] == table_rows(db, "items", ["id"])
        # Read once the update was visible: its value, after the update event.
        assert [e["new"]["v"] for e in events if e["op"] == "read" and e["key"] == {"id": 50}] == ["new"]
    finally:
        if run is not None:
            run.kill()
        cluster.cleanup()


def test_slot_drop_cancels_the_backfills_of_the_slot_and_says_so(db: Database, wal2http_bin: str) -> None:
    publish(db, *ITEMS, tables="items, fence")
    fill(db, "items", 10)
    code, _, err = run_once(wal2http_bin, ["slot", "create"], {"WAL2HTTP_DSN": db.dsn})
    assert code == 0, err
    backfill(wal2http_bin, db, "--table", "public.items")
    code, out, err = run_once(wal2http_bin, ["slot", "drop", "--yes"], {"WAL2HTTP_DSN": db.dsn})
    assert code == 0, err
    assert "cancelled the backfill of public.items (request 1, 0 rows sent): it needs the slot" in out
    assert states(db) == [("public.items", "cancelled", 0)]


def test_a_postgresql_crash_mid_backfill_is_resumed(db: Database, receiver: Receiver, start_wal2http: Start,
                                                    wal2http_bin: str) -> None:
    publish(db, *ITEMS, tables="items, fence")
    fill(db, "items", 2000)
    receiver.set_delay(0.02)
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url, "--batch-size", "20",
                              "--backfill-chunk-size", "100", "--reconnect-max-wait", "1")
    backfill(wal2http_bin, db, "--table", "public.items")
    wait_until(lambda: states(db)[0][2] >= 300, timeout=60, what="300 rows confirmed")
    db.cluster.restart(mode="immediate")  # a crash: whatever was not flushed and confirmed is sent again
    db.execute("UPDATE items SET v = 'after the crash' WHERE id IN (2, 1998)")
    receiver.set_delay(0)
    wait_done(db)
    events = fence(db, receiver)
    assert materialize(events)["public.items"] == table_rows(db, "items", ["id"])
    assert states(db)[0][1:] == ("done", 2000)
    assert wal2http.running and "backfill of public.items resumed" in wal2http.stderr
