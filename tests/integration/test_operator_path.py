"""Every operator command does what it reports: replay, slot create --backfill, slot drop, backfill ids.

Each command is also driven through a failure after an earlier step changed something: the state it
leaves behind must be what it printed.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.support.pgcluster import Database
from tests.support.process import Result, Start, cli
from tests.support.receiver import Receiver
from tests.support.replication import publish, published, slot_row
from wal2http.decode.events import Event, encode
from wal2http.delivery.deadletter import DeadLetterFile

KEYED = "CREATE TABLE orders (id int PRIMARY KEY, v text)"
KEYLESS = "CREATE TABLE audit (n int, line text)"


def dead_letters(path: Path, count: int = 3) -> bytes:
    """``count`` dead letters as ``run`` writes them; the file's bytes."""
    out = DeadLetterFile(str(path))
    for seq in range(1, count + 1):
        event_id = f"0000000001A2B3C8-{seq}"
        record: dict[str, Any] = {"id": event_id, "op": "insert", "schema": "public", "table": "orders",
                                  "key": {"id": seq}, "new": {"id": seq, "v": "x"}, "old": None,
                                  "unchanged_toast": [], "lsn": "0/1A2B300", "commit_lsn": "0/1A2B3C8",
                                  "commit_time": "2026-11-28T01:02:03.456789Z", "xid": 1234, "seq": seq}
        event = Event(event_id, "insert", 1234, 0x1A2B3C8, 0, seq, record, encode(record))
        out.append(event, f"receiver rejected {event_id} with 422 Unprocessable Entity", 422, "bad order")
    out.close()
    return path.read_bytes()


def replay(binary: str, *args: str) -> Result:
    return cli(binary, "replay", *args, dsn="")


# -- replay ------------------------------------------------------------------------------------------


def test_replay_to_stdout_or_a_file_removes_no_dead_letter(wal2http_bin: str, tmp_path: Path) -> None:
    dead = tmp_path / "dead.jsonl"
    before = dead_letters(dead)
    printed = replay(wal2http_bin, str(dead))
    assert printed.code == 0, printed.err
    assert [json.loads(line)["id"] for line in printed.out.splitlines()] == [
        f"0000000001A2B3C8-{n}" for n in (1, 2, 3)]  # the events alone: a summary goes to stderr
    assert dead.read_bytes() == before
    assert printed.err.splitlines()[-1] == (
        f"sent 3 of 3 events from {dead} (dead-letter file) to stdout; the file is unchanged: "
        "lines leave it only once an http or hook0 sink accepted them")

    # Looking at the first two, as an operator does with head: nothing leaves the file.
    piped = subprocess.run(f"'{wal2http_bin}' replay '{dead}' | head -2", shell=True, capture_output=True,
                           text=True, timeout=60, env={k: v for k, v in os.environ.items()
                                                       if not k.startswith("WAL2HTTP_")})
    assert len(piped.stdout.splitlines()) == 2 and "Traceback" not in piped.stderr
    assert dead.read_bytes() == before

    copy = tmp_path / "copy.jsonl"
    copied = replay(wal2http_bin, "--sink", "file", "--file-path", str(copy), str(dead))
    assert copied.code == 0, copied.err
    assert len(copy.read_text().splitlines()) == 3 and dead.read_bytes() == before
    assert copied.out.splitlines()[-1].endswith("the file is unchanged: lines leave it only once an http or "
                                                "hook0 sink accepted them")


def test_replay_to_a_receiver_removes_what_it_accepted(wal2http_bin: str, tmp_path: Path,
                                                       receiver: Receiver) -> None:
    dead = tmp_path / "dead.jsonl"
    dead_letters(dead)
    receiver.reject_when(lambda event: event["seq"] == 3)
    stopped = replay(wal2http_bin, "--sink", "http", "--http-url", receiver.url, "--batch-size", "1", str(dead))
    assert stopped.code == 4
    assert "replay stopped at line 3: receiver rejected" in stopped.err
    assert f"1 line(s) not delivered remain in {dead}" in stopped.err
    assert [json.loads(line)["event_id"] for line in dead.read_text().splitlines()] == ["0000000001A2B3C8-3"]
    receiver.reject_when(None)
    done = replay(wal2http_bin, "--sink", "http", "--http-url", receiver.url, str(dead))
    assert done.code == 0, done.err
    assert done.out.splitlines()[-1] == f"replayed 1 of 1 events from {dead} (dead-letter file)"
    assert dead.read_text() == ""


