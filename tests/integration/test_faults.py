"""Faults on the receiver side and operator stops: the data always arrives, once and in order."""

from __future__ import annotations

import signal
import time

from tests.support import wait_until
from tests.support.events import assert_confirmed_past, assert_in_commit_order
from tests.support.pgcluster import Database
from tests.support.process import Start
from tests.support.receiver import Receiver
from tests.support.replication import publish
from wal2http.lsn import parse_lsn


def setup_table(db: Database) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY, v text)", tables="t")


def test_receiver_answering_503_for_a_while(db: Database, receiver: Receiver, start_wal2http: Start) -> None:
    setup_table(db)
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url)
    receiver.fail_next(12, status=503)
    for i in range(1, 6):
        db.execute("INSERT INTO t VALUES (%s, 'x')", (i,))
    events = receiver.wait_for_events(5, timeout=60)
    assert wal2http.stop() == 0
    assert [e["new"]["id"] for e in events] == [1, 2, 3, 4, 5]
    assert sum(not r.ok for r in receiver.requests) == 12
    assert_in_commit_order(events)
    assert_confirmed_past(db, events)
    assert wal2http.stderr.count("retrying until it succeeds") == 1  # logged once, not per attempt


def test_retry_after_is_honoured(db: Database, receiver: Receiver, start_wal2http: Start) -> None:
    setup_table(db)
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url)
    receiver.fail_next(4, status=429, headers={"Retry-After": "1"})
    db.execute("INSERT INTO t VALUES (1, 'x')")
    receiver.wait_for_events(1, timeout=30)
    assert wal2http.stop() == 0
    times = [r.received_at for r in receiver.requests]
    assert times[-1] - times[0] >= 3.0  # four 1-second waits, none skipped


def test_receiver_down_longer_than_wal_sender_timeout(db: Database, receiver: Receiver,
                                                      start_wal2http: Start) -> None:
    setup_table(db)
    log_start = db.cluster.log_size()
    setting = db.execute("SELECT setting FROM pg_settings WHERE name = 'wal_sender_timeout'")[0][0]
    timeout_s = int(setting) / 1000
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url)
    pid = db.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'wal2http'")[0][0]
    receiver.down()
    db.execute("INSERT INTO t SELECT i, 'x' FROM generate_series(1, 100) i")
    time.sleep(timeout_s * 1.5)
    assert wal2http.running
    receiver.up()
    events = receiver.wait_for_events(100, timeout=60)
    assert wal2http.stop() == 0
    assert [e["new"]["id"] for e in events] == list(range(1, 101))
    # The same walsender served us throughout: the stream was never dropped.
    assert "connection lost" not in wal2http.stderr
    db.execute("SELECT 1")
    log = db.cluster.log_since(log_start)
    assert "terminating walsender process due to replication timeout" not in log, (pid, log)


def test_sigterm_mid_transaction_then_restart(db: Database, receiver: Receiver,
                                              start_wal2http: Start) -> None:
    setup_table(db)
    receiver.set_delay(0.002)
    args = ("--create-slot", "--sink", "http", "--http-url", receiver.url, "--batch-size", "100")
    first = start_wal2http(*args)
    db.execute("INSERT INTO t SELECT i, 'x' FROM generate_series(1, 20000) i")
    db.execute("INSERT INTO t VALUES (-1, 'after the big one')")
    receiver.wait_for_events(500, timeout=60)
    first.signal(signal.SIGTERM)
    assert first.wait(120) == 0
    delivered = receiver.events()
    # The interrupted transaction was finished and nothing after its commit was started.
    assert len(delivered) in (20000, 20001)
    receiver.set_delay(0)
    db.execute("INSERT INTO t SELECT i, 'y' FROM generate_series(20001, 20100) i")
    second = start_wal2http(*args)
    events = receiver.wait_for_events(20101, timeout=60)
    time.sleep(0.5)
    assert second.stop() == 0
    ids = [e["new"]["id"] for e in receiver.events()]
    assert ids == [*range(1, 20001), -1, *range(20001, 20101)]  # exactly once, in order
    assert_in_commit_order(events)
    assert_confirmed_past(db, events)


