"""Metrics, health endpoints, structured logs and notifications of a real run, as an operator sees them."""

from __future__ import annotations

import itertools
import json
import re
import signal
import socket
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import free_port, wait_until
from tests.support.admin import Admin, Samples, admin_args
from tests.support.mailbox import Mailbox, SilentServer
from tests.support.pgcluster import Database
from tests.support.process import Start
from tests.support.receiver import Receiver
from tests.support.replication import publish
from tests.support.tcpproxy import TcpProxy

LISTED = [
    "wal2http_events_total", "wal2http_events_delivered_total", "wal2http_deliveries_total",
    "wal2http_delivery_duration_seconds_bucket", "wal2http_delivery_duration_seconds_count",
    "wal2http_batch_events_bucket", "wal2http_commit_to_delivery_seconds_bucket", "wal2http_received_lsn",
    "wal2http_confirmed_lsn", "wal2http_slot_lag_bytes", "wal2http_slot_retained_bytes",
    "wal2http_replication_connected", "wal2http_reconnects_total", "wal2http_breaker_state",
    "wal2http_dead_letters_total", "wal2http_duplicates_skipped_total", "wal2http_errors_total",
    "wal2http_build_info", "process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
]

def http_args(receiver: Receiver, *extra: str) -> tuple[str, ...]:
    return ("--create-slot", "--sink", "http", "--http-url", receiver.url, *extra)


def setup_table(db: Database) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY, v text)", tables="t")


def test_metrics_count_exactly_what_the_receiver_got(db: Database, receiver: Receiver,
                                                    start_wal2http: Start) -> None:
    setup_table(db)
    port = free_port()
    process = start_wal2http(*http_args(receiver, "--batch-size", "10"), *admin_args(port))
    admin = Admin(port)
    receiver.fail_next(3, status=503)
    db.execute("INSERT INTO t SELECT i, 'a' FROM generate_series(1, 25) i")
    db.execute("INSERT INTO t SELECT i, 'b' FROM generate_series(26, 30) i")
    db.execute("UPDATE t SET v = 'c' WHERE id <= 10")
    db.execute("DELETE FROM t WHERE id > 25")
    events = receiver.wait_for_events(45, timeout=60)

    def drained() -> Samples | None:
        # The receiver records a request before wal2http reads the answer: wait for both sides.
        samples = admin.scrape()
        settled = samples[("wal2http_events_delivered_total", ())] >= 45
        return samples if settled and samples[("wal2http_slot_lag_bytes", ())] == 0 else None

    samples = wait_until(drained, timeout=40, interval=0.5, what="slot lag 0 after draining")
    names = {name for name, _ in samples}
    assert not [name for name in LISTED if name not in names]
    requests_ok = [r for r in receiver.requests if r.ok]
    assert len(receiver.requests) - len(requests_ok) == 3

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("wal2http_events_total", op="insert") == 30
    assert value("wal2http_events_total", op="update") == 10
    assert value("wal2http_events_total", op="delete") == 5
    assert value("wal2http_events_total", op="truncate") == 0
    assert value("wal2http_events_delivered_total") == len(events) == 45
    assert value("wal2http_deliveries_total", outcome="success") == len(requests_ok)
    # The sink's quick retries (2, inside one attempt) absorb two of the three 503s: one failed attempt.
    assert value("wal2http_deliveries_total", outcome="failure") == 1
    assert value("wal2http_errors_total", kind="delivery") == 1
    assert value("wal2http_delivery_duration_seconds_count") == len(requests_ok) + 1
    assert value("wal2http_batch_events_count") == len(requests_ok)
    assert value("wal2http_batch_events_sum") == 45
    assert value("wal2http_commit_to_delivery_seconds_count") == 45
    assert value("wal2http_commit_to_delivery_seconds_bucket", le="+Inf") == 45
    assert value("wal2http_replication_connected") == 1
    assert value("wal2http_breaker_state") == 0
    assert value("wal2http_reconnects_total") == 0
    assert value("wal2http_dead_letters_total") == 0
    assert value("wal2http_build_info", version=value_label(samples, "wal2http_build_info", "version")) == 1
    assert value("wal2http_slot_wal_status", status="reserved") == 1
    assert value("wal2http_slot_retained_bytes") >= 0
    confirmed = value("wal2http_confirmed_lsn")
    assert value("wal2http_received_lsn") >= confirmed > 0
    slot_confirmed = db.cluster.confirmed_flush_lsn("wal2http")
    assert slot_confirmed is not None and slot_confirmed <= confirmed
    assert process.stop() == 0


