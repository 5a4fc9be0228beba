"""Errors where the stream opens: a lost connection is retried, a refusal for good halts with its exit code."""

from __future__ import annotations

import time

from tests.support.pgcluster import Database
from tests.support.process import Start
from tests.support.replication import publish


def test_a_reconnection_refused_for_good_halts_with_exit_3(db: Database, start_wal2http: Start) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY, v text)", tables="t")
    role = f"{db.name[:40]}_r"
    db.execute(f'CREATE ROLE "{role}" LOGIN SUPERUSER')
    try:
        wal2http = start_wal2http("--create-slot", env={"WAL2HTTP_DSN": db.cluster.dsn(db.name, user=role)})
        db.execute(f'ALTER ROLE "{role}" NOLOGIN')
        db.cluster.terminate_walsenders("wal2http")
        started = time.monotonic()
        assert wal2http.wait(30) == 3
        assert time.monotonic() - started < 15  # not an endless reconnect loop
        assert f'role "{role}" is not permitted to log in' in wal2http.stderr
        assert "Traceback" not in wal2http.stderr and "unexpected error" not in wal2http.stderr
    finally:
        db.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_a_lost_connection_is_still_retried(db: Database, start_wal2http: Start) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY, v text)", tables="t")
    wal2http = start_wal2http("--create-slot")
    db.cluster.terminate_walsenders("wal2http")
    db.execute("INSERT INTO t VALUES (1, 'x')")
    deadline = time.monotonic() + 20
    while '"id": 1' not in wal2http.stdout and '"id":1' not in wal2http.stdout:
        assert wal2http.running, wal2http.stderr
        assert time.monotonic() < deadline, wal2http.stderr
        time.sleep(0.1)
    assert wal2http.stop() == 0
