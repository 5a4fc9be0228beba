"""Backfill at the edges: key order under collations, inheritance, generated columns, locks, odd names, refusals."""

from __future__ import annotations

import json
import time

from tests.support import wait_until
from tests.support.backfills import backfill, fence, fill, states, wait_done
from tests.support.materialize import materialize, table_rows
from tests.support.pgcluster import Database
from tests.support.process import Start, run_once
from tests.support.receiver import Receiver
from tests.support.replication import publish

FENCE = "CREATE TABLE fence (n int PRIMARY KEY)"
CASE_INSENSITIVE = "CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)"


def server_version(db: Database) -> int:
    return int(db.execute("SELECT current_setting('server_version_num')")[0][0])


def reason(db: Database, task: int = 1) -> str:
    return str(db.execute("SELECT reason FROM wal2http.wal2http_backfill WHERE id = %s", (task,))[0][0])


def test_keys_under_a_nondeterministic_collation_are_paged_in_the_index_order(
        db: Database, receiver: Receiver, start_wal2http: Start, wal2http_bin: str) -> None:
    """The column compares case-insensitively; the key index (the replica identity) compares under "C"."""
    publish(db, CASE_INSENSITIVE, "CREATE TABLE users (email text COLLATE ci NOT NULL, n int)",
            'CREATE UNIQUE INDEX users_email_c ON users (email COLLATE "C")',
            "ALTER TABLE users REPLICA IDENTITY USING INDEX users_email_c",
            # A two-column key whose first column has an operator class that is not its type's default.
            "CREATE TABLE tags (label text COLLATE ci NOT NULL, n int NOT NULL)",
            'CREATE UNIQUE INDEX tags_key ON tags (label COLLATE "C" text_pattern_ops, n)',
            "ALTER TABLE tags REPLICA IDENTITY USING INDEX tags_key", FENCE, tables="users, tags, fence")
    # 6 spellings of each address, equal under the column's collation: tie groups of 6 that chunks of 7 split.
    db.execute("INSERT INTO users SELECT s, i FROM generate_series(1, 150) i,"
               " LATERAL (VALUES ('user' || i || '@x.org'), ('USER' || i || '@x.org'), ('User' || i || '@x.org'),"
               " ('user' || i || '@X.ORG'), ('uSeR' || i || '@x.Org'), ('USER' || i || '@X.ORG')) AS v(s)")
    db.execute("INSERT INTO tags SELECT l, n FROM unnest(ARRAY['a', 'A', 'b', 'B', 'Ab', 'aB']) l,"
               " generate_series(1, 20) n")
    start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url, "--batch-size", "100",
                   "--backfill-chunk-size", "7")
    backfill(wal2http_bin, db, "--table", "public.users", "--table", "public.tags")
    wait_done(db)
    events = fence(db, receiver)
    assert states(db) == [("public.users", "done", 900), ("public.tags", "done", 120)]
    result = materialize(events)
    assert result["public.users"] == table_rows(db, "users", ["email"])
    assert result["public.tags"] == table_rows(db, "tags", ["label", "n"])


def test_a_key_collation_changed_mid_backfill_restarts_the_table(
        db: Database, receiver: Receiver, start_wal2http: Start, wal2http_bin: str) -> None:
    """From "C" (X00001 < X00003 < ... < x00002) to ICU (x00001 < X00002 < ...): the order changes under it."""
    publish(db, 'CREATE TABLE words (k text COLLATE "C" PRIMARY KEY, n int)', FENCE, tables="words, fence")
    db.execute("INSERT INTO words SELECT CASE WHEN i % 2 = 0 THEN 'x' ELSE 'X' END || lpad(i::text, 5, '0'), i"
               " FROM generate_series(1, 3000) i")
    receiver.set_delay(0.02)
    run = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url, "--batch-size", "10",
                         "--backfill-chunk-size", "100")
    backfill(wal2http_bin, db, "--table", "public.words")
    wait_until(lambda: states(db)[0][2] >= 300, timeout=60, what="300 rows confirmed")
    db.execute('ALTER TABLE words ALTER COLUMN k TYPE text COLLATE "en-x-icu"')
    receiver.set_delay(0)
    wait_done(db)
    events = fence(db, receiver)
    assert states(db)[0][1] == "done", reason(db)
    assert materialize(events)["public.words"] == table_rows(db, "words", ["k"])
    assert "key order of public.words changed" in run.stderr and "read again from the start" in run.stderr


