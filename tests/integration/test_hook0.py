"""The Hook0 sink end to end: outbox rows, outbox messages and row changes reach a fake Hook0 API once."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import readme, wait_until
from tests.support.clirunner import UNREACHABLE_DSN, invoke
from tests.support.fake_hook0 import OUTBOX_DDL, FakeHook0, hook0_args, token_env
from tests.support.pgcluster import Database
from tests.support.process import Start, run_once
from tests.support.replication import publish
from wal2http.lsn import parse_lsn

# Changes-mode event ids are uuid5(this namespace, "<service>/<change id>") since wal2http 0.1; written out
# here rather than imported, so that a changed derivation (new ids for redelivered changes) fails.
ID_NAMESPACE = uuid.UUID("5a1e2f0c-8d3b-5f4e-9c71-0b6d2a4e8f13")

MARK_DDL = readme.block("hook0-mark").text
CLEANUP = readme.block("hook0-cleanup").text


@pytest.fixture
def hook0() -> Iterator[FakeHook0]:
    with FakeHook0() as fake:
        yield fake


def posted_events(fake: FakeHook0) -> list[dict[str, object]]:
    return [r.json() for r in fake.requests if r.method == "POST" and r.path.startswith("/api/v1/event")
            and "event_types" not in r.path]


def test_outbox_rows_become_hook0_events_and_other_changes_are_ignored(
        db: Database, hook0: FakeHook0, start_wal2http: Start) -> None:
    publish(db, OUTBOX_DDL, "CREATE TABLE orders (id int PRIMARY KEY, total numeric)",
            tables="public.hook0_outbox, orders")
    hook0.add_event_type("billing.invoice.paid")
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    wal2http = start_wal2http(*hook0_args(hook0, "--log-level", "debug"), env=token_env(hook0))
    db.execute(
        "INSERT INTO orders VALUES (1, 10.50);"
        "INSERT INTO hook0_outbox (event_id, event_type, payload, labels, metadata, occurred_at) VALUES"
        " (%s, 'billing.invoice.paid', '{\"order\": 1, \"amount\": 12345678901234567890.5}',"
        "  '{\"tenant\": \"acme\"}', '{\"trace\": \"t-1\"}', '2026-03-01 10:00:00.25+01'),"
        " (%s, 'billing.invoice.paid', '[1, 2]', '{\"tenant\": \"zeta\", \"priority\": 2}', NULL,"
        "  '2026-03-01 11:00:00+00')",
        (first, second),
    )
    db.execute("UPDATE hook0_outbox SET labels = '{\"x\": \"y\"}' WHERE event_id = %s", (first,))
    db.execute("DELETE FROM hook0_outbox WHERE event_id = %s", (second,))
    stored = hook0.wait_for_events(2)
    wait_until(lambda: wal2http.stderr.count("ignoring") >= 3, timeout=20, what="three ignored changes")
    assert wal2http.stop() == 0
    assert [e.raw for e in stored] == [
        {"application_id": hook0.application_id, "event_id": first, "event_type": "billing.invoice.paid",
         "payload": '{"order": 1, "amount": 12345678901234567890.5}',
         "payload_content_type": "application/json", "labels": {"tenant": "acme"},
         "metadata": {"trace": "t-1"}, "occurred_at": "2026-03-01T09:00:00.250000Z"},
        {"application_id": hook0.application_id, "event_id": second, "event_type": "billing.invoice.paid",
         "payload": "[1, 2]", "payload_content_type": "application/json",
         "labels": {"tenant": "zeta", "priority": "2"}, "occurred_at": "2026-03-01T11:00:00.000000Z"},
    ]
    assert len(posted_events(hook0)) == 2  # nothing was sent for the ignored changes
    assert wal2http.stderr.count("ignoring") == 3  # the orders insert, the update, the delete
    assert "2 events ingested, 0 already held (409), 3 changes ignored" in wal2http.stderr
    assert hook0.token not in wal2http.stderr
    assert all(r.headers["authorization"] == f"Bearer {hook0.token}" for r in hook0.requests)


def test_message_outbox_is_transactional(db: Database, hook0: FakeHook0, start_wal2http: Start) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    hook0.add_event_type("billing.invoice.paid")
    explicit = str(uuid.uuid4())
    message = ('{"event_id": "%s", "event_type": "billing.invoice.paid", "payload": {"amount": 1.10},'
               ' "labels": {"tenant": "acme"}, "occurred_at": "2026-03-01T10:00:00Z"}')
    without_id = {"event_type": "billing.invoice.paid", "payload": "plain text", "labels": {"tenant": "b"}}
    wal2http = start_wal2http(*hook0_args(hook0, "--messages"), env=token_env(hook0))
    db.execute("BEGIN; SELECT pg_logical_emit_message(true, 'hook0', %s); ROLLBACK",
               (message % uuid.uuid4(),))
    db.execute("INSERT INTO t VALUES (1); SELECT pg_logical_emit_message(true, 'hook0', %s)",
               (message % explicit,))
    db.execute("SELECT pg_logical_emit_message(true, 'audit', '{}')")
    db.execute("SELECT pg_logical_emit_message(true, 'hook0', %s)", (json.dumps(without_id),))
    stored = hook0.wait_for_events(2)
    time.sleep(0.5)
    assert wal2http.stop() == 0
    assert len(hook0.events()) == 2  # the rolled-back message never left PostgreSQL
    first, second = (e.raw for e in stored)
    assert first == {"application_id": hook0.application_id, "event_id": explicit,
                     "event_type": "billing.invoice.paid", "payload": '{"amount":1.10}',  # exact
                     "payload_content_type": "application/json", "labels": {"tenant": "acme"},
                     "occurred_at": "2026-03-01T10:00:00.000000Z"}
    assert second["payload"] == "plain text" and second["payload_content_type"] == "text/plain"
    uuid.UUID(str(second["event_id"]))  # derived from the message's position: stable across restarts


def test_changes_mode_with_ensured_event_types_and_labels(db: Database, hook0: FakeHook0,
                                                          start_wal2http: Start) -> None:
    publish(db, "CREATE TABLE orders (id int PRIMARY KEY, tenant_id int, status text)",
            "CREATE TABLE notes (id int PRIMARY KEY)", tables="orders, notes")
    wal2http = start_wal2http(*hook0_args(hook0, "--hook0-mode", "changes", "--hook0-service", "shop",
                                          "--hook0-label", "tenant=tenant_id", "--hook0-ensure-event-types"),
                              env=token_env(hook0))
    # Created at start, before any change: subscribers can subscribe to them at once.
    assert hook0.event_types() == {f"shop.{table}.{verb}" for table in ("orders", "notes")
                                   for verb in ("inserted", "updated", "deleted", "truncated", "read")}
    db.execute("INSERT INTO orders VALUES (1, 7, 'new')")
    db.execute("UPDATE orders SET status = 'paid' WHERE id = 1")
    db.execute("DELETE FROM orders WHERE id = 1")
    db.execute("TRUNCATE notes")
    stored = hook0.wait_for_events(4)
    assert wal2http.stop() == 0
    bodies = [e.raw for e in stored]
    assert [b["event_type"] for b in bodies] == ["shop.orders.inserted", "shop.orders.updated",
                                                 "shop.orders.deleted", "shop.notes.truncated"]
    assert [b["labels"] for b in bodies] == [
        {"schema": "public", "table": "orders", "tenant": "7"},
        {"schema": "public", "table": "orders", "tenant": "7"},
        {"schema": "public", "table": "orders"},  # a delete carries the key only
        {"schema": "public", "table": "notes"},
    ]
    for body in bodies:
        change = json.loads(str(body["payload"]))
        assert body["event_id"] == str(uuid.uuid5(ID_NAMESPACE, f"shop/{change['id']}"))
        assert body["occurred_at"] == change["commit_time"]
        assert body["payload_content_type"] == "application/json"
    assert json.loads(str(bodies[0]["payload"]))["new"] == {"id": 1, "tenant_id": 7, "status": "new"}


def test_ensure_event_types_creates_outbox_types_on_first_sight(db: Database, hook0: FakeHook0,
                                                                start_wal2http: Start) -> None:
    publish(db, OUTBOX_DDL, tables="public.hook0_outbox")
    wal2http = start_wal2http(*hook0_args(hook0, "--hook0-ensure-event-types"), env=token_env(hook0))
    insert = ("INSERT INTO hook0_outbox (event_type, payload, labels) "
              "VALUES ('billing.invoice.paid', %s, '{\"a\": \"b\"}')")
    db.execute(insert, ("1",))
    hook0.wait_for_events(1)
    assert hook0.event_types() == {"billing.invoice.paid"}
    hook0.remove_event_type("billing.invoice.paid")  # deleted in Hook0 while wal2http runs
    db.execute(insert, ("2",))
    stored = hook0.wait_for_events(2)
    assert wal2http.stop() == 0
    assert [e.raw["payload"] for e in stored] == ["1", "2"]
    assert hook0.answered("EventTypeDoesNotExist") == 1
    assert wal2http.stderr.count("created Hook0 event type billing.invoice.paid") == 2


@pytest.mark.parametrize("mode", ["outbox", "changes"])
def test_kill_and_restart_redelivers_and_hook0_keeps_each_event_once(
        db: Database, hook0: FakeHook0, start_wal2http: Start, mode: str) -> None:
    publish(db, OUTBOX_DDL, tables="public.hook0_outbox")
    hook0.add_event_type("shop.order.created")
    args = hook0_args(hook0, "--hook0-mode", mode, "--hook0-service", "shop", "--hook0-ensure-event-types")
    first = start_wal2http(*args, env=token_env(hook0))
    hook0.set_delay(0.01)
    # One transaction: nothing of it is confirmed until its last event is delivered.
    db.execute("INSERT INTO hook0_outbox (event_type, payload, labels) "
               "SELECT 'shop.order.created', jsonb_build_object('n', i), '{\"tenant\": \"acme\"}' "
               "FROM generate_series(1, 300) i")
    hook0.wait_for_events(60, timeout=60)
    first.kill()  # SIGKILL
    before_restart = len(hook0.events())
    hook0.set_delay(0)
    second = start_wal2http(*args, env=token_env(hook0))
    stored = hook0.wait_for_events(300, timeout=60)
    time.sleep(0.5)
    assert second.stop() == 0
    assert len(hook0.events()) == 300
    assert hook0.answered("EventAlreadyIngested") >= before_restart  # every one sent before the kill, again
    if mode == "outbox":
        rows = dict(db.execute("SELECT event_id::text, (payload->>'n')::int FROM hook0_outbox"))
        assert sorted(rows[str(e.model.event_id)] for e in stored) == list(range(1, 301))
    else:
        numbers = [json.loads(e.model.payload)["new"]["payload"]["n"] for e in stored]
        assert sorted(numbers) == list(range(1, 301))
    commit = parse_lsn(json.loads(stored[-1].model.payload)["commit_lsn"]) if mode == "changes" else 0
    wait_until(lambda: (db.cluster.confirmed_flush_lsn("wal2http") or 0) > commit, timeout=20,
               what="the slot confirmed past the transaction")


def test_invalid_outbox_row_halts_with_exit_4_after_the_rows_before_it(
        db: Database, hook0: FakeHook0, start_wal2http: Start) -> None:
    publish(db, OUTBOX_DDL, tables="public.hook0_outbox")
    hook0.add_event_type("shop.order.created")
    wal2http = start_wal2http(*hook0_args(hook0, "--batch-size", "10"), env=token_env(hook0))
    db.execute("INSERT INTO hook0_outbox (event_type, payload, labels) VALUES"
               " ('shop.order.created', '1', '{\"n\": 1}'), ('shop.order.created', '2', '{\"n\": 2}'),"
               " ('shop.order.created', '3', '{}'), ('shop.order.created', '4', '{\"n\": 4}')")
    assert wal2http.wait(30) == 4
    assert [e.raw["payload"] for e in hook0.events()] == ["1", "2"]  # one by one, up to the bad row
    assert len(posted_events(hook0)) == 2
    stderr = wal2http.stderr
    assert "insert on public.hook0_outbox" in stderr
    assert "column labels has 0 entries; Hook0 takes 1 to 10" in stderr
    assert "Traceback" not in stderr
    # Still in the slot: nothing at or past the refused row's commit is confirmed (an idle
    # confirmation may move the slot before the transaction arrives).
    refused = re.search(r"cannot make a Hook0 event of ([0-9A-F]{16})-3 ", stderr)
    assert refused is not None, stderr
    assert (db.cluster.confirmed_flush_lsn("wal2http") or 0) <= int(refused.group(1), 16)


def test_refused_events_are_dead_lettered_then_replayed_with_their_ids(
        db: Database, hook0: FakeHook0, start_wal2http: Start, wal2http_bin: str, tmp_path: Path) -> None:
    publish(db, OUTBOX_DDL, tables="public.hook0_outbox")
    hook0.add_event_type("shop.order.created")
    dead = tmp_path / "dead.jsonl"
    wal2http = start_wal2http(*hook0_args(hook0, "--batch-size", "10", "--on-reject", "dead-letter",
                                          "--dead-letter-path", str(dead)), env=token_env(hook0))
    db.execute("INSERT INTO hook0_outbox (event_type, payload, labels) VALUES"
               " ('shop.order.created', '{\"n\": 1}', '{\"a\": \"b\"}'),"
               " ('shop.order.cancelled', '{\"n\": 2}', '{\"a\": \"b\"}'),"  # unknown to Hook0
               " ('shop.order.created', '{\"n\": 3}', '{}'),"  # cannot be a Hook0 event
               " ('shop.order.created', '{\"n\": 4}', '{\"a\": \"b\"}')")
    hook0.wait_for_events(2)
    wait_until(lambda: dead.exists() and len(dead.read_text().splitlines()) == 2, what="two dead letters")
    assert wal2http.stop() == 0
    assert [json.loads(e.model.payload)["n"] for e in hook0.events()] == [1, 4]
    letters = [json.loads(line) for line in dead.read_text().splitlines()]
    assert "400 EventTypeDoesNotExist" in letters[0]["reason"]
    assert "column labels has 0 entries" in letters[1]["reason"]
    # The operator creates the missing type; replay delivers that event with the row's own id.
    hook0.add_event_type("shop.order.cancelled")
    code, _, stderr = run_once(wal2http_bin, ["replay", *hook0_args(hook0)[1:], str(dead)], token_env(hook0))
    assert code == 4, stderr  # the second line still cannot be a Hook0 event
    assert "replay stopped at line 2" in stderr and "column labels has 0 entries" in stderr
    replayed = hook0.events()[-1]
    row_id = db.execute("SELECT event_id::text FROM hook0_outbox WHERE payload->>'n' = '2'")[0][0]
    assert str(replayed.model.event_id) == row_id and json.loads(replayed.model.payload) == {"n": 2}
    assert len(dead.read_text().splitlines()) == 1


def test_hook0_problems_are_retried_until_delivered(db: Database, hook0: FakeHook0,
                                                    start_wal2http: Start) -> None:
    publish(db, OUTBOX_DDL, tables="public.hook0_outbox")
    hook0.add_event_type("shop.order.created")
    wal2http = start_wal2http(*hook0_args(hook0), env=token_env(hook0))
    hook0.fail_next(3, "ServiceUnavailable")
    hook0.fail_next(2, "RateLimited", headers={"Retry-After": "1"})
    db.execute("INSERT INTO hook0_outbox (event_type, payload, labels) "
               "VALUES ('shop.order.created', '{}', '{\"a\": \"b\"}')")
    hook0.wait_for_events(1, timeout=60)
    assert wal2http.stop() == 0
    answers = [r.problem for r in hook0.requests]
    assert answers.count("ServiceUnavailable") == 3 and answers.count("RateLimited") == 2
    times = [r.received_at for r in hook0.requests if r.problem in ("RateLimited", None)]
    assert times[-1] - times[0] >= 2.0  # two 1-second Retry-After waits, none skipped


def test_daily_quota_holds_requests_back_even_after_a_reconnect(db: Database, hook0: FakeHook0,
                                                                 start_wal2http: Start) -> None:
    publish(db, OUTBOX_DDL, tables="public.hook0_outbox")
    hook0.add_event_type("shop.order.created")
    hook0.set_quota(1)
    wal2http = start_wal2http(*hook0_args(hook0, "--reconnect-max-wait", "1", "--shutdown-timeout", "1"),
                              env=token_env(hook0))
    db.execute("INSERT INTO hook0_outbox (event_type, payload, labels) "
               "SELECT 'shop.order.created', '{}', '{\"a\": \"b\"}' FROM generate_series(1, 2)")
    wait_until(lambda: hook0.answered("TooManyEventsToday") == 1, timeout=30, what="the quota answer")
    posted = len(posted_events(hook0))
    # The retry after a quota answer waits out the quota's cool-down, but a lost replication
    # connection starts the delivery over at once: only the sink's own hold-back keeps it from
    # asking Hook0 again.
    db.cluster.terminate_walsenders("wal2http")
    wait_until(lambda: "next request in" in wal2http.stderr or len(posted_events(hook0)) > posted, timeout=60,
               what="the delivery after the reconnect")
    assert "reconnected" in wal2http.stderr or "reconnecting" in wal2http.stderr
    assert len(posted_events(hook0)) == posted and hook0.answered("TooManyEventsToday") == 1
    assert len(hook0.events()) == 1
    assert wal2http.running
    assert wal2http.stop() == 0
    assert "daily event quota of application" in wal2http.stderr and "no request for 300 s" in wal2http.stderr


@pytest.mark.parametrize(("setup", "expected"), [
    ("wrong-token", "Hook0 refused the API token (403 AuthInvalidBiscuit"),
    ("unknown-type", "400 EventTypeDoesNotExist: The event type 'shop.order.created' does not exist"),
    ("validation", "422 Validation: labels: out of range"),
])
def test_hook0_refusals_stop_with_exit_4_and_hook0s_reason(db: Database, hook0: FakeHook0,
                                                           start_wal2http: Start, setup: str,
                                                           expected: str) -> None:
    publish(db, OUTBOX_DDL, tables="public.hook0_outbox")
    if setup != "unknown-type":
        hook0.add_event_type("shop.order.created")
    if setup == "validation":
        hook0.fail_next(1, "Validation", detail="labels: out of range")
    env = {"HOOK0_API_TOKEN": "wrong-token-3f9a"} if setup == "wrong-token" else token_env(hook0)
    wal2http = start_wal2http(*hook0_args(hook0, "--log-level", "debug"), env=env)
    db.execute("INSERT INTO hook0_outbox (event_type, payload, labels) "
               "VALUES ('shop.order.created', '{}', '{\"a\": \"b\"}')")
    assert wal2http.wait(30) == 4
    assert expected in wal2http.stderr
    assert "wrong-token-3f9a" not in wal2http.stderr and "Traceback" not in wal2http.stderr
    if setup == "unknown-type":
        assert "--hook0-ensure-event-types" in wal2http.stderr


def test_legacy_variables_and_token_file(db: Database, hook0: FakeHook0, start_wal2http: Start,
                                         tmp_path: Path) -> None:
    publish(db, OUTBOX_DDL, tables="public.hook0_outbox")
    hook0.add_event_type("shop.order.created")
    token_file = tmp_path / "token"
    token_file.write_text(hook0.token + "\n")
    env = {"EVENT_SINK": "hook0", "HOOK0_API_URL": hook0.url, "HOOK0_APPLICATION_ID": hook0.application_id,
           "HOOK0_API_TOKEN": "not-this-one"}
    wal2http = start_wal2http("--create-slot", "--hook0-api-token-file", str(token_file), env=env)
    db.execute("INSERT INTO hook0_outbox (event_type, payload, labels) "
               "VALUES ('shop.order.created', '{}', '{\"a\": \"b\"}')")
    hook0.wait_for_events(1)
    assert wal2http.stop() == 0


@pytest.mark.parametrize(("args", "env", "expected"), [
    ((), {}, "needs an API token: set HOOK0_API_TOKEN"),
    (("--hook0-api-token-file", "/nonexistent/token"), {}, "cannot read --hook0-api-token-file"),
    ((), {"HOOK0_APPLICATION_ID": "not-a-uuid", "HOOK0_API_TOKEN": "x"}, "must be a UUID, not 'not-a-uuid'"),
    ((), {"HOOK0_API_URL": "ftp://x", "HOOK0_API_TOKEN": "x"}, "--hook0-api-url must start with http"),
    (("--hook0-label", "tenant=tenant_id"), {"HOOK0_API_TOKEN": "x"}, "--hook0-label applies to"),
    (("--hook0-mode", "changes", "--hook0-label", "schema=x"), {"HOOK0_API_TOKEN": "x"},
     "cannot set 'schema'"),
    (("--hook0-api-token", "x"), {}, "No such option '--hook0-api-token'"),  # never a flag
])
def test_hook0_configuration_mistakes_exit_2(args: tuple[str, ...], env: dict[str, str], expected: str) -> None:
    """Checked before any connection, so in-process (click's test runner)."""
    base = {"WAL2HTTP_DSN": UNREACHABLE_DSN, "HOOK0_API_URL": "http://127.0.0.1:1/api/v1",
            "HOOK0_APPLICATION_ID": str(uuid.uuid4())}
    code, _, stderr = invoke("run", "--sink", "hook0", *args, env={**base, **env})
    assert code == 2, stderr
    assert expected in stderr


def test_deleting_outbox_rows_never_loses_their_events(db: Database, hook0: FakeHook0,
                                                     start_wal2http: Start) -> None:
    publish(db, OUTBOX_DDL, tables="public.hook0_outbox")
    hook0.add_event_type("shop.order.created")
    wal2http = start_wal2http(*hook0_args(hook0), env=token_env(hook0))
    insert = ("INSERT INTO hook0_outbox (event_type, payload, labels) "
              "VALUES ('shop.order.created', %s, '{\"a\": \"b\"}')")
    db.execute(insert + "; DELETE FROM hook0_outbox", ("1",))  # deleted in the same transaction
    hook0.wait_for_events(1)
    hook0.fail_next(10_000, "ServiceUnavailable")
    db.execute(insert, ("2",))
    wait_until(lambda: hook0.answered("ServiceUnavailable") > 0, what="a failed delivery")
    db.execute("DELETE FROM hook0_outbox")  # deleted before Hook0 took it
    hook0.clear_failures()
    stored = hook0.wait_for_events(2, timeout=60)
    assert wal2http.stop() == 0
    assert [e.raw["payload"] for e in stored] == ["1", "2"]


def test_documented_cleanup_deletes_only_confirmed_rows(db: Database, hook0: FakeHook0,
                                                        start_wal2http: Start) -> None:
    publish(db, OUTBOX_DDL, MARK_DDL, tables="public.hook0_outbox")
    hook0.add_event_type("shop.order.created")
    wal2http = start_wal2http(*hook0_args(hook0), env=token_env(hook0))
    insert = ("INSERT INTO hook0_outbox (event_type, payload, labels) "
              "SELECT 'shop.order.created', jsonb_build_object('n', i), '{\"a\": \"b\"}' "
              "FROM generate_series(%s, %s) i")

    def remaining() -> list[int]:
        return [row[0] for row in db.execute("SELECT (payload->>'n')::int FROM hook0_outbox ORDER BY 1")]

    def confirm_last_mark() -> None:
        query = ("SELECT max(lsn) <= (SELECT confirmed_flush_lsn FROM pg_replication_slots"
                 " WHERE slot_name = 'wal2http') FROM hook0_outbox_mark")
        wait_until(lambda: db.execute(query)[0][0], timeout=20, what="the slot to confirm the last mark")

    db.execute(insert, (1, 3))
    hook0.wait_for_events(3)
    db.execute(CLEANUP)  # the first run only takes a mark
    assert remaining() == [1, 2, 3]
    confirm_last_mark()
    hook0.fail_next(10_000, "ServiceUnavailable")  # Hook0 down: row 4 is not delivered
    db.execute(insert, (4, 4))
    wait_until(lambda: hook0.answered("ServiceUnavailable") > 0, what="a failed delivery")
    db.execute(CLEANUP)
    assert remaining() == [4]  # delivered rows went, the undelivered one stays
    db.execute(CLEANUP)
    assert remaining() == [4]  # still: nothing past it is confirmed
    hook0.clear_failures()
    hook0.wait_for_events(4, timeout=60)
    confirm_last_mark()
    db.execute(CLEANUP)
    assert remaining() == []
    assert wal2http.stop() == 0
    assert len(hook0.events()) == 4
