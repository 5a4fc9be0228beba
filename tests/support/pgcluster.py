"""A throwaway PostgreSQL server with wal_level=logical, for the tests, `make demo` and `make bench`.

Any version from 14 to 18: PG_BINDIR names its server binaries (initdb, pg_ctl, postgres), by default
Debian's PostgreSQL 15. ``make postgres-17`` puts 17's in .cache/postgresql/17/bin (see the Makefile).
``python -m tests.support.pgcluster`` starts one, decodes a change with pgoutput and says which version ran.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeAlias

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pytest
from psycopg2 import sql

from tests.support import HOST, free_port, wait_until

__all__ = ["Database", "PgCluster", "wait_until"]

APT_BINDIR = "/usr/lib/postgresql/15/bin"
DEFAULT_BINDIR = APT_BINDIR
SUPERUSER = "postgres"
LOG_NAME = "postgresql.log"
# Another process (a parallel test worker's server) may take the free port before postgres binds it.
START_ATTEMPTS = 5

DEFAULT_SETTINGS: dict[str, str] = {
    "wal_level": "logical",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
    "wal_sender_timeout": "60s",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "128MB",
}

Query: TypeAlias = "str | sql.Composable"
Params: TypeAlias = tuple[Any, ...] | list[Any] | dict[str, Any] | None


def _conf_value(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _dsn_value(value: str) -> str:
    if value and not any(c in value for c in " '\\"):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class PgCluster:
    """One PostgreSQL server in a temporary data directory, run as ``postgres`` when we are root."""

    host = HOST

    def __init__(
        self, bindir: str | os.PathLike[str] | None = None, settings: dict[str, str] | None = None
    ) -> None:
        self.bindir = Path(bindir or os.environ.get("PG_BINDIR") or DEFAULT_BINDIR)
        if not (self.bindir / "initdb").is_file():
            raise RuntimeError(
                f"PostgreSQL server binaries not found in {self.bindir} (no initdb): for 15, "
                "`apt-get install postgresql-15` (`make test` installs it); for 14, 16, 17 or 18, "
                "`make postgres-17` (say) fetches them into .cache/postgresql/17/bin; point PG_BINDIR at them"
            )
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self.datadir: Path | None = None
        self._port: int | None = None
        self._version: int | None = None
        # initdb and postgres refuse to run as root; the data directory must belong to postgres.
        self._as_postgres = os.geteuid() == 0

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the PostgreSQL cluster is not started")
        return self._port

    @property
    def version(self) -> int:
        """The running server's ``server_version_num``, e.g. 170010 for 17.10 (and 150014 for 15.14)."""
        if self._version is None:
            self._version = int(self.execute("SHOW server_version_num")[0][0])
        return self._version

    @property
    def major(self) -> int:
        """The running server's major version: 14 to 18."""
        return self.version // 10000

    def binaries_version(self) -> str:
        """What ``postgres --version`` says, without starting a server: ``postgres (PostgreSQL) 17.10``."""
        done = subprocess.run(
            [str(self.bindir / "postgres"), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{self.bindir / 'postgres'} --version failed: {(done.stderr or done.stdout).strip()}")
        return done.stdout.strip()

    def client_program(self, name: str) -> Path:
        """A client program such as pg_recvlogical: beside the server, else Debian's 15 (any version talks to
        14 to 18), else on PATH. The npm server packages have none; ``make postgres`` installs Debian's."""
        for candidate in (self.bindir / name, Path(APT_BINDIR) / name):
            if candidate.is_file():
                return candidate
        found = shutil.which(name)
        if found is None:
            raise RuntimeError(
                f"{name} not found in {self.bindir}, {APT_BINDIR} or on PATH: "
                "`apt-get install postgresql-client-15` (`make postgres` installs it)"
            )
        return Path(found)

    @property
    def logfile(self) -> Path:
        return self._require_datadir() / LOG_NAME

    def log_size(self) -> int:
        """Where the server log ends now: pass it to ``log_since`` to read what one test made it log."""
        return self.logfile.stat().st_size

    def log_since(self, offset: int) -> str:
        """What the server logged after ``offset`` bytes. The session's server logs for every test of its
        worker (the file is appended to, never rotated): a test reads only its own part."""
        with self.logfile.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    @property
    def running(self) -> bool:
        return self.datadir is not None and (self.datadir / "postmaster.pid").exists()

    def dsn(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        """A libpq keyword DSN, e.g. ``host=127.0.0.1 port=5433 dbname=postgres user=postgres``."""
        return f"host={HOST} port={self.port} dbname={_dsn_value(dbname)} user={_dsn_value(user)}"

    def url(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@{HOST}:{self.port}/{dbname}"

    def start(self) -> None:
        """initdb into a fresh temporary directory and start; on failure RuntimeError carries the log tail."""
        if self.datadir is not None:
            raise RuntimeError(f"the PostgreSQL cluster in {self.datadir} was already started")
        self.datadir = Path(tempfile.mkdtemp(prefix="wal2http-pg-"))
        try:
            if self._as_postgres:
                shutil.chown(self.datadir, SUPERUSER, SUPERUSER)
            self._run(
                "initdb", "-D", str(self.datadir), "-A", "trust", "-U", SUPERUSER,
                "--no-sync", "-E", "UTF8", "--locale=C", timeout=120,
            )  # fmt: skip
            self._start_on_a_free_port()
            self._check_pgoutput()
        except BaseException:
            with contextlib.suppress(RuntimeError):
                self.stop("immediate")  # pg_ctl -w may give up on a server that still came up
            self._discard()
            raise
        atexit.register(self.cleanup)

    def _start_on_a_free_port(self) -> None:
        for attempt in range(1, START_ATTEMPTS + 1):
            self._port = free_port()
            self._write_config()  # appended: the last port line wins
            try:
                self._pg_ctl("start")
                return
            except RuntimeError as e:
                if attempt == START_ATTEMPTS or "could not bind" not in str(e):
                    raise

    def stop(self, mode: str = "fast") -> None:
        """Stop the server if it runs; calling it again is harmless."""
        if self.running:
            self._pg_ctl("stop", "-m", mode)

    def restart(self, mode: str = "fast") -> None:
        """Stop (with ``mode``) and start again on the same port and data directory."""
        self._pg_ctl("restart", "-m", mode)

    def cleanup(self) -> None:
        """Stop the server and delete its data directory."""
        atexit.unregister(self.cleanup)
        if self.datadir is None:
            return
        try:
            self.stop()
        except RuntimeError:
            self.stop("immediate")
        finally:
            self._discard()

    def __enter__(self) -> PgCluster:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    def connect(self, dbname: str = "postgres") -> psycopg2.extensions.connection:
        """A new autocommit connection; the caller closes it."""
        conn = psycopg2.connect(self.dsn(dbname), connect_timeout=10)
        conn.autocommit = True
        return conn

    def execute(self, query: Query, params: Params = None, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement on a fresh autocommit connection; return its rows, or [] if it returns none."""
        with closing(self.connect(dbname)) as conn, conn.cursor() as cur:
            cur.execute(query, params)
            return list(cur.fetchall()) if cur.description is not None else []

    def terminate_walsenders(self, slot_name: str | None = None, timeout: float = 10.0) -> int:
        """Kill the walsenders of ``slot_name`` (or all), wait until the slots are free; return how many."""
        active = "FROM pg_replication_slots WHERE active AND (%(slot)s::text IS NULL OR slot_name = %(slot)s)"
        rows = self.execute(f"SELECT active_pid, pg_terminate_backend(active_pid) {active}", {"slot": slot_name})
        killed = [row[0] for row in rows]
        # Gone when no slot is held by a killed walsender: a client may have reconnected already.
        wait_until(
            lambda: not self.execute(f"SELECT 1 {active} AND active_pid = ANY(%(killed)s)",
                                     {"slot": slot_name, "killed": killed}),
            timeout=timeout,
            what=f"the walsenders of replication slot {slot_name or '(any)'} to exit",
        )
        return len(rows)

    def confirmed_flush_lsn(self, slot: str) -> int | None:
        """The slot's confirmed_flush_lsn as an int; None if the slot does not exist or has none."""
        rows = self.execute(
            "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
        )
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def current_wal_lsn(self) -> int:
        return int(self.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")[0][0])

    def create_database(self, name: str) -> Database:
        self.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return Database(self, name)

    def drop_database(self, name: str, timeout: float = 10.0) -> None:
        """Drop the database's replication slots (killing their walsenders), then the database itself."""

        def slots_dropped() -> bool:
            slots = self.execute(
                "SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = %s", (name,)
            )
            for slot_name, active_pid in slots:
                if active_pid:
                    self.execute("SELECT pg_terminate_backend(%s)", (active_pid,))
                # ObjectInUse: its walsender is still exiting; look again on the next round.
                with contextlib.suppress(psycopg2.errors.ObjectInUse, psycopg2.errors.UndefinedObject):
                    self.execute("SELECT pg_drop_replication_slot(%s)", (slot_name,))
            return not slots

        wait_until(
            slots_dropped, timeout=timeout, what=f"the replication slots of database {name} to be dropped"
        )
        self.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def _check_pgoutput(self) -> None:
        """Fail at start, not in the first test, when the server cannot load pgoutput (an incomplete tree)."""
        libdir = Path(self.execute("SELECT setting FROM pg_config WHERE name = 'PKGLIBDIR'")[0][0])
        if not (libdir / "pgoutput.so").is_file():
            raise RuntimeError(
                f"PostgreSQL {self.version} in {self.bindir} has no pgoutput: {libdir}/pgoutput.so is missing"
            )

    def _require_datadir(self) -> Path:
        if self.datadir is None:
            raise RuntimeError("the PostgreSQL cluster is not started")
        return self.datadir

    def _write_config(self) -> None:
        settings = {
            "listen_addresses": HOST,
            "port": str(self.port),
            "unix_socket_directories": str(self._require_datadir()),
            **self.settings,
        }
        lines = [f"{key} = {_conf_value(value)}" for key, value in settings.items()]
        with open(self._require_datadir() / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# wal2http test cluster\n" + "\n".join(lines) + "\n")

    def _pg_ctl(self, action: str, *options: str) -> None:
        datadir = str(self._require_datadir())
        self._run(
            "pg_ctl", action, "-D", datadir, "-w", "-t", "60", "-l", str(self.logfile), *options, timeout=90
        )

    def _run(self, program: str, *args: str, timeout: float) -> None:
        command = [str(self.bindir / program), *args]
        if self._as_postgres:
            command = ["runuser", "-u", SUPERUSER, "--", *command]
        # cwd: the postgres user may not be allowed into the caller's working directory (e.g. /root).
        done = subprocess.run(
            command, cwd=self._require_datadir(), capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            output = (done.stderr or done.stdout).strip()
            command_line = " ".join([program, *args])
            raise RuntimeError(f"{command_line} failed (exit {done.returncode}): {output}{self._log_tail()}")

    def _log_tail(self, lines: int = 30) -> str:
        try:
            tail = self.logfile.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        except (OSError, RuntimeError):
            return ""
        return f"\n--- last lines of {self.logfile} ---\n" + "\n".join(tail)

    def _discard(self) -> None:
        if self.datadir is not None:
            shutil.rmtree(self.datadir, ignore_errors=True)
        self.datadir = None
        self._port = None
        self._version = None


@dataclass(frozen=True)
class Database:
    """One database of a PgCluster, as the tests see it."""

    cluster: PgCluster
    name: str

    @property
    def dsn(self) -> str:
        return self.cluster.dsn(self.name)

    @property
    def url(self) -> str:
        return self.cluster.url(self.name)

    def connect(self) -> psycopg2.extensions.connection:
        return self.cluster.connect(self.name)

    def execute(self, query: Query, params: Params = None) -> list[tuple[Any, ...]]:
        return self.cluster.execute(query, params, dbname=self.name)

    def drop(self) -> None:
        self.cluster.drop_database(self.name)


@contextlib.contextmanager
def started_cluster(settings: dict[str, str] | None = None) -> Iterator[PgCluster]:
    """A started server for a fixture, removed afterwards; one that cannot start fails the test, never skips."""
    try:
        cluster = PgCluster(settings=settings)
        cluster.start()
    except RuntimeError as e:
        problem = str(e)
    else:
        problem = ""
    if problem:  # failed outside the except block, so the report is the message alone
        pytest.fail(f"cannot start the test PostgreSQL: {problem}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.cleanup()


def _smoke_test() -> None:
    """Start the server of PG_BINDIR, decode one insert with pgoutput, say what ran; exit 1 if it fails."""
    with PgCluster() as cluster:
        cluster.execute("CREATE TABLE smoke (id int PRIMARY KEY)")
        cluster.execute("CREATE PUBLICATION smoke FOR TABLE smoke")
        cluster.execute("SELECT pg_create_logical_replication_slot('smoke', 'pgoutput')")
        cluster.execute("INSERT INTO smoke VALUES (1)")
        # synchronous_commit=off: SQL decoding stops at the flushed WAL, which the walwriter soon moves on.
        messages = wait_until(
            lambda: cluster.execute(
                "SELECT substr(data, 1, 1) FROM pg_logical_slot_peek_binary_changes('smoke', NULL, NULL, "
                "'proto_version', '1', 'publication_names', 'smoke')"
            ),
            timeout=10,
            what="pgoutput to decode the insert",
        )
        kinds = b"".join(bytes(row[0]) for row in messages)
        if kinds != b"BRIC":  # begin, relation, insert, commit
            raise RuntimeError(f"pgoutput decoded {kinds!r}, expected b'BRIC'")
        server = cluster.execute("SHOW server_version")[0][0]
        print(f"PostgreSQL {server} from {cluster.bindir}: initdb, start and pgoutput decoding work")


if __name__ == "__main__":
    try:
        _smoke_test()
    except (RuntimeError, TimeoutError, psycopg2.Error) as e:
        sys.exit(f"PostgreSQL smoke test failed: {e}")