def test_rejection_stops_with_exit_4_and_names_the_event(db: Database, receiver: Receiver,
                                                         start_wal2http: Start) -> None:
    setup_table(db)
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url)
    receiver.set_status(422, body=b'{"error": "schema mismatch"}')
    db.execute("INSERT INTO t VALUES (1, 'x')")
    assert wal2http.wait(30) == 4
    event_id = receiver.requests[0].headers["webhook-id"]
    assert f"rejected {event_id} with 422" in wal2http.stderr
    assert "schema mismatch" in wal2http.stderr
    assert "Traceback" not in wal2http.stderr
    # The stop summary says what is left and where the next run starts; the error stays the last line.
    lines = wal2http.stderr.splitlines()
    (summary,) = [line for line in lines if " stopped: " in line]
    assert "stopped: 0 events delivered" in summary and "left undelivered: 1 event read" in summary
    assert f"rejected {event_id} with 422" in lines[-1]
    # Not confirmed: the rejected change is still in the slot for the next run.
    commit_lsn = parse_lsn(receiver.requests[0].json()["commit_lsn"])
    assert (db.cluster.confirmed_flush_lsn("wal2http") or 0) <= commit_lsn
    receiver.reset()
    again = start_wal2http("--sink", "http", "--http-url", receiver.url)
    (event,) = receiver.wait_for_events(1)
    assert event["id"] == event_id
    assert again.stop() == 0


def test_configuration_status_and_redirects_stop(db: Database, receiver: Receiver,
                                                 start_wal2http: Start) -> None:
    setup_table(db)
    for status, expected in ((404, "check the receiver URL"), (302, "rejected")):
        receiver.set_status(status, headers={"Location": "http://127.0.0.1:1/elsewhere"})
        wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url)
        db.execute("INSERT INTO t VALUES (%s, 'x')", (status,))
        assert wal2http.wait(30) == 4
        assert expected in wal2http.stderr and f"{status}" in wal2http.stderr
    assert all(r.path == "/hook" for r in receiver.requests)  # the redirect was not followed


def test_sigterm_while_receiver_is_down_exits_without_confirming(db: Database, receiver: Receiver,
                                                                  start_wal2http: Start) -> None:
    setup_table(db)
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url,
                              "--shutdown-timeout", "2")
    receiver.down()
    db.execute("INSERT INTO t VALUES (1, 'x')")
    wait_until(lambda: "retrying until it succeeds" in wal2http.stderr, timeout=30, what="a failed delivery")
    before = db.cluster.confirmed_flush_lsn("wal2http")
    started = time.monotonic()
    assert wal2http.stop(30) == 0
    assert time.monotonic() - started < 10  # the shutdown timeout bounds the wait
    assert "will be sent again" in wal2http.stderr
    assert db.cluster.confirmed_flush_lsn("wal2http") == before
    receiver.up()
    again = start_wal2http("--sink", "http", "--http-url", receiver.url)
    (event,) = receiver.wait_for_events(1)
    assert event["new"]["id"] == 1
    assert again.stop() == 0


def test_connection_lost_while_a_received_commit_waits_for_the_receiver(db: Database, receiver: Receiver,
                                                                         start_wal2http: Start) -> None:
    """The commit was read but not delivered when the stream broke: the server sends it again, and it
    must be taken as new, not as a commit out of order (which reconnected for ever, delivering nothing)."""
    setup_table(db)
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url, "--batch-size", "10",
                              "--reconnect-max-wait", "1")
    receiver.set_status(503)
    db.execute("INSERT INTO t VALUES (1, 'x')")
    receiver.wait_for_requests(2, timeout=30)  # the whole transaction read, its delivery being retried
    assert db.cluster.terminate_walsenders("wal2http") == 1
    wait_until(lambda: "reconnecting" in wal2http.stderr, what="the lost connection noticed")
    receiver.set_status(None)
    db.execute("INSERT INTO t VALUES (2, 'y')")
    events = receiver.wait_for_events(2, timeout=30)
    assert [e["new"]["id"] for e in events] == [1, 2]
    assert "commit order violated" not in wal2http.stderr
    assert wal2http.stop() == 0
