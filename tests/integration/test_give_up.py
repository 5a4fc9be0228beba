"""Giving up on an event without losing it: --give-up-after, status classes, per-row parking, --max-dead-letters."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from tests.support import wait_until
from tests.support.materialize import materialize, table_rows
from tests.support.pgcluster import Database
from tests.support.process import Start, run_once
from tests.support.receiver import Receiver
from tests.support.replication import publish
from wal2http.lsn import parse_lsn


def http_args(receiver: Receiver, *extra: str) -> tuple[str, ...]:
    return ("--create-slot", "--sink", "http", "--http-url", receiver.url, *extra)


def setup_table(db: Database) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY, v text)", tables="t")


def is_bad(event: dict[str, Any]) -> bool:
    """The receiver cannot take a row whose value is 'bad' (in its new or old image)."""
    return any((image or {}).get("v") == "bad" for image in (event.get("new"), event.get("old")))


def dead_letters(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def row_ops(events: list[dict[str, Any]]) -> list[tuple[str, int, str | None]]:
    return [(e["op"], e["key"]["id"], (e["new"] or {}).get("v")) for e in events]


def test_an_event_failing_past_the_limit_is_dead_lettered_its_row_parked_and_replayed_in_order(
        db: Database, receiver: Receiver, start_wal2http: Start, wal2http_bin: str, tmp_path: Path) -> None:
    setup_table(db)
    dead = tmp_path / "dead.jsonl"
    receiver.reject_when(is_bad, status=503)
    process = start_wal2http(*http_args(receiver, "--batch-size", "5", "--give-up-after", "2",
                                        "--dead-letter-path", str(dead)))
    started = time.monotonic()
    db.execute("INSERT INTO t SELECT i, CASE WHEN i = 4 THEN 'bad' ELSE 'ok' END FROM generate_series(1, 8) i")
    wait_until(lambda: {1, 2, 3, 5, 6, 7, 8} <= {e["key"]["id"] for e in receiver.events()}, timeout=60,
               what="the other rows of the failing batch")
    assert time.monotonic() - started >= 2
    (entry,) = dead_letters(dead)
    assert entry["event"]["new"] == {"id": 4, "v": "bad"} and entry["status"] == 503
    assert "gave up" in entry["reason"] and "503" in entry["reason"]

    # Later changes of row 4 are parked behind it, a key change parks both keys; other rows flow.
    db.execute("UPDATE t SET v = 'fixed' WHERE id = 4")
    db.execute("UPDATE t SET id = 40 WHERE id = 4")
    db.execute("UPDATE t SET v = 'later' WHERE id = 40")
    db.execute("UPDATE t SET v = 'two' WHERE id = 2")
    db.execute("INSERT INTO t VALUES (9, 'ok')")
    wait_until(lambda: 9 in {e["key"]["id"] for e in receiver.events()}, timeout=30, what="row 9")
    wait_until(lambda: len(dead_letters(dead)) == 4, timeout=10, what="4 dead letters")
    parked = dead_letters(dead)
    assert [e["event"]["op"] for e in parked] == ["insert", "update", "update", "update"]
    assert [e["event"]["key"]["id"] for e in parked] == [4, 4, 40, 40]
    assert all("parked" in e["reason"] for e in parked[1:])
    assert not {4, 40} & {e["key"]["id"] for e in receiver.events()}
    assert ("update", 2, "two") in row_ops(receiver.events())
    assert "1 row parked" in process.stderr or "rows parked" in process.stderr
    assert process.stop() == 0

    code, out, err = run_once(wal2http_bin, ["slot", "status", "--dead-letter-path", str(dead)],
                              env={"WAL2HTTP_DSN": db.dsn})
    assert "2 rows parked" in out, out + err

    receiver.reset()
    code, out, err = run_once(wal2http_bin, ["replay", "--sink", "http", "--http-url", receiver.url, str(dead)])
    assert code == 0, err
    replayed = [e for e in receiver.events() if e["key"]["id"] in (4, 40)]
    assert [e["id"] for e in replayed] == [e["event"]["id"] for e in parked]
    assert dead.read_text() == ""
    assert materialize(receiver.events())["public.t"] == table_rows(db, "t", ["id"])

    # The file is empty: nothing is parked any more, row 40 goes to the receiver again.
    again = start_wal2http(*http_args(receiver, "--give-up-after", "2", "--dead-letter-path", str(dead)))
    db.execute("UPDATE t SET v = 'after' WHERE id = 40")
    wait_until(lambda: ("update", 40, "after") in row_ops(receiver.events()), timeout=30, what="row 40")
    assert again.stop() == 0
    assert dead.read_text() == ""


def test_retry_status_and_give_up_attempts(db: Database, receiver: Receiver, start_wal2http: Start,
                                           tmp_path: Path) -> None:
    setup_table(db)
    dead = tmp_path / "dead.jsonl"
    receiver.reject_when(is_bad, status=409)
    process = start_wal2http(*http_args(receiver, "--retry-status", "409", "--give-up-attempts", "3",
                                        "--breaker-cooldown", "0.2", "--dead-letter-path", str(dead)))
    db.execute("INSERT INTO t VALUES (1, 'bad')")
    db.execute("INSERT INTO t VALUES (2, 'ok')")
    wait_until(lambda: 2 in {e["key"]["id"] for e in receiver.events()}, timeout=60, what="row 2")
    assert process.stop() == 0
    (entry,) = dead_letters(dead)
    assert entry["status"] == 409 and "3 attempts" in entry["reason"]
    # Each attempt includes the HTTP client's quick retries of a retried status.
    assert 3 <= len([r for r in receiver.requests if r.status == 409]) <= 9


def test_a_truncate_behind_a_parked_row_parks_its_table(db: Database, receiver: Receiver, start_wal2http: Start,
                                                        wal2http_bin: str, tmp_path: Path) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY, v text)", "CREATE TABLE u (id int PRIMARY KEY)")
    dead = tmp_path / "dead.jsonl"
    receiver.reject_when(is_bad, status=500)
    process = start_wal2http(*http_args(receiver, "--give-up-attempts", "1", "--dead-letter-path", str(dead)))
    db.execute("INSERT INTO t VALUES (1, 'bad'), (2, 'ok')")
    db.execute("TRUNCATE t")
    db.execute("INSERT INTO t VALUES (3, 'ok')")
    db.execute("INSERT INTO u VALUES (1)")
    wait_until(lambda: any(e["table"] == "u" for e in receiver.events()), timeout=30, what="the row of u")
    assert process.stop() == 0
    # Row 2 went before the truncate reached the file; the truncate and all later rows of t wait.
    assert [(e["table"], e["op"]) for e in receiver.events()] == [("t", "insert"), ("u", "insert")]
    assert [e["event"]["op"] for e in dead_letters(dead)] == ["insert", "truncate", "insert"]

    receiver.reset()
    code, out, err = run_once(wal2http_bin, ["replay", "--sink", "http", "--http-url", receiver.url, str(dead)])
    assert code == 0 and "replayed 3 of 3" in out, err
    tables = materialize(receiver.events())
    assert tables["public.t"] == table_rows(db, "t", ["id"]) and tables["public.u"] == table_rows(db, "u", ["id"])


def test_kill9_between_dead_lettering_and_confirming(db: Database, start_wal2http: Start, tmp_path: Path) -> None:
    setup_table(db)
    dead = tmp_path / "dead.jsonl"
    answer = threading.Event()

    def on_event(event: dict[str, Any]) -> None:
        if event["key"]["id"] == 2 and not answer.is_set():
            answer.wait(60)  # row 2 was received, its answer never reaches wal2http

    with Receiver(on_event=on_event) as receiver:
        receiver.reject_when(is_bad, status=503)
        args = http_args(receiver, "--give-up-after", "1", "--breaker-cooldown", "0.2",
                         "--dead-letter-path", str(dead))
        process = start_wal2http(*args)
        db.execute("INSERT INTO t VALUES (1, 'bad'), (2, 'ok')")
        wait_until(lambda: len(dead_letters(dead)) == 1, timeout=30, what="the dead letter")
        wait_until(lambda: 2 in {e["key"]["id"] for e in receiver.events()}, timeout=10, what="row 2 sent")
        process.kill()
        answer.set()
        # The transaction was not confirmed: PostgreSQL sends it again.
        commit = parse_lsn(dead_letters(dead)[0]["event"]["commit_lsn"])
        assert (db.cluster.confirmed_flush_lsn("wal2http") or 0) <= commit
        receiver.clear()

        again = start_wal2http(*args)
        wait_until(lambda: 2 in {e["key"]["id"] for e in receiver.events()}, timeout=30, what="row 2 again")
        db.execute("UPDATE t SET v = 'fixed' WHERE id = 1")  # parked: the file says row 1 is
        db.execute("INSERT INTO t VALUES (3, 'ok')")
        wait_until(lambda: 3 in {e["key"]["id"] for e in receiver.events()}, timeout=30, what="row 3")
        wait_until(lambda: len(dead_letters(dead)) == 2, timeout=10, what="the parked update")
        assert again.stop() == 0
        entries = dead_letters(dead)
        assert [e["event"]["key"]["id"] for e in entries] == [1, 1]
        assert len({e["event_id"] for e in entries}) == 2  # the given-up insert was not written twice
        assert 1 not in {e["key"]["id"] for e in receiver.events()}
        assert (db.cluster.confirmed_flush_lsn("wal2http") or 0) > parse_lsn(entries[1]["event"]["commit_lsn"])


def test_the_diversion_limit_halts(db: Database, receiver: Receiver, start_wal2http: Start,
                                   tmp_path: Path) -> None:
    setup_table(db)
    dead = tmp_path / "dead.jsonl"
    receiver.set_status(400, b'{"error": "no"}')
    process = start_wal2http(*http_args(receiver, "--on-reject", "dead-letter", "--dead-letter-path", str(dead),
                                        "--max-dead-letters", "3"))
    for i in range(1, 11):
        db.execute(f"INSERT INTO t VALUES ({i}, 'ok')")
    assert process.wait(30) == 4
    assert str(dead) in process.stderr and "--max-dead-letters 3" in process.stderr
    assert [e["event"]["key"]["id"] for e in dead_letters(dead)] == [1, 2, 3]
    # Nothing past the third was confirmed: the rest arrive once the receiver takes them.
    receiver.reset()
    again = start_wal2http(*http_args(receiver, "--on-reject", "dead-letter", "--dead-letter-path", str(dead)))
    wait_until(lambda: len(receiver.events()) >= 7, timeout=30, what="rows 4 to 10")
    assert again.stop() == 0
    assert sorted({e["key"]["id"] for e in receiver.events()}) == list(range(4, 11))


def test_defaults_retry_forever_and_give_up_needs_a_dead_letter_file(
        db: Database, receiver: Receiver, start_wal2http: Start, wal2http_bin: str, tmp_path: Path) -> None:
    setup_table(db)
    receiver.reject_when(is_bad, status=503)
    process = start_wal2http(*http_args(receiver, "--breaker-cooldown", "0.2"))
    db.execute("INSERT INTO t VALUES (1, 'bad')")
    db.execute("INSERT INTO t VALUES (2, 'ok')")
    time.sleep(4)
    assert receiver.events() == [] and process.running
    assert not list(tmp_path.iterdir())
    receiver.reset()
    wait_until(lambda: len(receiver.events()) == 2, timeout=60, what="both rows")
    assert [e["key"]["id"] for e in receiver.events()] == [1, 2]
    assert process.stop() == 0

    code, out, err = run_once(wal2http_bin, ["run", *http_args(receiver, "--give-up-after", "10")],
                              env={"WAL2HTTP_DSN": db.dsn})
    assert code == 2 and "--give-up-after needs --dead-letter-path" in err
    code, out, err = run_once(wal2http_bin, ["run", *http_args(receiver, "--reject-status", "204")],
                              env={"WAL2HTTP_DSN": db.dsn})
    assert code == 2 and "--reject-status" in err and "204" in err
    code, out, err = run_once(wal2http_bin, ["check-config", *http_args(receiver, "--reject-status", "400,422",
                                                                        "--retry-status", "409,429,500-599")],
                              env={"WAL2HTTP_DSN": db.dsn})
    assert "2xx: accepted; 408-409, 425, 429, 500-599: retry until accepted; 300-400, 402, 405-407," in out, out + err
    assert "401, 403-404, 410: halt (exit 4)" in out
