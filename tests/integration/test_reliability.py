"""Fault tests: whatever breaks, every committed row arrives, in commit order, none silently dropped."""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from tests.support import wait_until
from tests.support.pgcluster import Database
from tests.support.process import Start, run_once
from tests.support.receiver import Receiver
from tests.support.replication import publish
from tests.support.rogue import RogueReceiver
from tests.support.tcpproxy import TcpProxy
from wal2http.lsn import parse_lsn


class Writer:
    """Inserts single-row transactions in a thread until stopped, riding out server restarts.

    Any other exception ends the thread; ``stop()`` then fails the test with its traceback.
    """

    def __init__(self, db: Database, rate_per_s: float = 200, limit: int = 20_000) -> None:
        self.dsn = db.dsn
        self.interval = 1.0 / rate_per_s
        self.limit = limit
        self.committed: list[int] = []
        self._stop = threading.Event()
        self._failure: tuple[BaseException, str] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="writer")

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, _tb: object) -> None:
        if exc is None:
            self.stop()
        else:  # the test failed already: stop the thread, keep that failure
            self._stop.set()
            self._thread.join(30)

    def stop(self) -> list[int]:
        """Stop writing; the ids committed. Raises if the thread failed or does not end."""
        self._stop.set()
        self._thread.join(30)
        if self._thread.is_alive():
            raise AssertionError("the writer thread did not stop within 30 s")
        if self._failure is not None:
            error, text = self._failure
            raise AssertionError(f"the writer thread failed after {len(self.committed)} commits:\n{text}") from error
        return self.committed

    def _run(self) -> None:
        try:
            self._write()
        except BaseException as e:
            self._failure = (e, traceback.format_exc())

    def _write(self) -> None:
        next_id = 1
        conn = None
        while not self._stop.is_set() and next_id <= self.limit:
            try:
                if conn is None:
                    conn = psycopg2.connect(self.dsn, connect_timeout=3)
                    conn.autocommit = True
                    with conn.cursor() as cur:
                        # Acknowledged commits must survive an immediate shutdown of the server.
                        cur.execute("SET synchronous_commit = on")
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO t VALUES (%s, 'x')", (next_id,))
                self.committed.append(next_id)
                next_id += 1
            except psycopg2.Error:
                # Unknown outcome (connection lost around the commit): find out, never guess.
                with contextlib.suppress(Exception):
                    conn.close()  # type: ignore[union-attr]
                conn = None
                if self._landed(next_id):
                    self.committed.append(next_id)
                    next_id += 1
                time.sleep(0.2)
                continue
            time.sleep(self.interval)
        if conn is not None:
            conn.close()

    def _landed(self, row_id: int) -> bool:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not self._stop.is_set():
            try:
                with psycopg2.connect(self.dsn, connect_timeout=3) as conn, conn.cursor() as cur:
                    cur.execute("SELECT 1 FROM t WHERE id = %s", (row_id,))
                    found = cur.fetchone() is not None
                conn.close()
                return found
            except psycopg2.Error:
                time.sleep(0.2)
        return False


def setup_table(db: Database) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY, v text)", tables="t")
    db.execute("SELECT pg_create_logical_replication_slot('wal2http', 'pgoutput')")


def http_args(receiver: Receiver, *extra: str) -> tuple[str, ...]:
    return ("--sink", "http", "--http-url", receiver.url, *extra)


def ids(events: list[dict[str, Any]]) -> list[int]:
    return [e["new"]["id"] for e in events if e["op"] == "insert"]


def assert_all_arrived_in_order(events: list[dict[str, Any]], committed: list[int], restarts: int) -> None:
    """Every committed row arrived; order only goes back where a restart resent unconfirmed events."""
    arrived = ids(events)
    missing = sorted(set(committed) - set(arrived))
    assert not missing, f"{len(missing)} committed rows never arrived, e.g. {missing[:10]}"
    positions = [(parse_lsn(e["commit_lsn"]), e["seq"]) for e in events]
    backwards = sum(1 for a, b in itertools.pairwise(positions) if b <= a)
    assert backwards <= restarts, f"order went back {backwards} times with {restarts} restarts"