def value_label(samples: Samples, name: str, label: str) -> str:
    (labels,) = [dict(labels) for n, labels in samples if n == name]
    return labels[label]


@pytest.fixture
def proxy(db: Database) -> Iterator[TcpProxy]:
    p = TcpProxy(db.cluster.port)
    yield p
    p.close()


def test_health_and_readiness(db: Database, receiver: Receiver, start_wal2http: Start, proxy: TcpProxy) -> None:
    setup_table(db)
    port = free_port()
    dsn = f"host=127.0.0.1 port={proxy.port} dbname={db.name} user=postgres"
    process = start_wal2http(
        *http_args(receiver, "--breaker-failures", "2", "--breaker-cooldown", "1", "--http-timeout", "30",
                   "--reconnect-max-wait", "1"),
        *admin_args(port, "--health-stall-seconds", "5"), env={"WAL2HTTP_DSN": dsn})
    admin = Admin(port)

    def status_is(path: str, code: int) -> dict[str, Any] | None:
        got, body = admin.status(path)
        return body if got == code else None

    assert wait_until(lambda: status_is("/readyz", 200))["status"] == "ready"
    assert admin.status("/healthz")[0] == 200

    # Receiver down: the breaker opens, not ready; still alive (waiting on purpose).
    receiver.down()
    db.execute("INSERT INTO t VALUES (1, 'x')")
    body = wait_until(lambda: status_is("/readyz", 503), what="/readyz 503 with the receiver down")
    assert any("circuit breaker" in reason for reason in body["reasons"]), body
    assert admin.value("wal2http_breaker_state") in (1, 2)
    assert admin.status("/healthz")[0] == 200
    receiver.up()
    receiver.wait_for_events(1, timeout=30)
    wait_until(lambda: status_is("/readyz", 200), what="/readyz 200 after the receiver came back")
    assert admin.value("wal2http_breaker_state") == 0

    # PostgreSQL down: not connected, not ready; still alive (reconnecting on purpose).
    proxy.refuse()
    body = wait_until(lambda: status_is("/readyz", 503), what="/readyz 503 with PostgreSQL down")
    assert "not connected to PostgreSQL" in body["reasons"], body
    assert admin.status("/healthz")[0] == 200
    assert admin.value("wal2http_replication_connected") == 0
    proxy.accept()
    wait_until(lambda: status_is("/readyz", 200), timeout=30, what="/readyz 200 after PostgreSQL came back")
    assert admin.value("wal2http_reconnects_total") >= 1
    assert admin.value("wal2http_errors_total", kind="replication") >= 1

    # A request hanging longer than --health-stall-seconds: the main loop is stuck, /healthz says so.
    # (5 s, not less: the loop passes by once a second, and a loaded machine must not look stalled.)
    receiver.hold()
    try:
        db.execute("INSERT INTO t VALUES (2, 'x')")
        body = wait_until(lambda: status_is("/healthz", 503), timeout=25, what="/healthz 503 during a stall")
    finally:
        receiver.release()
    assert body["status"] == "stalled" and "no progress" in body["reason"]
    receiver.wait_for_events(2, timeout=30)
    wait_until(lambda: status_is("/healthz", 200), what="/healthz 200 after the stall")
    assert process.stop() == 0
    assert admin_unreachable(admin)


