"""Receivers that misbehave: every answer costs bounded memory and time, a stop works mid-request, rows all arrive."""

from __future__ import annotations

import functools
import json
import signal
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import wait_until
from tests.support.certs import CertificateAuthority
from tests.support.events import assert_confirmed_past, assert_in_commit_order
from tests.support.nginx import Nginx, nginx_binary
from tests.support.pgcluster import Database
from tests.support.process import Start, Wal2http, run_once
from tests.support.receiver import Receiver
from tests.support.replication import publish
from tests.support.rogue import RogueReceiver, RssWatch, stream_through
from wal2http.lsn import parse_lsn

# wal2http streaming with a few batches in flight stays near 40 MiB; an answer read whole would not.
RSS_LIMIT_MIB = 120
HTTP_TIMEOUT_S = 2.0
ROWS = 20


@pytest.fixture
def rogue() -> Iterator[RogueReceiver]:
    with RogueReceiver() as running:
        yield running


def http_args(rogue: RogueReceiver, *extra: str) -> tuple[str, ...]:
    return ("--create-slot", "--sink", "http", "--http-url", rogue.url, "--http-timeout", str(HTTP_TIMEOUT_S),
            "--batch-size", "5", *extra)


def start(start_wal2http: Start, rogue: RogueReceiver, *extra: str) -> Wal2http:
    return start_wal2http(*http_args(rogue, *extra))


def insert_rows(db: Database, n: int = ROWS) -> None:
    db.execute("INSERT INTO t SELECT i, 'x' FROM generate_series(1, %s) i", (n,))


def assert_all_rows(events: list[dict[str, object]], n: int = ROWS) -> None:
    assert sorted({e["new"]["id"] for e in events}) == list(range(1, n + 1))  # type: ignore[index]
    assert_in_commit_order(events)


def first_commit_lsn(rogue: RogueReceiver) -> int:
    """The commit LSN of the first event sent: confirming its transaction means confirming past it."""
    value = json.loads(rogue.bodies[0])
    return parse_lsn((value[0] if isinstance(value, list) else value)["commit_lsn"])


def assert_clean_log(wal2http: Wal2http) -> None:
    assert "Traceback" not in wal2http.stderr
    assert "unexpected error" not in wal2http.stderr


@pytest.mark.parametrize("how", ["endless-body", "endless-chunks"])
def test_an_endless_answer_body_is_not_read(db: Database, rogue: RogueReceiver, start_wal2http: Start,
                                            how: str) -> None:
    run = stream_through(db, rogue, start_wal2http, http_args(rogue), how, times=3)
    wal2http, events, took = run.wal2http, run.events, run.took
    assert wal2http.stop() == 0
    assert rogue.spoiled == 3
    assert run.peak_mib < RSS_LIMIT_MIB, f"RSS reached {run.peak_mib:.0f} MiB"
    assert took < 10, f"{took:.1f} s"  # no answer is read to its end
    assert_all_rows(events)
    assert len(events) == ROWS  # 200 means accepted: the spoiled requests' events are not sent again
    assert_confirmed_past(db, events)
    assert_clean_log(wal2http)


@pytest.mark.parametrize("how", ["trickle-status", "trickle-headers", "trickle-body", "hang"])
def test_a_trickled_answer_ends_at_the_http_timeout(db: Database, rogue: RogueReceiver, start_wal2http: Start,
                                                    how: str) -> None:
    run = stream_through(db, rogue, start_wal2http, http_args(rogue), how, times=2)
    wal2http, events, took = run.wal2http, run.events, run.took
    assert wal2http.stop() == 0
    assert_all_rows(events)
    assert len(events) == ROWS  # the spoiled requests were not counted as delivered: sent again, once
    # Two attempts cut at 2 s each, plus the backoff between attempts (under 1 s each).
    assert 2 * HTTP_TIMEOUT_S <= took < 2 * HTTP_TIMEOUT_S + 5, f"{took:.1f} s"
    assert run.peak_mib < RSS_LIMIT_MIB
    assert "receiver did not answer within 2 s (--http-timeout)" in wal2http.stderr
    assert_confirmed_past(db, events)
    assert_clean_log(wal2http)