def test_a_parent_table_is_read_without_its_inheritance_children(
        db: Database, receiver: Receiver, start_wal2http: Start, wal2http_bin: str) -> None:
    """FOR TABLE parent publishes the children as tables of their own: their rows stream (and read) under them."""
    publish(db, "CREATE TABLE parent (id int PRIMARY KEY, v text)",
            "CREATE TABLE child (extra text) INHERITS (parent)", "ALTER TABLE child ADD PRIMARY KEY (id)",
            FENCE, tables="parent, fence")
    db.execute("INSERT INTO parent SELECT i, 'p' || i FROM generate_series(1, 100) i")
    db.execute("INSERT INTO child SELECT i, 'c' || i, 'e' || i FROM generate_series(101, 300) i")
    start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url, "--batch-size", "100",
                   "--backfill-chunk-size", "64")
    backfill(wal2http_bin, db, "--table", "public.parent", "--table", "public.child")
    db.execute("UPDATE child SET v = 'changed' WHERE id = 150")
    wait_done(db)
    events = fence(db, receiver)
    result = materialize(events)
    assert result["public.parent"] == table_rows(db, "ONLY parent", ["id"])
    assert result["public.child"] == table_rows(db, "child", ["id"])
    assert states(db) == [("public.parent", "done", 100), ("public.child", "done", 200)]


def test_published_generated_columns_are_read_as_they_stream(
        db: Database, receiver: Receiver, start_wal2http: Start, wal2http_bin: str) -> None:
    """18 publishes stored generated columns with publish_generated_columns = stored; earlier versions never do."""
    stored = server_version(db) >= 180000
    db.execute("CREATE TABLE g (id int PRIMARY KEY, a int, doubled int GENERATED ALWAYS AS (a * 2) STORED)")
    db.execute(FENCE)
    options = " WITH (publish_generated_columns = stored)" if stored else ""
    db.execute(f"CREATE PUBLICATION wal2http FOR TABLE g, fence{options}")
    db.execute("INSERT INTO g (id, a) SELECT i, i FROM generate_series(1, 200) i")
    start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url, "--batch-size", "100",
                   "--backfill-chunk-size", "64")
    backfill(wal2http_bin, db, "--table", "public.g")
    wait_done(db)
    db.execute("UPDATE g SET a = 1000 WHERE id = 7")
    events = fence(db, receiver)
    (update,) = [e for e in events if e["op"] == "update"]
    reads = [e["new"] for e in events if e["op"] == "read"]
    assert list(update["new"]) == list(reads[0])  # the same columns, in the same order
    expected = {"id": 7, "a": 1000, "doubled": 2000} if stored else {"id": 7, "a": 1000}
    assert update["new"] == expected
    assert reads == [{"id": i, "a": i, "doubled": 2 * i} if stored else {"id": i, "a": i} for i in range(1, 201)]
    assert materialize(events)["public.g"] == {k: {c: v for c, v in row.items() if stored or c != "doubled"}
                                              for k, row in table_rows(db, "g", ["id"]).items()}


def test_a_long_lock_is_waited_out_and_said(db: Database, receiver: Receiver, start_wal2http: Start,
                                           wal2http_bin: str) -> None:
    publish(db, "CREATE TABLE items (id int PRIMARY KEY, v text, n int)", FENCE, tables="items, fence")
    fill(db, "items", 3000)
    receiver.set_delay(0.01)
    run = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url, "--batch-size", "20",
                         "--backfill-chunk-size", "100")
    backfill(wal2http_bin, db, "--table", "public.items")
    wait_until(lambda: states(db)[0][2] >= 300, timeout=60, what="300 rows confirmed")
    locker = db.connect()
    locker.autocommit = False
    locker.cursor().execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")  # what VACUUM FULL or CLUSTER hold
    try:
        def said() -> bool:
            out, _ = backfill(wal2http_bin, db, "status", "--json")
            (task,) = json.loads(out)["requests"]
            return task["state"] == "running" and "waiting for a lock on public.items" in (task["reason"] or "")

        wait_until(said, timeout=20, interval=0.5, what="backfill status saying it waits for the lock")
        text, _ = backfill(wal2http_bin, db, "status")
        assert "waiting for a lock on public.items" in text.splitlines()[1]
        time.sleep(9)  # a lock held longer than the statements' lock timeout, again and again
        assert states(db)[0][1] == "running"
    finally:
        locker.rollback()
        locker.close()
    wait_done(db)
    events = fence(db, receiver)
    assert states(db) == [("public.items", "done", 3000)]
    assert materialize(events)["public.items"] == table_rows(db, "items", ["id"])
    assert "waits for a lock on public.items" in run.stderr
    assert db.execute("SELECT reason FROM wal2http.wal2http_backfill") == [(None,)]  # the wait is over, and said so


