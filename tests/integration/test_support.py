"""The test support works: a real logical-replication PostgreSQL and a real, programmable webhook receiver."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
import requests

from tests.support import wait_until
from tests.support.fake_hook0 import FakeHook0
from tests.support.pgcluster import Database, PgCluster
from tests.support.receiver import Receiver

ROOT = Path(__file__).resolve().parents[2]


def start_consumer(pg: PgCluster, database: Database, slot: str) -> subprocess.Popen[bytes]:
    """Stream the slot with pg_recvlogical (a real walsender client) until it is killed or cut off."""
    database.execute("CREATE PUBLICATION support_pub FOR ALL TABLES")
    database.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    consumer = subprocess.Popen(
        [str(pg.client_program("pg_recvlogical")), "--dbname", database.dsn, "--slot", slot, "--start", "--no-loop",
         "-o", "proto_version=1", "-o", "publication_names=support_pub", "--file", "/dev/null"],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    wait_until(
        lambda: (
            pg.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)) == [(True,)]
        ),
        timeout=10,
        what=f"slot {slot} to become active",
    )
    return consumer


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


def test_cluster_runs_with_logical_wal_and_the_suite_settings(pg: PgCluster) -> None:
    assert pg.execute("SHOW wal_level") == [("logical",)]
    assert pg.execute("SHOW wal_sender_timeout") == [("10s",)]
    assert pg.dsn() == f"host=127.0.0.1 port={pg.port} dbname=postgres user=postgres"
    assert pg.url("shop") == f"postgresql://postgres@127.0.0.1:{pg.port}/shop"
    with closing(pg.connect()) as conn:
        assert conn.autocommit


def test_cluster_reports_the_version_its_binaries_say(pg: PgCluster) -> None:
    assert 14 <= pg.major <= 18
    assert pg.version // 10000 == pg.major
    assert f"(PostgreSQL) {pg.major}." in pg.binaries_version()
    assert pg.client_program("pg_recvlogical").is_file()


def test_db_is_a_fresh_database_reachable_by_its_dsn(db: Database, pg: PgCluster) -> None:
    assert db.execute("SELECT current_database()") == [(db.name,)]
    assert db.execute("CREATE TABLE orders (id int PRIMARY KEY)") == []
    db.execute("INSERT INTO orders VALUES (%s), (%s)", (1, 2))
    assert pg.execute("SELECT count(*) FROM orders", dbname=db.name) == [(2,)]
    assert f"dbname={db.name} " in db.dsn + " "


def test_logical_slot_reports_its_confirmed_flush_lsn(db: Database, pg: PgCluster) -> None:
    db.execute("SELECT pg_create_logical_replication_slot('support_slot', 'pgoutput')")
    confirmed = pg.confirmed_flush_lsn("support_slot")
    assert confirmed is not None and 0 < confirmed <= pg.current_wal_lsn()
    assert pg.confirmed_flush_lsn("no_such_slot") is None


def test_terminate_walsenders_frees_the_slot(db: Database, pg: PgCluster) -> None:
    consumer = start_consumer(pg, db, "support_term")
    try:
        assert pg.terminate_walsenders("support_term") == 1
        assert pg.execute("SELECT active FROM pg_replication_slots WHERE slot_name = 'support_term'") == [
            (False,)
        ]
        assert consumer.wait(timeout=10) != 0
    finally:
        consumer.kill()
        consumer.wait()


def test_drop_database_drops_its_slots_even_while_streaming(pg: PgCluster) -> None:
    database = pg.create_database("support_drop_streaming")
    consumer = start_consumer(pg, database, "support_drop")
    try:
        database.drop()
        assert pg.execute("SELECT slot_name FROM pg_replication_slots WHERE slot_name = 'support_drop'") == []
        assert pg.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database.name,)) == []
    finally:
        consumer.kill()
        consumer.wait()


def test_restart_keeps_port_and_data(db: Database, pg: PgCluster) -> None:
    port = pg.port
    db.execute("CREATE TABLE kept AS SELECT 1 AS one")
    pg.restart()
    assert pg.port == port
    assert db.execute("SELECT one FROM kept") == [(1,)]


def test_missing_postgresql_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"apt-get install postgresql-15"):
        PgCluster(bindir=tmp_path)


def test_wait_until_returns_the_value_or_names_what_it_waited_for() -> None:
    assert wait_until(lambda: 42, timeout=0.1) == 42
    with pytest.raises(TimeoutError, match="the moon"):
        wait_until(lambda: False, timeout=0.1, what="the moon")


def test_receiver_records_posts_and_answers_200(receiver: Receiver, session: requests.Session) -> None:
    first, second, third = ({"id": f"e{i}", "op": "insert"} for i in range(3))
    response = session.post(receiver.url, json=first, headers={"Webhook-Id": "e0"})
    assert response.status_code == 200
    assert response.raw.version == 11 and response.headers.get("Connection") != "close"
    assert session.post(receiver.url, json=[second, third]).status_code == 200

    recorded = receiver.requests
    assert [(r.method, r.path, r.status) for r in recorded] == [("POST", "/hook", 200)] * 2
    assert recorded[0].headers["webhook-id"] == "e0"
    assert recorded[0].headers["content-type"] == "application/json"
    assert json.loads(recorded[0].body) == first
    assert receiver.events() == [first, second, third]
    assert receiver.wait_for_events(3, timeout=1) == [first, second, third]


def test_receiver_rejects_a_body_that_is_not_events(receiver: Receiver, session: requests.Session) -> None:
    assert session.post(receiver.url, data=b"not json").status_code == 400
    assert [r.status for r in receiver.requests] == [400]
    assert receiver.events() == []


def test_fail_next_fails_exactly_that_many_requests(receiver: Receiver, session: requests.Session) -> None:
    receiver.fail_next(2, status=503, headers={"Retry-After": "1"})
    answers = [session.post(receiver.url, json={"id": str(i)}) for i in range(3)]
    assert [a.status_code for a in answers] == [503, 503, 200]
    assert answers[0].headers["Retry-After"] == "1"
    assert [r.status for r in receiver.requests] == [503, 503, 200]
    assert receiver.events() == [{"id": "2"}]


def test_set_status_holds_until_reset(receiver: Receiver, session: requests.Session) -> None:
    receiver.set_status(500)
    assert [session.post(receiver.url, json={}).status_code for _ in range(2)] == [500, 500]
    receiver.reset()
    assert session.post(receiver.url, json={"id": "ok"}).status_code == 200
    assert receiver.events() == [{"id": "ok"}]


def test_delay_makes_a_client_time_out(receiver: Receiver, session: requests.Session) -> None:
    receiver.set_delay(1.0)
    with pytest.raises(requests.Timeout):
        session.post(receiver.url, json={"id": "slow"}, timeout=0.2)


def test_hold_keeps_requests_waiting_until_release(receiver: Receiver, session: requests.Session) -> None:
    receiver.hold()
    with pytest.raises(requests.Timeout):
        session.post(receiver.url, json={"id": "held"}, timeout=0.5)
    assert receiver.requests == []  # not answered, not recorded
    receiver.release()
    assert session.post(receiver.url, json={"id": "after"}, timeout=5).status_code == 200
    receiver.wait_for_events(2)  # the held one was answered too (to a client that gave up)


def test_down_refuses_connections_until_up_on_the_same_port(
    receiver: Receiver, session: requests.Session
) -> None:
    url = receiver.url
    assert session.post(url, json={"id": "before"}).status_code == 200
    receiver.down()
    with pytest.raises(requests.ConnectionError):
        session.post(url, json={"id": "while down"}, timeout=5)
    receiver.up()
    assert receiver.url == url
    assert session.post(url, json={"id": "after"}).status_code == 200
    assert receiver.events() == [{"id": "before"}, {"id": "after"}]


def test_wait_for_events_says_how_many_arrived(receiver: Receiver, session: requests.Session) -> None:
    session.post(receiver.url, json=[{"id": "a"}, {"id": "b"}])
    with pytest.raises(TimeoutError, match="got 2 events in 1 requests"):
        receiver.wait_for_events(3, timeout=0.1)


def test_an_error_in_the_receiver_fails_the_test_with_its_traceback(session: requests.Session) -> None:
    receiver = Receiver()
    with pytest.raises(AssertionError, match=r"(?s)receiver failed 1 time.*KeyError: 'new'"), receiver:
        receiver.reject_when(lambda event: event["new"]["v"] == "poison")  # a predicate with a bug
        with pytest.raises(requests.ConnectionError):  # what wal2http would see, and retry
            session.post(receiver.url, json={"id": "a", "op": "delete"}, timeout=5)
        started = time.monotonic()
        with pytest.raises(AssertionError, match="KeyError"):
            receiver.wait_for_events(1, timeout=30)  # at once, not after 30 s
        assert time.monotonic() - started < 5
        with pytest.raises(AssertionError, match="KeyError"):
            receiver.events()
    # A client hanging up is no error.
    with Receiver() as quiet, socket.create_connection(("127.0.0.1", quiet.port)) as client:
        client.sendall(b"POST /hook HTTP/1.1\r\nContent-Length: 10\r\n\r\n{")
    assert quiet.errors == []


def test_an_error_in_the_fake_hook0_fails_the_test_with_its_traceback(session: requests.Session) -> None:
    fake = FakeHook0()
    with pytest.raises(AssertionError, match=r"(?s)fake Hook0 failed 1 time.*AttributeError"), fake:
        fake._event_types = None  # type: ignore[assignment]  # a bug in the fake
        headers = {"Authorization": f"Bearer {fake.token}"}
        with pytest.raises(requests.ConnectionError):
            session.get(f"{fake.url}/event_types", params={"application_id": fake.application_id},
                        headers=headers, timeout=5)
        started = time.monotonic()
        with pytest.raises(AssertionError, match="AttributeError"):
            fake.wait_for_events(1, timeout=30)  # at once, not after 30 s
        assert time.monotonic() - started < 5


SIGNAL_TO_ANOTHER_THREAD = """
import signal, threading, time
from tests.support import wait_for_signal

