"""Fixtures for end-to-end tests: start ``wal2http run`` against the test database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.pgcluster import Database
from tests.support.process import Start, Wal2http
from tests.support.replication import publish

# Start and publish live in tests/support; imported from here by tests written before they moved.
__all__ = ["Start", "publish", "start_wal2http"]


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
        process.close()