def test_a_new_request_resumes_where_a_failed_one_stopped(db: Database, receiver: Receiver, start_wal2http: Start,
                                                         wal2http_bin: str) -> None:
    publish(db, "CREATE TABLE items (id int PRIMARY KEY, v text, n int)", FENCE,
            "CREATE TABLE gate (closed bool)", "INSERT INTO gate VALUES (true)",
            # Fails every chunk past id 1000 while the gate is closed (a condition that errors at run time).
            "CREATE FUNCTION passes(int) RETURNS bool LANGUAGE plpgsql AS $$ BEGIN"
            " IF $1 > 1000 AND (SELECT closed FROM gate) THEN RAISE EXCEPTION 'gate closed'; END IF;"
            " RETURN true; END $$", tables="items, fence")
    fill(db, "items", 2000)
    run = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url, "--batch-size", "100",
                         "--backfill-chunk-size", "100")
    backfill(wal2http_bin, db, "--table", "public.items", "--where", "passes(id)")
    wait_done(db, timeout=120)
    assert states(db) == [("public.items", "failed", 1000)]
    assert "gate closed" in reason(db)
    db.execute("UPDATE gate SET closed = false")
    out, _ = backfill(wal2http_bin, db, "--table", "public.items", "--where", "passes(id)", "--wait")
    assert "public.items: goes on where request 1 stopped (1000 rows sent)" in out
    assert "public.items: done, 2000 rows sent" in out
    events = fence(db, receiver)
    reads = [e["key"]["id"] for e in events if e["op"] == "read"]
    assert reads == list(range(1, 2001))  # each row read once: the second request went on from id 1000
    assert materialize(events)["public.items"] == table_rows(db, "items", ["id"])
    assert "backfill of public.items resumed" in run.stderr


def test_a_schema_with_a_dot_in_its_name(db: Database, receiver: Receiver, start_wal2http: Start,
                                         wal2http_bin: str) -> None:
    publish(db, 'CREATE SCHEMA "eu.west"', 'CREATE TABLE "eu.west".orders (id int PRIMARY KEY, v text)',
            'CREATE TABLE "eu.west"."a.b" (id int PRIMARY KEY)', FENCE,
            tables='"eu.west".orders, "eu.west"."a.b", fence')
    db.execute('INSERT INTO "eu.west".orders SELECT i, \'o\' || i FROM generate_series(1, 50) i')
    db.execute('INSERT INTO "eu.west"."a.b" SELECT generate_series(1, 5)')
    start_wal2http("--create-slot", "--backfill", "--sink", "http", "--http-url", receiver.url,
                   "--batch-size", "100")  # the initial snapshot: every published table
    wait_done(db)
    assert sorted(states(db)) == [("eu.west.a.b", "done", 5), ("eu.west.orders", "done", 50),
                                  ("public.fence", "done", 0)]
    out, _ = backfill(wal2http_bin, db, "--table", '"eu.west".orders', "--table", '"eu.west"."a.b"', "--wait")
    assert '"eu.west".orders: done, 50 rows sent' in out and '"eu.west"."a.b": done, 5 rows sent' in out
    events = fence(db, receiver)
    reads = [e for e in events if e["op"] == "read"]
    assert {(e["schema"], e["table"]) for e in reads} == {("eu.west", "orders"), ("eu.west", "a.b")}
    assert len(reads) == 2 * 55
    assert materialize(events)["eu.west.orders"] == table_rows(db, '"eu.west".orders', ["id"])
    _, err = backfill(wal2http_bin, db, "--table", "eu.west.nothing", expect=2)
    assert "does not exist" in err and '"eu.west".nothing' in err  # the quoting that names it
    # slot create takes the same names: a publication of its own for the table, and its backfill.
    other = {"WAL2HTTP_DSN": db.dsn, "WAL2HTTP_SLOT": "other", "WAL2HTTP_PUBLICATION": "other"}
    code, out, err = run_once(wal2http_bin, ["slot", "create", "--table", '"eu.west".orders', "--backfill"], other)
    assert code == 0, err
    assert db.execute("SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = 'other'") == [
        ("eu.west", "orders")]
    assert db.execute("SELECT schema_name, table_name, state FROM wal2http.wal2http_backfill WHERE slot = 'other'") == [
        ("eu.west", "orders", "queued")]


def test_a_partitioned_root_published_by_its_partitions_is_refused_with_the_fix(db: Database,
                                                                              wal2http_bin: str) -> None:
    publish(db, "CREATE TABLE m (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at)",
            "CREATE TABLE m_2025 PARTITION OF m FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')",
            "CREATE TABLE m_2026 PARTITION OF m FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')", tables="m")
    db.execute("SELECT pg_create_logical_replication_slot('wal2http', 'pgoutput')")
    _, err = backfill(wal2http_bin, db, "--table", "public.m", expect=2)
    assert "publish_via_partition_root" in err
    assert "--table public.m_2025 --table public.m_2026" in err
    assert "ADD TABLE" not in err
    backfill(wal2http_bin, db, "--table", "public.m_2025", "--table", "public.m_2026")


