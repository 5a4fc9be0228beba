"""Fixtures for the whole suite: a real PostgreSQL 15, a database per test, a webhook receiver, the CLI."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.support.ci import on_ci
from tests.support.ci import pytest_runtest_makereport as pytest_runtest_makereport  # skips fail on CI
from tests.support.pgcluster import Database, PgCluster
from tests.support.receiver import Receiver

INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"
MAX_IDENTIFIER = 63

# Property tests run beside PostgreSQL and wal2http processes on a shared machine: no per-example
# deadline (Hypothesis's 200 ms default fails on a slow moment, not on a bug). On CI the examples are
# the same on every run, so a failure there is reproducible. HYPOTHESIS_PROFILE picks another.
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])


def pytest_configure(config: pytest.Config) -> None:
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if on_ci() else "dev"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    """One PostgreSQL 15 server for the session; a missing installation fails, it never skips."""
    try:
        cluster = PgCluster(settings={"wal_sender_timeout": "10s"})
        cluster.start()
    except RuntimeError as e:
        problem = str(e)
    else:
        problem = ""
    if problem:  # failed outside the except block, so the report is the message alone
        pytest.fail(f"cannot start the test PostgreSQL: {problem}", pytrace=False)
    yield cluster
    cluster.cleanup()


def database_name(test_name: str) -> str:
    """A PostgreSQL identifier from a test name: lowercase [a-z0-9_], at most 63 bytes, still unique."""
    name = re.sub(r"[^a-z0-9_]+", "_", test_name.lower()).strip("_") or "test"
    if len(name) > MAX_IDENTIFIER:
        digest = hashlib.sha1(test_name.encode()).hexdigest()[:8]
        name = f"{name[: MAX_IDENTIFIER - 9]}_{digest}"
    return name


@pytest.fixture
def db(pg: PgCluster, request: pytest.FixtureRequest) -> Iterator[Database]:
    """A fresh database named after the test; dropped afterwards with its replication slots."""
    database = pg.create_database(database_name(request.node.name))
    yield database
    database.drop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture(scope="session")
def wal2http_bin() -> str:
    """The installed `wal2http` console script, preferring the one of the interpreter running the tests."""
    beside_python = Path(sys.executable).parent / "wal2http"
    found = str(beside_python) if beside_python.is_file() else shutil.which("wal2http")
    if found is None:
        pytest.fail(
            f"the `wal2http` command is not installed (not beside {sys.executable}, not on PATH): "
            "run `make test`, or `pip install -e '.[test]'` in this environment",
            pytrace=False,
        )
    return found