def server():
    time.sleep(0.3)
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # the kernel may pick any thread
    time.sleep(30)

threading.Thread(target=server, daemon=True).start()
try:
    wait_for_signal()
except KeyboardInterrupt:
    print("interrupted")
"""


def test_wait_for_signal_wakes_when_another_thread_got_the_signal() -> None:
    # threading.Event().wait() here slept on: the scripts below then ignored a Ctrl-C now and then.
    done = subprocess.run([sys.executable, "-c", SIGNAL_TO_ANOTHER_THREAD], cwd=ROOT, capture_output=True,
                          text=True, timeout=20, check=False)
    assert done.stdout == "interrupted\n", done.stderr


def test_receiver_script_prints_its_url_then_each_event() -> None:
    script = subprocess.Popen(
        [sys.executable, "-m", "tests.support.receiver", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert script.stdout is not None
        url = script.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/hook")
        requests.post(url, json=[{"id": "a", "op": "insert"}, {"id": "b", "op": "delete"}], timeout=5)
        assert [json.loads(script.stdout.readline()) for _ in range(2)] == [
            {"id": "a", "op": "insert"},
            {"id": "b", "op": "delete"},
        ]
        script.send_signal(signal.SIGINT)
        assert script.wait(timeout=10) == 0
    finally:
        script.kill()
        script.wait()