def test_replay_dry_run_lists_each_dead_letter_and_writes_nothing(wal2http_bin: str, tmp_path: Path) -> None:
    dead = tmp_path / "dead.jsonl"
    before = dead_letters(dead, 2)
    os.utime(dead, (1_000_000_000, 1_000_000_000))
    listed = replay(wal2http_bin, "--dry-run", str(dead))
    assert listed.code == 0, listed.err
    header, first, second, summary = listed.out.splitlines()
    assert header.split() == ["ID", "TABLE", "OP", "STATUS", "DEAD-LETTERED", "REASON"]
    assert first.split()[:4] == ["0000000001A2B3C8-1", "public.orders", "insert", "422"]
    assert first.endswith("receiver rejected 0000000001A2B3C8-1 with 422 Unprocessable Entity")
    assert second.split()[0] == "0000000001A2B3C8-2"
    assert summary == f"2 events in {dead} (dead-letter file) would be replayed"

    as_json = replay(wal2http_bin, "--dry-run", "--json", str(dead))
    assert as_json.code == 0, as_json.err
    rows = [json.loads(line) for line in as_json.out.splitlines()]
    assert [r["id"] for r in rows] == ["0000000001A2B3C8-1", "0000000001A2B3C8-2"]
    assert rows[0] == {"line": 1, "id": "0000000001A2B3C8-1", "table": "public.orders", "op": "insert",
                       "status": 422, "reason": "receiver rejected 0000000001A2B3C8-1 with 422 Unprocessable Entity",
                       "dead_lettered_at": rows[0]["dead_lettered_at"]}
    assert rows[0]["dead_lettered_at"].endswith("Z")
    assert dead.read_bytes() == before and dead.stat().st_mtime == 1_000_000_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dead.jsonl"]


# -- refusals name their options ---------------------------------------------------------------------


def test_a_refusal_names_on_reject(db: Database, receiver: Receiver, start_wal2http: Start) -> None:
    publish(db, KEYED, tables="orders")
    receiver.reject_when(lambda event: True)
    halted = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url)
    db.execute("INSERT INTO orders VALUES (1, 'x')")
    assert halted.wait(30) == 4
    (refusal,) = {line.split("receiver rejected", 1)[1] for line in halted.stderr.splitlines()
                  if "receiver rejected" in line}
    assert " with 400 " in refusal
    assert "--on-reject dead-letter" in refusal and "--on-reject skip" in refusal


# -- keyless tables ----------------------------------------------------------------------------------


def test_backfill_all_tables_skips_a_keyless_table(db: Database, wal2http_bin: str) -> None:
    publish(db, KEYED, KEYLESS, tables="orders, audit")
    assert cli(wal2http_bin, "slot", "create", dsn=db.dsn).code == 0
    queued = cli(wal2http_bin, "backfill", "--all-tables", "--json", dsn=db.dsn)
    assert queued.code == 0, queued.err
    assert queued.json()["tables"] == ["public.orders"]
    assert queued.json()["skipped"] == ["public.audit"]
    assert ("warning: skipped public.audit: it has neither a primary key nor a replica identity index; "
            "give it one (ALTER TABLE public.audit ADD PRIMARY KEY (...), or ALTER TABLE public.audit "
            "REPLICA IDENTITY USING INDEX a_unique_index), then backfill it with --table public.audit") in queued.err
    assert db.execute("SELECT table_name::text FROM wal2http.wal2http_backfill") == [("orders",)]

    refused = cli(wal2http_bin, "backfill", "--table", "public.audit", dsn=db.dsn)
    assert refused.code == 2 and "neither a primary key nor a replica identity index" in refused.err
    assert db.execute("SELECT count(*) FROM wal2http.wal2http_backfill") == [(1,)]


def test_a_keyless_table_has_every_column_as_key(db: Database, receiver: Receiver, start_wal2http: Start) -> None:
    publish(db, KEYLESS, "CREATE TABLE full_audit (n int, line text)",
            "ALTER TABLE full_audit REPLICA IDENTITY FULL", tables="audit, full_audit")
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url)
    db.execute("INSERT INTO audit VALUES (1, 'a'), (1, 'b')")
    db.execute("INSERT INTO full_audit VALUES (1, 'a')")
    events = receiver.wait_for_events(3)
    assert wal2http.stop() == 0
    assert [e["key"] for e in events] == [{"n": 1, "line": "a"}, {"n": 1, "line": "b"}, {"n": 1, "line": "a"}]
    assert all(e["key"] == e["new"] for e in events)


# -- slot create --backfill --------------------------------------------------------------------------