def admin_unreachable(admin: Admin) -> bool:
    try:
        admin.get("/healthz")
    except requests.ConnectionError:
        return True
    return False


def test_admin_token(db: Database, receiver: Receiver, start_wal2http: Start, tmp_path: Path) -> None:
    setup_table(db)
    port = free_port()
    token = "s3cret-admin-token"
    process = start_wal2http(*http_args(receiver), *admin_args(port), "--log-level", "debug",
                             env={"WAL2HTTP_ADMIN_TOKEN": token})
    for path in ("/metrics", "/healthz", "/readyz", "/nothing"):
        assert Admin(port).get(path).status_code == 401
        assert Admin(port, "wrong").get(path).status_code == 401
    assert Admin(port, token).get("/healthz").status_code == 200
    assert Admin(port, token).get("/nothing").status_code == 404
    assert "wal2http_events_total" in Admin(port, token).get("/metrics").text
    assert process.stop() == 0
    assert token not in process.stderr
    # From a file too; both at once is ambiguous.
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    process = start_wal2http(*http_args(receiver), *admin_args(port), "--admin-token-file", str(token_file))
    assert Admin(port).get("/healthz").status_code == 401
    assert Admin(port, token).get("/healthz").status_code == 200
    assert process.stop() == 0
    both = start_wal2http(*http_args(receiver), *admin_args(port), "--admin-token-file", str(token_file),
                          env={"WAL2HTTP_ADMIN_TOKEN": token}, wait=False)
    assert both.wait(30) == 2
    assert "keep one of them" in both.stderr and token not in both.stderr


def test_metrics_addr_in_use_is_a_configuration_error(db: Database, start_wal2http: Start) -> None:
    setup_table(db)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        process = start_wal2http("--create-slot", "--metrics-addr", str(port), wait=False)
        assert process.wait(30) == 2
    assert f"--metrics-addr 127.0.0.1:{port}: cannot listen" in process.stderr
    assert "Traceback" not in process.stderr


def json_records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_logs_carry_correlation_fields(db: Database, receiver: Receiver, start_wal2http: Start) -> None:
    setup_table(db)
    process = start_wal2http(*http_args(receiver, "--batch-size", "5"), "--log-format", "json",
                             "--log-level", "debug", "--progress-seconds", "1")
    receiver.fail_next(3, status=503)  # one failed attempt: the sink's 2 quick retries fail too
    db.execute("INSERT INTO t SELECT i, 'a' FROM generate_series(1, 3) i")
    receiver.wait_for_events(3)
    db.execute("INSERT INTO t VALUES (4, 'b')")  # alone in its batch: an event_id, not a batch_id
    receiver.wait_for_events(4)
    wait_until(lambda: "progress:" in process.stderr, what="a progress line")
    assert process.stop() == 0
    records = json_records(process.stderr)  # every line parses
    run_ids = {r.get("run_id") for r in records}
    assert len(run_ids) == 1 and re.fullmatch(r"[0-9a-f]{12}", run_ids.pop() or "")
    assert all(r.get("slot") == "wal2http" for r in records)
    by_id: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        key = record.get("event_id") or record.get("batch_id")
        if key:
            by_id.setdefault(key, []).append(record)
    for request in receiver.requests:
        webhook_id = request.headers["webhook-id"]
        assert webhook_id in by_id, f"{webhook_id} appears in no log record"
        statuses = {r.status for r in receiver.requests if r.headers["webhook-id"] == webhook_id}
        for record in by_id[webhook_id]:
            assert record["xid"] == request.json()[0]["xid"]
            assert record["commit_lsn"] == request.json()[0]["commit_lsn"]
            assert isinstance(record["duration_ms"], (int, float)) and record["attempt"] >= 1
            assert record["status"] in statuses
    failed = receiver.requests[0]
    (failure,) = [r for r in by_id[failed.headers["webhook-id"]] if r["status"] == 503]
    assert failure["level"] == "WARNING" and failure["attempt"] == 1
    # Usually the three rows form one batch; under load the first read may hold only part of them.
    assert ("batch_id" in failure) == ("--" in failed.headers["webhook-id"])
    single = [r for r in receiver.requests if "--" not in r.headers["webhook-id"]]
    assert single and "event_id" in by_id[single[0].headers["webhook-id"]][0]
    progress = [r for r in records if r["message"].startswith("progress:")]
    assert progress and {"events_delivered", "events_per_s", "lag_bytes", "state"} <= progress[0].keys()