@pytest.mark.parametrize("how, says", [
    ("interim", "receiver answered 102 Processing, an interim answer, and no final one"),
    ("continue-forever", "receiver did not answer within 2 s"),
    ("garbage", "the receiver answered something that is not HTTP/1.1"),
    ("bad-status", "the receiver answered something that is not HTTP/1.1"),
    ("close-mid-answer", "the connection to the receiver broke mid-answer"),
])
def test_a_broken_answer_is_a_transient_error(db: Database, rogue: RogueReceiver, start_wal2http: Start,
                                              how: str, says: str) -> None:
    run = stream_through(db, rogue, start_wal2http, http_args(rogue), how, times=2)
    wal2http, events, took = run.wal2http, run.events, run.took
    assert wal2http.stop() == 0
    assert_all_rows(events)
    assert len(events) == ROWS
    assert took < 2 * HTTP_TIMEOUT_S + 5, f"{took:.1f} s"
    assert run.peak_mib < RSS_LIMIT_MIB
    assert says in wal2http.stderr
    assert "retrying until it succeeds" in wal2http.stderr
    assert_confirmed_past(db, events)
    assert_clean_log(wal2http)


def test_a_keep_alive_connection_closed_on_reuse_is_retried_at_once(db: Database, rogue: RogueReceiver,
                                                                   start_wal2http: Start) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY, v text)", tables="t")
    wal2http = start(start_wal2http, rogue, "--batch-size", "1")
    assert wal2http.proc is not None
    watch = RssWatch(wal2http.proc.pid)
    rogue.misbehave("close-on-reuse", times=3)
    started = time.monotonic()
    for i in range(1, 11):
        db.execute("INSERT INTO t VALUES (%s, 'x')", (i,))
    events = rogue.wait_for_events(10, timeout=30)
    took = time.monotonic() - started
    assert wal2http.stop() == 0
    assert_all_rows(events, 10)
    assert rogue.spoiled == 3
    assert took < 5, f"{took:.1f} s"
    assert watch.stop() < RSS_LIMIT_MIB
    # A fresh connection at once, inside the attempt: no failed delivery to report.
    assert "retrying" not in wal2http.stderr
    assert_clean_log(wal2http)


def test_sigterm_during_a_hung_request_stops_within_the_shutdown_timeout(
        db: Database, rogue: RogueReceiver, start_wal2http: Start) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY, v text)", tables="t")
    rogue.misbehave("hang", times=1000)
    wal2http = start(start_wal2http, rogue, "--http-timeout", "60", "--shutdown-timeout", "3")
    db.execute("INSERT INTO t VALUES (1, 'x')")
    assert wal2http.proc is not None
    watch = RssWatch(wal2http.proc.pid)
    rogue.wait_for_spoiled(1, timeout=20)
    time.sleep(0.5)
    started = time.monotonic()
    wal2http.signal(signal.SIGTERM)
    assert wal2http.wait(20) == 0
    took = time.monotonic() - started
    assert watch.stop() < RSS_LIMIT_MIB
    assert 2.5 < took < 5, f"{took:.1f} s"  # the request was cut at --shutdown-timeout
    # Nothing unconfirmed was confirmed.
    assert (db.cluster.confirmed_flush_lsn("wal2http") or 0) <= first_commit_lsn(rogue)
    assert "stopped before the pending changes could be delivered" in wal2http.stderr
    assert_clean_log(wal2http)
    # The next run delivers the row.
    rogue.behave()
    again = start(start_wal2http, rogue)
    events = rogue.wait_for_events(1, timeout=30)
    assert again.stop() == 0
    assert [e["new"]["id"] for e in events] == [1]