def test_a_read_over_max_event_bytes_names_the_row_and_the_way_on(
        db: Database, receiver: Receiver, start_wal2http: Start, wal2http_bin: str) -> None:
    publish(db, "CREATE TABLE docs (id int PRIMARY KEY, body text)", FENCE, tables="docs, fence")
    db.execute("INSERT INTO docs SELECT i, repeat('x', CASE WHEN i = 7 THEN 20000 ELSE 10 END)"
               " FROM generate_series(1, 20) i")
    args = ("--sink", "http", "--http-url", receiver.url, "--max-event-bytes", "4096")
    run = start_wal2http("--create-slot", *args)
    backfill(wal2http_bin, db, "--table", "public.docs")
    assert run.wait(60) == 4
    last = run.stderr.strip().splitlines()[-1]
    for part in ("read of public.docs", '{"id": 7}', "backfill request 1", "wal2http backfill cancel 1",
                 "--max-event-bytes", "--on-reject"):
        assert part in last, last
    code, _, err = run_once(wal2http_bin, ["backfill", "cancel", "1"], {"WAL2HTTP_DSN": db.dsn})
    assert code == 0, err
    start_wal2http(*args)
    events = fence(db, receiver)  # live changes flow again
    assert not [e for e in events if e["op"] == "read" and e["key"] == {"id": 7}]


def test_a_table_renamed_mid_backfill_fails_with_what_happened(
        db: Database, receiver: Receiver, start_wal2http: Start, wal2http_bin: str) -> None:
    publish(db, "CREATE TABLE items (id int PRIMARY KEY, v text, n int)", FENCE, tables="items, fence")
    fill(db, "items", 3000)
    receiver.set_delay(0.02)
    run = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url, "--batch-size", "10",
                         "--backfill-chunk-size", "50")
    backfill(wal2http_bin, db, "--table", "public.items")
    wait_until(lambda: states(db)[0][2] >= 50, timeout=60, what="a chunk confirmed")
    db.execute("ALTER TABLE items RENAME TO goods")
    receiver.set_delay(0)
    wait_done(db, timeout=60)
    assert states(db)[0][1] == "failed"
    assert reason(db) .startswith("table public.items was renamed to public.goods during the backfill"), reason(db)
    assert "request a backfill of public.goods" in reason(db)
    assert "does not exist" not in reason(db)
    assert run.running


def test_a_requests_table_created_before_the_shape_column_keeps_working(
        db: Database, receiver: Receiver, start_wal2http: Start, wal2http_bin: str) -> None:
    """A DBA's table from an earlier version: run works it as it is; the owner's next request adds the column."""
    from wal2http.pg.backfill import _CREATE

    publish(db, "CREATE TABLE items (id int PRIMARY KEY, v text, n int)", FENCE, tables="items, fence")
    fill(db, "items", 300)
    ddl = "CREATE TABLE wal2http.wal2http_backfill" + _CREATE.seq[2].string.replace(",\n    shape text", "")
    db.execute("CREATE SCHEMA wal2http")
    db.execute(ddl)
    db.execute("INSERT INTO wal2http.wal2http_backfill (request, slot, publication, schema_name, table_name)"
               " VALUES (1, 'wal2http', 'wal2http', 'public', 'items')")  # queued as an earlier version did
    assert db.execute("SELECT count(*) FROM pg_attribute WHERE attrelid = 'wal2http.wal2http_backfill'::regclass"
                      " AND attname = 'shape'") == [(0,)]
    start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url, "--backfill-chunk-size", "64")
    wait_done(db)
    assert states(db) == [("public.items", "done", 300)]
    out, _ = backfill(wal2http_bin, db, "--table", "public.items", "--wait")
    assert "public.items: done, 300 rows sent" in out
    assert db.execute("SELECT count(*) FROM wal2http.wal2http_backfill WHERE shape IS NOT NULL") == [(1,)]
    events = fence(db, receiver)
    assert materialize(events)["public.items"] == table_rows(db, "items", ["id"])


def test_a_condition_with_a_percent_sign_pages_past_the_first_chunk(
        db: Database, receiver: Receiver, start_wal2http: Start, wal2http_bin: str) -> None:
    """Conditions are SQL text; a ``%`` in one (LIKE) is no parameter placeholder, in the first chunk or later."""
    publish(db, "CREATE TABLE items (id int PRIMARY KEY, v text, n int)", FENCE, tables="items, fence")
    fill(db, "items", 300)
    start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url, "--backfill-chunk-size", "20")
    backfill(wal2http_bin, db, "--table", "public.items", "--where", "v LIKE 'old 1%'")
    wait_done(db)
    reads = [e["key"]["id"] for e in fence(db, receiver) if e["op"] == "read"]
    expected = [i for i in range(1, 301) if str(i).startswith("1")]
    assert reads == expected
    assert states(db) == [("public.items", "done", len(expected))]