def test_log_file_rotation_and_reopen(db: Database, receiver: Receiver, start_wal2http: Start,
                                      tmp_path: Path) -> None:
    setup_table(db)
    log = tmp_path / "wal2http.log"
    process = start_wal2http(*http_args(receiver), "--log-file", str(log), "--log-level", "debug",
                             "--log-max-bytes", "4000", "--log-backups", "2", wait=False)
    wait_until(lambda: log.exists() and "streaming from slot" in log.read_text(), what="streaming, in the log file")
    db.execute("INSERT INTO t SELECT i, 'x' FROM generate_series(1, 100) i")
    receiver.wait_for_events(100)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wal2http.log", "wal2http.log.1", "wal2http.log.2"]
    assert all(path.stat().st_size <= 4000 for path in tmp_path.iterdir())
    assert process.stderr == ""
    # logrotate's way: move the file away, then SIGHUP; records go to a new file.
    moved = tmp_path / "moved.log"
    log.rename(moved)
    process.signal(signal.SIGHUP)
    wait_until(lambda: log.exists() and "log file reopened" in log.read_text(), what="the log file reopened")
    db.execute("INSERT INTO t VALUES (1000, 'y')")
    receiver.wait_for_events(101)
    assert process.stop() == 0
    last_id = receiver.requests[-1].headers["webhook-id"]
    assert f"delivered {last_id}" in log.read_text() and last_id not in moved.read_text()
    assert "stopped:" in log.read_text()


def smtp_args(port: int, *extra: str) -> tuple[str, ...]:
    return ("--smtp-host", "127.0.0.1", "--smtp-port", str(port), "--no-smtp-starttls",
            "--smtp-from", "wal2http@example.com", "--smtp-to", "ops@example.com, dba@example.com", *extra)


def test_notification_emails(db: Database, receiver: Receiver, start_wal2http: Start, tmp_path: Path) -> None:
    setup_table(db)
    dead = tmp_path / "dead.jsonl"
    with Mailbox() as mailbox:
        process = start_wal2http(
            *http_args(receiver, "--breaker-failures", "1", "--breaker-cooldown", "0.5",
                       "--on-reject", "dead-letter", "--dead-letter-path", str(dead)),
            *smtp_args(mailbox.port, "--notify-after", "1", "--notify-interval", "3"))
        # Breaker open longer than --notify-after: one email, then one when it recovers.
        receiver.set_status(503)
        db.execute("INSERT INTO t VALUES (1, 'x')")
        (opened,) = mailbox.wait_for(1)
        assert "circuit breaker open" in opened["Subject"]
        assert opened["To"] == "ops@example.com, dba@example.com"
        receiver.reset()
        receiver.wait_for_events(1)
        recovered = mailbox.wait_for(2)[1]
        assert "recovered" in recovered["Subject"]
        # Dead letters: the first at once, the next ones summarised after --notify-interval.
        receiver.reject_when(lambda e: e["new"]["id"] >= 100, status=422)
        db.execute("INSERT INTO t VALUES (100, 'bad')")
        first = mailbox.wait_for(3)[2]
        assert first["Subject"] == "[wal2http] 1 event dead-lettered"
        event_id = json.loads(dead.read_text().splitlines()[0])["event_id"]
        assert event_id in first.get_content() and str(dead) in first.get_content()
        db.execute("INSERT INTO t VALUES (101, 'bad')")
        db.execute("INSERT INTO t VALUES (102, 'bad')")
        db.execute("INSERT INTO t VALUES (2, 'good')")
        receiver.wait_for_events(2)
        # Summarised: whichever intervals the two fall into on a loaded machine, the summaries count
        # both, and no dead-letter mail follows the previous one sooner than --notify-interval (3 s;
        # the 1 s allowed is for the first mail's own delivery).
        summaries = wait_until(lambda: dead_letter_summaries(mailbox, after=3, count=2), timeout=30,
                               what="summaries of the two later dead letters")
        assert summaries is not None  # wait_until returns the predicate's truthy value
        assert "3 in this run" in summaries[-1].get_content()
        times = mailbox.arrival_times[2:3 + len(summaries)]
        assert all(later - earlier >= 2.0 for earlier, later in itertools.pairwise(times)), times
        # A halt: 404 always stops (exit 4), and says so by email.
        receiver.reject_when(None)
        receiver.set_status(404)
        db.execute("INSERT INTO t VALUES (3, 'x')")
        assert process.wait(30) == 4
        sent = 3 + len(summaries)
        halt = mailbox.wait_for(sent + 1)[sent]
        assert "stopped on an error" in halt["Subject"] and "404" in halt.get_content()
        assert "slot wal2http" in halt.get_content()
        assert len(mailbox.messages) == sent + 1