def test_a_second_signal_during_a_hung_request_exits_130_at_once(db: Database, rogue: RogueReceiver,
                                                                 start_wal2http: Start) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY, v text)", tables="t")
    rogue.misbehave("hang", times=1000)
    wal2http = start(start_wal2http, rogue, "--http-timeout", "60", "--shutdown-timeout", "60")
    db.execute("INSERT INTO t VALUES (1, 'x')")
    assert wal2http.proc is not None
    watch = RssWatch(wal2http.proc.pid)
    rogue.wait_for_spoiled(1, timeout=20)
    wal2http.signal(signal.SIGTERM)
    # Signals sent before the process handled the first are one signal (POSIX): wait for it to be seen.
    wait_until(lambda: "SIGTERM received: stopping" in wal2http.stderr, timeout=10, what="the first SIGTERM seen")
    started = time.monotonic()
    wal2http.signal(signal.SIGTERM)
    assert wal2http.wait(20) == 130
    assert time.monotonic() - started < 1.5
    assert watch.stop() < RSS_LIMIT_MIB
    assert "second SIGTERM: stopping now" in wal2http.stderr
    assert (db.cluster.confirmed_flush_lsn("wal2http") or 0) <= first_commit_lsn(rogue)
    assert_clean_log(wal2http)


def test_a_long_stuck_receiver_keeps_the_stream(db: Database, rogue: RogueReceiver, start_wal2http: Start) -> None:
    """Hung requests past wal_sender_timeout (10 s here): each is cut, PostgreSQL hears from us between."""
    publish(db, "CREATE TABLE t (id int PRIMARY KEY, v text)", tables="t")
    rogue.misbehave("hang", times=1000)
    log_start = db.cluster.log_size()  # other tests of this worker's server end walsenders on purpose
    wal2http = start(start_wal2http, rogue, "--http-timeout", "4")
    assert wal2http.proc is not None
    watch = RssWatch(wal2http.proc.pid)
    insert_rows(db)
    time.sleep(14)
    assert wal2http.running
    rogue.behave()
    events = rogue.wait_for_events(ROWS, timeout=30)
    assert wal2http.stop() == 0
    assert_all_rows(events)
    assert "connection lost" not in wal2http.stderr
    assert watch.stop() < RSS_LIMIT_MIB
    assert "terminating walsender process due to replication timeout" not in db.cluster.log_since(log_start)


@pytest.fixture
def nginx(receiver: Receiver) -> Iterator[Nginx]:
    binary = nginx_binary()
    if binary is None:
        pytest.fail("nginx is not installed: run `make nginx` (or apt-get install nginx)", pytrace=False)
    proxy = Nginx(binary, receiver.port, max_body="16k", keepalive="1s")
    yield proxy
    proxy.stop()


def test_behind_nginx_with_a_body_limit_and_an_upstream_outage(db: Database, receiver: Receiver, nginx: Nginx,
                                                               start_wal2http: Start) -> None:
    """413 halves the batch (not one event per request), keep-alive closes and 502s are retried."""
    publish(db, "CREATE TABLE t (id int PRIMARY KEY, v text)", tables="t")
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", nginx.url, "--batch-size", "100",
                              "--http-timeout", "5")
    assert wal2http.proc is not None
    watch = RssWatch(wal2http.proc.pid)
    started = time.monotonic()
    rounds, per_round = 4, 500
    for r in range(rounds):
        if r == 2:
            receiver.down()  # nginx answers 502 meanwhile
        db.execute("INSERT INTO t SELECT i, repeat('x', 200) FROM generate_series(%s, %s) i",
                   (r * per_round + 1, (r + 1) * per_round))
        time.sleep(1.5)  # past nginx's keepalive_timeout: the next request finds the connection closed
        if r == 2:
            receiver.up()
    events = receiver.wait_for_events(rounds * per_round, timeout=60)
    assert time.monotonic() - started < 30
    assert watch.stop() < RSS_LIMIT_MIB
    assert wal2http.stop() == 0
    assert [e["new"]["id"] for e in events] == list(range(1, rounds * per_round + 1))  # in order, once
    assert_in_commit_order(events)
    statuses = nginx.statuses()
    assert 413 in statuses and 502 in statuses, statuses
    assert len(statuses) < len(events) / 10, f"{len(statuses)} requests for {len(events)} events"
    assert statuses.count(413) < 10, statuses
    assert wal2http.stderr.count("receiver answered 413 (payload too large)") == statuses.count(413)
    assert "rejected" not in wal2http.stderr
    assert_confirmed_past(db, events)
    assert_clean_log(wal2http)