def status_kb(pid: int, field: str) -> int:
    """A memory figure of /proc/<pid>/status (VmRSS, VmHWM) in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field}")


def rss_kb(pid: int) -> int:
    return status_kb(pid, "VmRSS")


def test_a_failing_writer_fails_the_test_with_its_traceback(db: Database) -> None:
    setup_table(db)
    writer = Writer(db, limit=5)
    writer.interval = "one second"  # type: ignore[assignment]  # time.sleep raises after the first commit
    with pytest.raises(AssertionError, match=r"(?s)writer thread failed after 1 commits.*TypeError"), writer:
        wait_until(lambda: writer.committed, timeout=10, what="the first commit")


def test_kill9_at_random_points_under_load(db: Database, receiver: Receiver, start_wal2http: Start) -> None:
    setup_table(db)
    rng = random.Random(7)
    rounds = 4
    with Writer(db, rate_per_s=300) as writer:
        for _ in range(rounds):
            process = start_wal2http(*http_args(receiver, "--batch-size", str(rng.choice([1, 10, 100]))))
            time.sleep(rng.uniform(0.3, 1.5))
            process.signal(signal.SIGKILL)
            process.wait(10)
        committed = writer.stop()
    final = start_wal2http(*http_args(receiver, "--batch-size", "50"))
    wait_until(lambda: set(committed) <= set(ids(receiver.events())), timeout=60, what="every committed row")
    assert final.stop() == 0
    assert_all_arrived_in_order(receiver.events(), committed, restarts=rounds)


def test_sigterm_under_load_leaves_nothing_to_resend(db: Database, receiver: Receiver,
                                                    start_wal2http: Start) -> None:
    setup_table(db)
    with Writer(db, rate_per_s=300) as writer:
        process = start_wal2http(*http_args(receiver, "--batch-size", "20"))
        receiver.wait_for_events(100, timeout=30)
        process.signal(signal.SIGTERM)
        assert process.wait(30) == 0
        delivered = receiver.events()
        confirmed = db.cluster.confirmed_flush_lsn("wal2http") or 0
        committed = writer.stop()
    # Confirmed exactly through the last delivered commit: past it, not past anything undelivered.
    assert confirmed > parse_lsn(delivered[-1]["commit_lsn"])
    receiver.clear()
    again = start_wal2http(*http_args(receiver, "--batch-size", "20"))
    rest = set(committed) - set(ids(delivered))
    wait_until(lambda: set(ids(receiver.events())) >= rest, timeout=60, what="the rows after the stop")
    assert again.stop() == 0
    assert not set(ids(receiver.events())) & set(ids(delivered)), "a delivered row was sent again"
    assert_all_arrived_in_order(delivered + receiver.events(), committed, restarts=0)


@pytest.mark.parametrize("fault", ["restart-fast", "restart-immediate", "terminate-walsender"])
def test_database_faults_under_load(fault: str, db: Database, receiver: Receiver,
                                    start_wal2http: Start) -> None:
    setup_table(db)
    process = start_wal2http(*http_args(receiver, "--batch-size", "10", "--reconnect-max-wait", "2"))
    with Writer(db, rate_per_s=200) as writer:
        receiver.wait_for_events(50, timeout=30)
        if fault == "terminate-walsender":
            for _ in range(3):
                db.cluster.terminate_walsenders("wal2http")
                time.sleep(0.7)
        else:
            db.cluster.restart(mode=fault.split("-")[1])
        time.sleep(1.5)
        committed = writer.stop()
    wait_until(lambda: set(committed) <= set(ids(receiver.events())), timeout=60, what="every committed row")
    assert process.running, process.stderr
    assert process.stop() == 0
    assert "reconnect" in process.stderr
    assert "Traceback" not in process.stderr
    # A reconnect resends only what was not confirmed; this process skips what it delivered.
    assert_all_arrived_in_order(receiver.events(), committed, restarts=0)
    assert len(ids(receiver.events())) == len(set(ids(receiver.events()))), "a row was delivered twice"


@pytest.fixture
def proxy(db: Database) -> Iterator[TcpProxy]:
    p = TcpProxy(db.cluster.port)
    yield p
    p.close()


@pytest.mark.parametrize("fault", ["cut", "stall"])
def test_network_cut_and_stall(fault: str, db: Database, receiver: Receiver, proxy: TcpProxy,
                               start_wal2http: Start) -> None:
    setup_table(db)
    dsn = f"host=127.0.0.1 port={proxy.port} dbname={db.name} user=postgres"
    process = start_wal2http(*http_args(receiver, "--replication-timeout", "3", "--reconnect-max-wait", "1"),
                             env={"WAL2HTTP_DSN": dsn})
    db.execute("INSERT INTO t SELECT i, 'a' FROM generate_series(1, 50) i")
    receiver.wait_for_events(50)
    assert (proxy.cut() if fault == "cut" else proxy.stall()) >= 1
    db.execute("INSERT INTO t SELECT i, 'b' FROM generate_series(51, 100) i")
    events = receiver.wait_for_events(100, timeout=40)
    assert process.stop() == 0
    assert ids(events) == list(range(1, 101))
    expected = "no word from PostgreSQL" if fault == "stall" else "replication connection lost"
    assert expected in process.stderr and "reconnected" in process.stderr


def test_receiver_failing_longer_than_wal_sender_timeout_with_breaker(
        db: Database, receiver: Receiver, start_wal2http: Start) -> None:
    setup_table(db)
    process = start_wal2http(*http_args(receiver, "--breaker-failures", "3", "--breaker-cooldown", "2"))
    receiver.set_status(503, body=b"maintenance")
    db.execute("INSERT INTO t SELECT i, 'x' FROM generate_series(1, 20) i")
    # Four times the test cluster's wal_sender_timeout (10 s): the stream must outlive it.
    time.sleep(40)
    failed = len(receiver.requests)
    receiver.reset()
    events = receiver.wait_for_events(20, timeout=60)
    assert process.stop() == 0
    assert ids(events) == list(range(1, 21))
    # The open breaker held requests back: far fewer than one per second of outage.
    assert failed < 40
    assert "circuit breaker open" in process.stderr
    assert "delivery recovered" in process.stderr
    assert "replication connection lost" not in process.stderr


def lag_bytes(db: Database) -> int:
    return int(db.execute("SELECT pg_current_wal_insert_lsn() - confirmed_flush_lsn FROM pg_replication_slots")[0][0])


MEMORY_BOUND_KB = 15_000  # what wal2http may hold beyond its baseline, whatever the backlog
ROW_KB = 256


def test_stalled_receiver_backlog_stays_in_the_slot_not_in_memory(db: Database, receiver: Receiver,
                                                                   start_wal2http: Start) -> None:
    setup_table(db)
    # Stored uncompressed, so the WAL (the slot's lag) is as large as the events wal2http would hold.
    db.execute("ALTER TABLE t ALTER COLUMN v SET STORAGE EXTERNAL")
    insert = ("INSERT INTO t SELECT i, (SELECT string_agg(md5(random()::text || i || g), '')"
              f" FROM generate_series(1, {ROW_KB * 1024 // 32}) g) FROM generate_series(%s, %s) i")
    process = start_wal2http(*http_args(receiver))
    assert process.proc is not None
    pid = process.proc.pid
    db.execute(insert, (1, 1))  # warm-up: one event of the size to come
    receiver.wait_for_events(1)
    baseline, baseline_peak = status_kb(pid, "VmRSS"), status_kb(pid, "VmHWM")
    rows = 4 * MEMORY_BOUND_KB // ROW_KB  # four times what wal2http may hold
    receiver.hold()  # the receiver stalls: nothing is delivered, so nothing can be confirmed
    try:
        for first in range(2, rows + 2, 10):
            db.execute(insert, (first, min(first + 9, rows + 1)))
        backlog_kb = lag_bytes(db) // 1024
        held_rss = status_kb(pid, "VmRSS")
    finally:
        receiver.release()
    peak = held_rss
    deadline = time.monotonic() + 120
    while len(receiver.events()) < rows + 1 and process.running and time.monotonic() < deadline:
        peak = max(peak, status_kb(pid, "VmRSS"))
        time.sleep(0.02)
    assert ids(receiver.events()) == list(range(1, rows + 2))
    # Between samples too: how far the peak since start-up rose above the one before the backlog.
    growth = max(peak - baseline, status_kb(pid, "VmHWM") - baseline_peak)
    wait_until(lambda: lag_bytes(db) == 0, timeout=20, what="the slot lag to drain")
    assert process.stop() == 0
    assert backlog_kb > 3 * MEMORY_BOUND_KB  # the slot held the backlog...
    assert growth < MEMORY_BOUND_KB, (  # ...not wal2http's memory
        f"RSS grew {growth} kB over {baseline} kB with a backlog of {backlog_kb} kB")


def test_kill9_inside_a_large_transaction_after_keepalives(db: Database, receiver: Receiver,
                                                           start_wal2http: Start) -> None:
    """The server's keepalives move the confirmed position into a transaction not yet sent.

    That is safe only because PostgreSQL resends every transaction whose commit record starts at
    or after the confirmed position: a crash half-way through delivering it must lose nothing.
    """
    setup_table(db)
    receiver.set_delay(0.005)
    process = start_wal2http(*http_args(receiver))
    before = db.cluster.current_wal_lsn()
    with closing(db.connect()) as conn:
        conn.autocommit = False
        with conn.cursor() as cur:
            cur.execute("INSERT INTO t SELECT i, repeat('x', 500) FROM generate_series(1, 750) i")
            # The transaction is open: wal2http has nothing of it, yet confirms what keepalives report.
            wait_until(lambda: (db.cluster.confirmed_flush_lsn("wal2http") or 0) > before, timeout=30,
                       what="the slot to confirm a position inside the open transaction")
            cur.execute("INSERT INTO t SELECT i, repeat('x', 500) FROM generate_series(751, 1500) i")
        conn.commit()
    events = receiver.wait_for_events(200, timeout=30)
    confirmed = db.cluster.confirmed_flush_lsn("wal2http") or 0
    process.signal(signal.SIGKILL)
    process.wait(10)
    first_change, commit = parse_lsn(events[0]["lsn"]), parse_lsn(events[0]["commit_lsn"])
    assert len(receiver.events()) < 1500, "killed after the transaction was delivered"
    # The transaction's WAL runs from its first change's record to its commit record; a keepalive may
    # report either end's start (both seen in CI under load): still resent, as its commit starts at or
    # after the position.
    assert first_change <= confirmed <= commit, "the confirmed position was not inside the transaction"
    assert db.cluster.confirmed_flush_lsn("wal2http") == confirmed
    receiver.reset()
    again = start_wal2http(*http_args(receiver, "--batch-size", "100"))
    wait_until(lambda: set(range(1, 1501)) <= set(ids(receiver.events())), timeout=60, what="all 1500 rows")
    assert again.stop() == 0


def test_poison_row_halt_dead_letter_and_replay(db: Database, receiver: Receiver, start_wal2http: Start,
                                                 wal2http_bin: str, tmp_path: Path) -> None:
    setup_table(db)
    receiver.reject_when(lambda event: event["new"]["v"] == "poison")
    halted = start_wal2http(*http_args(receiver, "--batch-size", "5"))
    db.execute("INSERT INTO t SELECT i, CASE WHEN i = 7 THEN 'poison' ELSE 'ok' END FROM generate_series(1, 12) i")
    assert halted.wait(30) == 4
    assert "rejected" in halted.stderr and "400" in halted.stderr
    (refused,) = [r.json()[0] for r in receiver.requests if r.status == 400 and len(r.json()) == 1]
    assert refused["new"]["id"] == 7
    # Nothing at or past the poison transaction's commit was confirmed.
    assert (db.cluster.confirmed_flush_lsn("wal2http") or 0) <= parse_lsn(refused["commit_lsn"])
    receiver.clear()

    dead = tmp_path / "dead.jsonl"
    parked = start_wal2http(*http_args(receiver, "--batch-size", "5", "--on-reject", "dead-letter",
                                       "--dead-letter-path", str(dead)))
    db.execute("INSERT INTO t VALUES (13, 'ok')")
    wait_until(lambda: 13 in ids(receiver.events()), timeout=30, what="the row after the poison")
    assert parked.stop() == 0
    assert sorted(ids(receiver.events())) == [i for i in range(1, 14) if i != 7]
    (entry,) = [json.loads(line) for line in dead.read_text().splitlines()]
    assert entry["event"]["new"] == {"id": 7, "v": "poison"} and entry["status"] == 400
    assert "event refused" in entry["response"]

    code, out, err = run_once(wal2http_bin, ["replay", "--dry-run", str(dead)])
    assert code == 0 and "1 events" in out and dead.read_text()
    code, out, err = run_once(wal2http_bin, ["replay", *http_args(receiver), str(dead)])
    assert code == 4 and "replay stopped at line 1" in err and dead.read_text()  # still refused
    receiver.reset()  # the receiver was fixed
    receiver.clear()
    code, out, err = run_once(wal2http_bin, ["replay", *http_args(receiver), str(dead)])
    assert code == 0, err
    assert "replayed 1 of 1" in out
    (event,) = receiver.events()
    assert event["id"] == entry["event"]["id"] and event == entry["event"]
    assert dead.read_text() == ""


def test_two_instances_make_an_active_passive_pair(db: Database, receiver: Receiver,
                                                   start_wal2http: Start) -> None:
    setup_table(db)
    first = start_wal2http(*http_args(receiver))
    second = start_wal2http(*http_args(receiver), wait=False)
    wait_until(lambda: "standing by" in second.stderr, timeout=20, what="the second instance to stand by")
    db.execute("INSERT INTO t SELECT i, 'x' FROM generate_series(1, 20) i")
    receiver.wait_for_events(20)
    first.signal(signal.SIGKILL)
    first.wait(10)
    db.execute("INSERT INTO t SELECT i, 'x' FROM generate_series(21, 40) i")
    wait_until(lambda: set(range(1, 41)) <= set(ids(receiver.events())), timeout=40, what="the takeover")
    assert "taking over" in second.stderr
    assert second.stop() == 0
    assert second.stderr.count("standing by") == 1  # logged once, not per retry
    assert_all_arrived_in_order(receiver.events(), list(range(1, 41)), restarts=1)


def test_twenty_reconnects_leak_nothing(db: Database, receiver: Receiver, start_wal2http: Start) -> None:
    setup_table(db)
    process = start_wal2http(*http_args(receiver, "--reconnect-max-wait", "0.5"))
    assert process.proc is not None
    pid = process.proc.pid

    def connections() -> int:
        return int(db.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'wal2http'")[0][0])

    def fds() -> int:
        return len(list(Path(f"/proc/{pid}/fd").iterdir()))

    db.execute("INSERT INTO t VALUES (0, 'warm-up')")
    receiver.wait_for_events(1)
    start_fds, start_conns, start_rss = fds(), connections(), rss_kb(pid)
    for cycle in range(1, 21):
        wait_until(lambda: db.cluster.terminate_walsenders("wal2http") == 1, timeout=20,
                   what=f"a walsender to terminate (cycle {cycle})")
        db.execute("INSERT INTO t VALUES (%s, 'x')", (cycle,))
        receiver.wait_for_events(cycle + 1, timeout=30)
    assert ids(receiver.events()) == list(range(0, 21))
    assert fds() == start_fds
    assert connections() == start_conns == 1
    assert rss_kb(pid) - start_rss < 5_000
    assert process.stop() == 0


def test_slot_dropped_under_a_running_instance(db: Database, receiver: Receiver,
                                               start_wal2http: Start) -> None:
    setup_table(db)
    process = start_wal2http(*http_args(receiver, "--create-slot", "--reconnect-max-wait", "5"))

    def dropped() -> bool:
        db.cluster.terminate_walsenders("wal2http")
        try:
            db.execute("SELECT pg_drop_replication_slot('wal2http')")
        except psycopg2.errors.ObjectInUse:
            return False
        return True

    wait_until(dropped, timeout=20, what="the slot to be dropped")
    assert process.wait(60) == 3
    assert "does not exist while wal2http was streaming" in process.stderr
    assert "slot create" in process.stderr
    assert db.execute("SELECT count(*) FROM pg_replication_slots")[0][0] == 0  # not recreated


def test_oversized_event_goes_to_the_reject_policy(db: Database, receiver: Receiver, start_wal2http: Start,
                                                    tmp_path: Path) -> None:
    setup_table(db)
    dead = tmp_path / "dead.jsonl"
    process = start_wal2http(*http_args(receiver, "--max-event-bytes", "2048", "--on-reject", "dead-letter",
                                        "--dead-letter-path", str(dead)))
    db.execute("INSERT INTO t VALUES (1, 'small'), (2, repeat('y', 5000)), (3, 'small')")
    wait_until(lambda: ids(receiver.events()) == [1, 3], timeout=30, what="the small rows")
    assert process.stop() == 0
    (entry,) = [json.loads(line) for line in dead.read_text().splitlines()]
    assert entry["event"]["new"]["id"] == 2 and "--max-event-bytes" in entry["reason"]


def test_shutdown_finishes_the_open_transaction(db: Database, receiver: Receiver, start_wal2http: Start,
                                                wal2http_bin: str) -> None:
    setup_table(db)
    receiver.set_delay(0.001)
    process = start_wal2http(*http_args(receiver, "--batch-size", "50"))
    db.execute("INSERT INTO t SELECT i, 'x' FROM generate_series(1, 10000) i")
    receiver.wait_for_events(200, timeout=30)
    process.signal(signal.SIGTERM)
    assert process.wait(60) == 0
    assert ids(receiver.events()) == list(range(1, 10001))


def test_second_signal_exits_130_at_once(db: Database, start_wal2http: Start) -> None:
    setup_table(db)
    with RogueReceiver() as rogue:
        # A request in flight is what a first stop waits for (a stop between retries is at once).
        rogue.misbehave("hang")
        process = start_wal2http("--create-slot", "--sink", "http", "--http-url", rogue.url)
        db.execute("INSERT INTO t VALUES (1, 'x')")
        rogue.wait_for_spoiled(1)
        process.signal(signal.SIGTERM)
        # SIGINT only once the first signal was taken: before, it would be the first one itself.
        wait_until(lambda: "SIGTERM received: stopping" in process.stderr, timeout=10, what="the stopping state")
        process.signal(signal.SIGINT)
        assert process.wait(10) == 130
        assert "second SIGINT" in process.stderr
        assert "stopped:" in process.stderr.strip().splitlines()[-2]  # the summary, then the exit reason
        again = start_wal2http("--sink", "http", "--http-url", rogue.url)
        (event,) = rogue.wait_for_events(1)
        assert event["new"]["id"] == 1  # nothing lost
        assert again.stop() == 0


def test_slot_invalidated_under_a_running_instance(db: Database, receiver: Receiver,
                                                  start_wal2http: Start) -> None:
    """A slot that retained more than max_slot_wal_keep_size is lost for good: exit 3, no endless retry."""
    setup_table(db)
    process = start_wal2http(*http_args(receiver, "--reconnect-max-wait", "1"))
    receiver.down()  # nothing is confirmed, so the slot keeps retaining WAL
    db.execute("INSERT INTO t VALUES (1, 'x')")
    db.cluster.execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
    db.cluster.execute("SELECT pg_reload_conf()")
    try:
        def invalidated() -> bool:
            db.execute("CREATE TABLE IF NOT EXISTS filler (v text)")
            db.execute("INSERT INTO filler SELECT repeat('w', 1000) FROM generate_series(1, 2000)")
            db.execute("SELECT pg_switch_wal()")
            db.execute("CHECKPOINT")
            return db.execute("SELECT wal_status FROM pg_replication_slots")[0][0] == "lost"

        wait_until(invalidated, timeout=60, interval=0.5, what="the slot to be invalidated")
        assert process.wait(60) == 3
    finally:
        db.cluster.execute("ALTER SYSTEM RESET max_slot_wal_keep_size")
        db.cluster.execute("SELECT pg_reload_conf()")
    assert "cannot be used" in process.stderr and "max_slot_wal_keep_size" in process.stderr
    assert "Traceback" not in process.stderr