def dead_letter_summaries(mailbox: Mailbox, after: int, count: int) -> list[EmailMessage] | None:
    """The dead-letter mails after the first ``after`` messages once they count ``count`` events, else None."""
    mails = mailbox.messages[after:]
    counted = [re.fullmatch(r"\[wal2http\] (\d+) events? dead-lettered", m["Subject"]) for m in mails]
    assert all(counted), [m["Subject"] for m in mails]  # nothing else is due yet
    total = sum(int(match.group(1)) for match in counted if match)
    assert total <= count, [m["Subject"] for m in mails]
    return mails if total == count else None


def test_a_failing_mail_server_never_holds_up_delivery(db: Database, receiver: Receiver,
                                                       start_wal2http: Start, tmp_path: Path) -> None:
    setup_table(db)
    silent = SilentServer()
    try:
        process = start_wal2http(
            *http_args(receiver, "--on-reject", "dead-letter", "--dead-letter-path", str(tmp_path / "dead")),
            "--smtp-host", "127.0.0.1", "--smtp-port", str(silent.port), "--smtp-from", "w@example.com",
            "--smtp-to", "ops@example.com", "--notify-interval", "0")
        receiver.reject_when(lambda e: e["new"]["id"] < 0, status=422)
        for i in range(1, 4):
            db.execute("INSERT INTO t VALUES (%s, 'bad')", (-i,))
            db.execute("INSERT INTO t VALUES (%s, 'good')", (i,))
        events = receiver.wait_for_events(3, timeout=60)
        assert [e["new"]["id"] for e in events] == [1, 2, 3]
        assert process.stop() == 0
    finally:
        silent.close()
    assert process.stderr.count("cannot send notification email") == 3
    assert "replication connection lost" not in process.stderr


def test_starttls_is_required_by_default(tmp_path: Path) -> None:
    from wal2http.config.sections import NotifyConfig
    from wal2http.observe.notify import Notifier

    with Mailbox() as mailbox:
        config = NotifyConfig(smtp_host="127.0.0.1", smtp_port=mailbox.port, sender="w@example.com",
                              recipients=("ops@example.com",))
        assert not Notifier(config, "test").send("subject", "body")
        plain = NotifyConfig(smtp_host="127.0.0.1", smtp_port=mailbox.port, sender="w@example.com",
                             recipients=("ops@example.com",), starttls=False)
        assert Notifier(plain, "test", ["hunter22"]).send("subject", "the password is hunter22")
        (message,) = mailbox.messages
        assert "the password is ***" in message.get_content()