@pytest.fixture
def tls_rogue(tmp_path: Path) -> Iterator[tuple[RogueReceiver, CertificateAuthority]]:
    ca = CertificateAuthority(tmp_path / "ca")
    server = ca.issue("receiver", server=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(server.cert), str(server.key))
    with RogueReceiver(ssl_context=context) as running:
        yield running, ca


def test_a_stalled_tls_handshake_ends_at_the_http_timeout(db: Database, tls_rogue: tuple[RogueReceiver,
                                                          CertificateAuthority], start_wal2http: Start) -> None:
    rogue, ca = tls_rogue
    run = stream_through(db, rogue, start_wal2http, http_args(rogue, "--ca-file", str(ca.cert)), "stall-tls",
                         times=2)
    wal2http, events, took = run.wal2http, run.events, run.took
    assert wal2http.stop() == 0
    assert_all_rows(events)
    assert 2 * HTTP_TIMEOUT_S <= took < 2 * HTTP_TIMEOUT_S + 5, f"{took:.1f} s"
    assert run.peak_mib < RSS_LIMIT_MIB
    assert "receiver did not answer within 2 s (--http-timeout)" in wal2http.stderr
    assert_clean_log(wal2http)


def test_check_config_probe_of_a_stalled_tls_handshake_ends_at_the_http_timeout(
        db: Database, tls_rogue: tuple[RogueReceiver, CertificateAuthority], wal2http_bin: str) -> None:
    rogue, _ca = tls_rogue
    publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    db.execute("SELECT pg_create_logical_replication_slot('wal2http', 'pgoutput')")
    rogue.misbehave("stall-tls", times=10)
    started = time.monotonic()
    code, out, _err = run_once(wal2http_bin, ["check-config", "--sink", "http", "--http-url", rogue.url,
                                              "--http-timeout", "2"], {"WAL2HTTP_DSN": db.dsn}, timeout=30)
    assert time.monotonic() - started < 8
    assert code == 2
    assert f"no connection to 127.0.0.1:{rogue.port} within 2 s (--http-timeout)" in out


def test_the_hook0_api_gets_the_same_deadline(db: Database, rogue: RogueReceiver, start_wal2http: Start) -> None:
    api = rogue.url.rsplit("/", 1)[0] + "/api/v1"
    args = ("--create-slot", "--sink", "hook0", "--hook0-api-url", api,
            "--hook0-application-id", "4f2b5e0c-93a1-4c3e-9f3b-0b6f3f1d2a77", "--hook0-mode", "changes",
            "--http-timeout", str(HTTP_TIMEOUT_S))
    run = stream_through(db, rogue, functools.partial(start_wal2http, env={"HOOK0_API_TOKEN": "t0ken"}), args,
                         "trickle-body", times=2, rows=5)
    wal2http, posted, took = run.wal2http, run.events, run.took
    assert wal2http.stop() == 0
    assert run.peak_mib < RSS_LIMIT_MIB
    assert len(posted) == 5 and len({p["event_id"] for p in posted}) == 5
    assert 2 * HTTP_TIMEOUT_S <= took < 2 * HTTP_TIMEOUT_S + 5, f"{took:.1f} s"
    assert "Hook0 API did not answer within 2 s (--http-timeout)" in wal2http.stderr
    assert_clean_log(wal2http)
