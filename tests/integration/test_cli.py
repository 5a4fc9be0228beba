"""Operator mistakes get one clear line and the documented exit code, never a traceback."""

from __future__ import annotations

from tests.support.clirunner import UNREACHABLE_DSN, invoke
from tests.support.pgcluster import Database
from tests.support.process import Start, cli
from tests.support.receiver import Receiver
from tests.support.replication import publish


def run(wal2http_bin: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    code, _out, err = cli(wal2http_bin, "run", *args, env=env, timeout=30)
    return code, err


def test_missing_dsn(wal2http_bin: str) -> None:
    code, err = run(wal2http_bin, env={"DATABASE_URL": ""})
    assert code == 2 and "no database given" in err


def test_invalid_values_are_usage_errors() -> None:
    """Checked before any connection, so in-process (click's test runner)."""
    env = {"WAL2HTTP_DSN": UNREACHABLE_DSN}
    assert invoke("run", "--slot", "Bad-Name", env=env).code == 2
    code, _, err = invoke("run", "--sink", "http", env=env)
    assert code == 2 and "--http-url" in err
    code, _, err = invoke("run", "--sink", "http", "--http-url", "ftp://x", env=env)
    assert code == 2 and "http:// or https://" in err
    code, _, err = invoke("run", "--batch-size", "0", env=env)
    assert code == 2 and "--batch-size" in err


def test_missing_slot_and_publication(wal2http_bin: str, db: Database) -> None:
    env = {"WAL2HTTP_DSN": db.dsn}
    code, err = run(wal2http_bin, env=env)
    assert code == 2 and "publication 'wal2http' does not exist" in err
    publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    code, err = run(wal2http_bin, env=env)
    assert code == 2 and "replication slot 'wal2http' does not exist" in err and "--create-slot" in err


def test_unreachable_database_is_exit_3_without_the_password(wal2http_bin: str) -> None:
    code, err = run(wal2http_bin, env={"WAL2HTTP_DSN": "postgresql://app:s3cret-pw@127.0.0.1:1/app"})
    assert code == 3 and "cannot connect to PostgreSQL" in err
    assert "s3cret-pw" not in err


def test_legacy_environment_variables(db: Database, receiver: Receiver, start_wal2http: Start) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    db.execute("CREATE PUBLICATION legacy_pub FOR TABLE t")
    db.execute("SELECT pg_create_logical_replication_slot('legacy_slot', 'pgoutput')")
    env = {"DATABASE_URL": db.url, "SLOT_NAME": "legacy_slot", "PUB_NAME": "legacy_pub",
           "EVENT_SINK": "http", "HTTP_ENDPOINT_URL": receiver.url,
           "WAL2HTTP_DSN": ""}
    wal2http = start_wal2http(env=env)
    db.execute("INSERT INTO t VALUES (1)")
    (event,) = receiver.wait_for_events(1)
    assert wal2http.stop() == 0
    assert event["new"] == {"id": 1}
    assert "streaming from slot legacy_slot, publication legacy_pub" in wal2http.stderr


def test_new_names_win_over_legacy_ones(db: Database, receiver: Receiver, start_wal2http: Start) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    db.execute("SELECT pg_create_logical_replication_slot('new_slot', 'pgoutput')")
    env = {"SLOT_NAME": "legacy_slot", "WAL2HTTP_SLOT": "new_slot", "EVENT_SINK": "stdout",
           "WAL2HTTP_SINK": "http", "WAL2HTTP_HTTP_URL": receiver.url}
    wal2http = start_wal2http(env=env)
    db.execute("INSERT INTO t VALUES (1)")
    receiver.wait_for_events(1)
    assert wal2http.stop() == 0
    assert "streaming from slot new_slot" in wal2http.stderr
