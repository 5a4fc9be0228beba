"""Fixtures for end-to-end tests: start ``wal2http run`` against the test database."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.pgcluster import Database
from tests.support.process import Wal2http

Start = Callable[..., Wal2http]


@pytest.fixture
def start_wal2http(wal2http_bin: str, db: Database) -> Iterator[Start]:
    """Start ``wal2http run`` on the test database; every process is killed at teardown."""
    started: list[Wal2http] = []

    def start(*args: str, env: dict[str, str] | None = None, wait: bool = True) -> Wal2http:
        process = Wal2http(wal2http_bin, ["run", *args], {"WAL2HTTP_DSN": db.dsn, **(env or {})})
        started.append(process.start())
        if wait:
            process.wait_streaming()
        return process

    yield start
    for process in started:
        process.kill()


def publish(db: Database, *ddl: str, tables: str = "") -> None:
    """Run DDL, then create the ``wal2http`` publication for ``tables`` (all tables when empty)."""
    for statement in ddl:
        db.execute(statement)
    target = f"FOR TABLE {tables}" if tables else "FOR ALL TABLES"
    db.execute(f"CREATE PUBLICATION wal2http {target}")