def test_slot_create_backfill_skips_a_keyless_table(db: Database, wal2http_bin: str) -> None:
    db.execute(KEYED)
    db.execute(KEYLESS)
    created = cli(wal2http_bin, "slot", "create", "--table", "orders", "--table", "audit", "--backfill",
                  dsn=db.dsn)
    assert created.code == 0, created.err
    assert "warning: skipped public.audit: it has neither a primary key" in created.err
    assert created.out.splitlines()[-2].startswith("backfill request ")
    assert slot_row(db) is not None
    assert db.execute("SELECT table_name::text, state FROM wal2http.wal2http_backfill") == [("orders", "queued")]


def test_slot_create_backfill_refuses_before_creating_anything(db: Database, wal2http_bin: str) -> None:
    db.execute(KEYLESS)
    refused = cli(wal2http_bin, "slot", "create", "--table", "audit", "--backfill", dsn=db.dsn)
    assert refused.code == 2
    assert refused.err.splitlines()[-1].startswith("wal2http: error: nothing to backfill: no published table has")
    assert "nothing was created" in refused.err.splitlines()[-1]
    assert slot_row(db) is None and published(db) == []
    assert not db.execute("SELECT 1 FROM pg_publication")


def test_slot_create_backfill_undoes_the_slot_when_queueing_fails(db: Database, wal2http_bin: str) -> None:
    """The step after the slot fails: the slot and the publication this command created are dropped again."""
    db.execute(KEYED)
    # The requests table exists but refuses rows, the way a full tablespace or a DBA's trigger would.
    created = cli(wal2http_bin, "slot", "create", "--table", "orders", "--backfill", dsn=db.dsn)
    assert created.code == 0
    assert cli(wal2http_bin, "slot", "drop", "--yes", "--with-publication", dsn=db.dsn).code == 0
    db.execute("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
               "$$BEGIN RAISE EXCEPTION 'no new requests today'; END$$")
    db.execute("CREATE TRIGGER refuse BEFORE INSERT ON wal2http.wal2http_backfill FOR EACH ROW "
               "EXECUTE FUNCTION refuse()")

    failed = cli(wal2http_bin, "slot", "create", "--table", "orders", "--backfill", dsn=db.dsn)
    assert failed.code == 3
    last = failed.err.splitlines()[-1]
    assert "no new requests today" in last
    assert last.endswith("dropped slot wal2http and publication wal2http again: nothing was created")
    assert slot_row(db) is None and published(db) == []


def test_run_create_slot_backfill_undoes_the_slot_when_queueing_fails(db: Database, wal2http_bin: str,
                                                                      receiver: Receiver) -> None:
    """run --create-slot --backfill: the slot is dropped again when its backfill cannot be queued, so the
    next start creates both; a slot left behind would start the next run without its initial rows."""
    db.execute(KEYED)
    db.execute("INSERT INTO orders VALUES (1, 'a'), (2, 'b')")
    assert cli(wal2http_bin, "slot", "create", "--table", "orders", "--backfill", dsn=db.dsn).code == 0
    assert cli(wal2http_bin, "slot", "drop", "--yes", dsn=db.dsn).code == 0  # keeps the publication
    db.execute("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
               "$$BEGIN RAISE EXCEPTION 'no new requests today'; END$$")
    db.execute("CREATE TRIGGER refuse BEFORE INSERT ON wal2http.wal2http_backfill FOR EACH ROW "
               "EXECUTE FUNCTION refuse()")
    run = ("run", "--create-slot", "--backfill", "--until", "now", "--sink", "http", "--http-url", receiver.url)

    failed = cli(wal2http_bin, *run, dsn=db.dsn)
    assert failed.code == 3, failed.err
    last = failed.err.splitlines()[-1]
    assert "no new requests today" in last and last.endswith("dropped slot wal2http again: nothing was created")
    assert slot_row(db) is None and published(db) == ["public.orders"]
    assert receiver.requests == []

    db.execute("DROP TRIGGER refuse ON wal2http.wal2http_backfill")
    ran = cli(wal2http_bin, *run, dsn=db.dsn)
    assert ran.code == 0, ran.err
    assert sorted(e["key"]["id"] for e in receiver.events() if e["op"] == "read") == [1, 2]


