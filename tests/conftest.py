"""Fixtures for the whole suite: a real PostgreSQL, a database per test, a webhook receiver, the CLI.

The server is PG_BINDIR's (Debian's 15 by default; ``make test PG=17`` runs the suite on 17). The modules
in SERVER_FACING are marked ``server``: ``make test`` runs them (``pytest -m server``) on 14, 16, 17 and 18 too.

``make test`` runs the tests in parallel (pytest-xdist, ``-n``): each worker process is a whole pytest
session of its own, with its own ``pg`` server (started when its first test needs one), running its tests
one at a time. A test is parallel-safe when it
- keeps its data in its own ``db`` (a database named after the test, in its worker's server), or in a
  ``PgCluster`` it starts itself; it changes server-wide settings, roles or the server's life (restart,
  kill) only in a cluster of its own, or undoes them before it ends;
- listens on port 0 or ``tests.support.free_port()``, never on a fixed port, and connects only to
  127.0.0.1;
- writes files only under ``tmp_path`` (or a temporary directory it removes), never in the working
  directory or a fixed path;
- signals or kills only processes it started (``Wal2http``, its own servers), never by name;
- waits for a state (``wait_until``, ``Receiver.wait_for_events``, ``Wal2http.wait_streaming``) rather
  than sleeping for it, and bounds what it measures generously enough for a loaded machine: the workers
  outnumber the cores, because most tests wait.
A test that cannot be made so is marked ``@pytest.mark.xdist_group("NAME")``: the tests of one group run
in one worker, one after the other (``--dist loadgroup``). Run one module alone as before
(``pytest tests/integration/test_x.py``): without ``-n`` nothing changes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.support.ci import on_ci
from tests.support.ci import pytest_runtest_makereport as pytest_runtest_makereport  # skips fail on CI
from tests.support.pgcluster import Database, PgCluster, started_cluster
from tests.support.receiver import Receiver

INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"
MAX_IDENTIFIER = 63
SERVER_STARTED = pytest.StashKey[str]()
SERVER_OUTPUT_KEY = "wal2http_server"  # what a worker tells the controller about its server (xdist)

# The integration tests whose outcome depends on what the server does (replication protocol, slots,
# catalogue queries, types, TLS): the version matrix runs these on every supported PostgreSQL. The others
# (CLI usage, validation, README, observability, security) use the server only as a fixture.
SERVER_FACING = frozenset({
    "test_changes.py",        # streaming: every kind of change, in commit order
    "test_reliability.py",    # walsender kills, restarts, lost slots
    "test_faults.py",         # receiver faults and operator stops while streaming
    "test_slot_commands.py",  # slot create / status / drop
    "test_check_config.py",   # the catalogue checks
    "test_types.py",          # every type's JSON value
    "test_tls.py",            # TLS to PostgreSQL
    "test_hook0.py",          # the Hook0 sink: outbox rows and messages
    "test_hook0_setup.py",    # slot create --hook0-outbox, check-config --sink hook0
    "test_support.py",        # the test cluster itself works on this version
    "test_versions.py",       # version and managed-service differences
    "test_failover.py",       # failover slots (17+), the halt below 17
    "test_stream_errors.py",  # what the server refuses at connection: halt, not reconnect
    "test_routes.py",         # filters (REPLICA IDENTITY FULL checks), columns, templates, routes
    "test_backfill.py",       # backfill: watermarks, keys, row filters and column lists (15+)
    "test_until.py",          # run --until (a WAL marker, endpos) and slot peek (SQL decoding)
    "test_operator_path.py",  # slot create --backfill undo, slot drop's parts, keyless tables' keys
    "test_backfill_toast.py", # backfill and --reselect-toast: large values whole, chunks bounded by bytes
    "test_backfill_edges.py",  # backfill: key order under collations, inheritance, generated columns (18), locks
    "test_role_setup.py",     # README's role set-up suffices for a role that is not a superuser
})  # fmt: skip
# Slow tests in those modules whose subject is the receiver side alone (its TLS, Hook0's quota): the server
# only feeds them one row, so they run on 15 only. Together ~95 s of each matrix version's ~380 s.
RECEIVER_SIDE_ONLY = frozenset({
    "test_tls.py::test_mutual_tls_without_a_client_certificate_delivers_nothing",
    "test_tls.py::test_the_receiver_certificate_is_always_verified",
    "test_tls.py::test_check_config_verifies_the_receiver_as_run_does",
    "test_routes.py::test_check_config_checks_that_each_routes_receiver_accepts_connections",
    "test_hook0.py::test_daily_quota_holds_requests_back_even_after_a_reconnect",
})


# Property tests run beside PostgreSQL and wal2http processes on a shared machine: no per-example
# deadline (Hypothesis's 200 ms default fails on a slow moment, not on a bug). On CI the examples are
# the same on every run, so a failure there is reproducible. HYPOTHESIS_PROFILE picks another.
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])


def pytest_configure(config: pytest.Config) -> None:
    # A shell without job control starts background commands with SIGINT ignored (the Makefile runs the
    # matrix versions so), and every child inherits that: tests that interrupt a child need it back.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if on_ci() else "dev"))
    missing = sorted(name for name in SERVER_FACING if not (INTEGRATION_DIR / name).is_file())
    if missing:  # a renamed module would silently drop out of the version matrix
        raise pytest.UsageError(f"SERVER_FACING in tests/conftest.py names missing modules: {', '.join(missing)}")
    config.addinivalue_line(
        "markers", "server: server-facing integration test, run on every PostgreSQL version of the matrix"
    )


def pytest_report_header(config: pytest.Config) -> str:
    """Which server the integration tests will start (shown without -q; the summary says what ran)."""
    try:
        cluster = PgCluster()
        return f"PostgreSQL: {cluster.binaries_version()} from {cluster.bindir}"
    except RuntimeError as e:
        return f"PostgreSQL: unusable ({e}); PG_BINDIR={os.environ.get('PG_BINDIR', '(unset)')}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Even under -q, the log of a matrix run says which server the tests ran against."""
    if SERVER_STARTED in config.stash:
        terminalreporter.write_line(f"tests ran against {config.stash[SERVER_STARTED]}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """An xdist worker hands the server it started to the controller, which writes the summary."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None and SERVER_STARTED in session.config.stash:
        workeroutput[SERVER_OUTPUT_KEY] = session.config.stash[SERVER_STARTED]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """(xdist, in the controller) Every worker started the same PG_BINDIR, so any one names it."""
    server = getattr(node, "workeroutput", {}).get(SERVER_OUTPUT_KEY)
    if server:
        node.config.stash[SERVER_STARTED] = server


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """``-m server`` (a matrix version) imports only the server-facing modules: each worker would import and
    collect the whole suite (~2 s) to deselect nine tenths of it."""
    if config.getoption("markexpr") != "server" or not collection_path.name.startswith("test_"):
        return None
    if collection_path.suffix != ".py":
        return None
    return collection_path.resolve().parent != INTEGRATION_DIR or collection_path.name not in SERVER_FACING


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    modules: dict[str, object] = {}
    for item in items:
        if INTEGRATION_DIR in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)
            test = f"{item.path.name}::{getattr(item, 'originalname', item.name)}"
            if item.path.name in SERVER_FACING and test not in RECEIVER_SIDE_ONLY:
                item.add_marker(pytest.mark.server)
            modules[item.path.name] = getattr(item, "module", None)
    # A renamed test would silently move back into the matrix: each name must still be in its module.
    for test in sorted(RECEIVER_SIDE_ONLY):
        module_name, _, function = test.partition("::")
        module = modules.get(module_name)
        if module is not None and not hasattr(module, function):
            raise pytest.UsageError(f"RECEIVER_SIDE_ONLY in tests/conftest.py names a missing test: {test}")


@pytest.fixture(scope="session")
def pg(pytestconfig: pytest.Config) -> Iterator[PgCluster]:
    """One PostgreSQL server (PG_BINDIR's) for the session; a missing installation fails, it never skips."""
    with started_cluster({"wal_sender_timeout": "10s"}) as cluster:
        server = cluster.execute("SHOW server_version")[0][0]
        pytestconfig.stash[SERVER_STARTED] = f"PostgreSQL {server} from {cluster.bindir}"
        yield cluster


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