def test_if_not_exists_backfill_on_an_existing_slot_queues_it_once(db: Database, wal2http_bin: str) -> None:
    db.execute(KEYED)
    assert cli(wal2http_bin, "slot", "create", "--table", "orders", dsn=db.dsn).code == 0
    again = cli(wal2http_bin, "slot", "create", "--table", "orders", "--if-not-exists", "--backfill", dsn=db.dsn)
    assert again.code == 0, again.err
    assert again.out.splitlines()[-3].startswith("slot wal2http already exists")
    assert again.out.splitlines()[-2].startswith("backfill request ")
    assert db.execute("SELECT table_name::text, state FROM wal2http.wal2http_backfill") == [("orders", "queued")]

    twice = cli(wal2http_bin, "slot", "create", "--if-not-exists", "--backfill", dsn=db.dsn)
    assert twice.code == 0, twice.err
    (request,) = db.execute("SELECT request FROM wal2http.wal2http_backfill")[0]
    assert twice.out.splitlines()[-1] == (
        f"no backfill queued: request {request} of slot wal2http is not finished yet; "
        "'wal2http backfill --all-tables' queues another")
    assert db.execute("SELECT count(*) FROM wal2http.wal2http_backfill") == [(1,)]


# -- slot drop --with-publication --------------------------------------------------------------------


def test_slot_drop_with_publication_reports_each_part(db: Database, wal2http_bin: str) -> None:
    """As a role that may drop the slot but does not own the publication: the slot goes, the publication stays."""
    db.execute(KEYED)
    assert cli(wal2http_bin, "slot", "create", "--table", "orders", "--backfill", dsn=db.dsn).code == 0
    role = f"dropper_{db.name}"[:63]
    db.execute(f'CREATE ROLE "{role}" LOGIN REPLICATION')
    (request,) = db.execute("SELECT request FROM wal2http.wal2http_backfill")[0]
    try:
        db.execute(f'GRANT USAGE ON SCHEMA wal2http TO "{role}"; '
                   f'GRANT SELECT, UPDATE ON wal2http.wal2http_backfill TO "{role}"')
        dropped = cli(wal2http_bin, "slot", "drop", "--yes", "--with-publication",
                      dsn=db.cluster.dsn(db.name, user=role))
    finally:
        db.execute(f'REVOKE ALL ON wal2http.wal2http_backfill FROM "{role}"; '
                   f'REVOKE ALL ON SCHEMA wal2http FROM "{role}"')
        db.execute(f'DROP ROLE "{role}"')
    assert dropped.code == 3
    assert dropped.out.splitlines() == [
        f"cancelled the backfill of public.orders (request {request}, 0 rows sent): it needs the slot",
        "slot wal2http dropped"]
    assert dropped.err.splitlines()[-1] == (
        "wal2http: error: slot wal2http dropped, but cannot drop publication 'wal2http': must be owner of "
        "publication wal2http; to finish, its owner (or a superuser) runs: DROP PUBLICATION wal2http;")
    assert slot_row(db) is None and published(db) == ["public.orders"]
    assert db.execute("SELECT state FROM wal2http.wal2http_backfill") == [("cancelled",)]


# -- backfill ids ------------------------------------------------------------------------------------


def test_backfill_status_shows_the_id_cancel_takes(db: Database, wal2http_bin: str) -> None:
    publish(db, KEYED, "CREATE TABLE customers (id int PRIMARY KEY)", tables="orders, customers")
    assert cli(wal2http_bin, "slot", "create", dsn=db.dsn).code == 0
    queued = cli(wal2http_bin, "backfill", "--all-tables", "--json", dsn=db.dsn)
    request = queued.json()["request"]
    listed = cli(wal2http_bin, "backfill", "status", dsn=db.dsn)
    header, *rows = listed.out.splitlines()
    assert header.split()[:2] == ["ID", "TABLE"] and "REQ" not in header
    assert sorted(row.split()[:3] for row in rows) == [[str(request), "public.customers", "queued"],
                                                       [str(request), "public.orders", "queued"]]

    one = cli(wal2http_bin, "backfill", "cancel", str(request), "--table", "public.orders", dsn=db.dsn)
    assert one.code == 0, one.err
    assert one.out.splitlines() == ["public.orders: cancelled after 0 rows"]
    assert db.execute("SELECT table_name::text, state FROM wal2http.wal2http_backfill ORDER BY 1") == [
        ("customers", "queued"), ("orders", "cancelled")]
    unknown = cli(wal2http_bin, "backfill", "cancel", str(request), "--table", "public.nosuch", dsn=db.dsn)
    assert unknown.code == 2 and "public.nosuch is not a table of backfill request" in unknown.err
    rest = cli(wal2http_bin, "backfill", "cancel", str(request), dsn=db.dsn)
    assert rest.out.splitlines() == ["public.customers: cancelled after 0 rows"]
