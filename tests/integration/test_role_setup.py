"""README's role set-up, followed literally by a role that is not a superuser, is enough for every command
README then gives that role: check-config, slot create --backfill, run, backfill, slot status, slot drop.

On PostgreSQL 15 and later a role may not create tables in schema ``public``; wal2http keeps its own tables
(the backfill requests) in schema ``wal2http``, which README's set-up gives the role. What the role may not do
is refused with the GRANT or the owner's command that allows it, and check-config names it first.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg2
import pytest

from tests.support import readme, wait_until
from tests.support.pgcluster import Database, PgCluster, started_cluster
from tests.support.process import Wal2http, run_once
from tests.support.receiver import Receiver

ROLE = "wal2http"  # README's set-up names it; roles belong to the cluster, hence a cluster of this module's own
TABLES = """
    CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL DEFAULT 'a customer');
    CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customers, total numeric(12,2));
    INSERT INTO customers (name) SELECT 'customer ' || g FROM generate_series(1, 30) g;
    INSERT INTO orders (customer_id, total) SELECT 1 + g % 30, g FROM generate_series(1, 120) g;
"""
# The requests table as wal2http 0.1 created it, in schema public.
LEGACY_TABLE = """
    CREATE TABLE public.wal2http_backfill (
        id bigserial PRIMARY KEY, request bigint NOT NULL, slot name NOT NULL, publication name NOT NULL,
        schema_name name NOT NULL, table_name name NOT NULL, where_condition text,
        state text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
        last_key text[], rows_sent bigint NOT NULL DEFAULT 0, rows_estimated bigint,
        chunks bigint NOT NULL DEFAULT 0, reason text, requested_at timestamptz NOT NULL DEFAULT now(),
        started_at timestamptz, finished_at timestamptz)
"""


def subsection(title: str) -> list[readme.Block]:
    """The SQL blocks under a README subsection title (underlined with '-'), in order."""
    lines = readme.README.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines)
                 if line == title and i + 1 < len(lines) and set(lines[i + 1]) == {"-"})
    end = next((i for i in range(start + 2, len(lines) - 1)
                if lines[i].strip() and lines[i + 1].strip() and set(lines[i + 1].strip()) <= {"-", "="}
                and len(lines[i + 1].strip()) >= len(lines[i].strip())), len(lines))
    found = [b for b in readme.blocks() if start < b.line <= end and b.kind == "sql"]
    assert found, f"README.rst has no SQL block under {title!r}"
    return found


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    with started_cluster({"wal_sender_timeout": "10s"}) as pg:
        yield pg


@dataclass
class App:
    """A database with README's example tables, the role set up as README says, and its publication."""

    db: Database
    binary: str
    processes: list[Wal2http]

    @property
    def dsn(self) -> str:
        return self.db.cluster.dsn(self.db.name, user=ROLE)

    def cli(self, *args: str) -> tuple[int, str, str]:
        code, out, err = run_once(self.binary, args, {"WAL2HTTP_DSN": self.dsn}, timeout=90)
        assert "Traceback" not in err, err
        return code, out, err

    def start(self, *args: str) -> Wal2http:
        process = Wal2http(self.binary, ["run", *args], {"WAL2HTTP_DSN": self.dsn})
        self.processes.append(process.start())
        return process

    def slots(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT slot_name FROM pg_replication_slots WHERE database = "
                                              "current_database() ORDER BY 1")]


def setup_as_readme_says(db: Database, role_sql: list[str]) -> None:
    """The statements README tells a superuser to run (in the application's database), in its order."""
    for statement in role_sql:
        db.execute(statement)
    for block in subsection("The publication"):
        for statement in block.statements():
            db.execute(statement)


def role_statements() -> list[str]:
    return [s for b in subsection("The role") for s in b.statements()]


@pytest.fixture
def app(cluster: PgCluster, wal2http_bin: str, request: pytest.FixtureRequest) -> Iterator[App]:
    name = re.sub(r"[^a-z0-9_]+", "_", request.node.name.lower())[:50]
    db = cluster.create_database(name)
    processes: list[Wal2http] = []
    try:
        db.execute(TABLES)
        yield App(db, wal2http_bin, processes)
    finally:
        for process in processes:
            process.kill()
        for (slot,) in db.execute("SELECT slot_name FROM pg_replication_slots WHERE database = current_database()"):
            db.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        db.drop()
        cluster.execute(f"DROP ROLE IF EXISTS {ROLE}")


def checks_of(app: App, *args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = app.cli("check-config", "--json", *args)
    assert out, err
    return code, {c["name"]: c for c in json.loads(out)["checks"]}


def not_ok(checks: dict[str, Any]) -> dict[str, str]:
    return {name: f"{c['status']}: {c['detail']} (fix: {c['fix']})" for name, c in checks.items()
            if c["status"] != "ok" and name not in ("database", "max_slot_wal_keep_size")}


def test_readme_role_setup_is_enough_for_every_command_readme_gives_the_role(app: App, receiver: Receiver) -> None:
    setup_as_readme_says(app.db, role_statements())
    assert app.db.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (ROLE,)) == [(False,)]

    code, checks = checks_of(app, "--create-slot")
    assert code == 0 and not_ok(checks) == {}, not_ok(checks)

    code, out, err = app.cli("slot", "create", "--backfill")
    assert code == 0, out + err
    assert app.slots() == ["wal2http"]

    code, checks = checks_of(app)
    assert code == 0 and not_ok(checks) == {}, not_ok(checks)

    run = app.start("--sink", "http", "--http-url", receiver.url)
    run.wait_streaming()

    def reads() -> list[dict[str, Any]]:
        return [e for e in receiver.events() if e["op"] == "read"]

    wait_until(lambda: len(reads()) >= 150, timeout=60, what="the initial backfill of 150 rows")
    assert sorted({e["table"] for e in reads()}) == ["customers", "orders"]
    app.db.execute("INSERT INTO orders (customer_id, total) VALUES (1, 7.5)")
    wait_until(lambda: any(e["op"] == "insert" and e["table"] == "orders" for e in receiver.events()),
               timeout=30, what="the insert")

    code, out, err = app.cli("backfill", "--table", "public.orders", "--wait")
    assert code == 0, out + err
    assert len([e for e in reads() if e["table"] == "orders"]) == 120 + 121

    assert run.stop() == 0, run.stderr
    assert " ERROR " not in run.stderr and "permission denied" not in run.stderr, run.stderr

    code, out, err = app.cli("slot", "status")
    assert code == 0, out + err
    code, out, err = app.cli("slot", "drop", "--yes")
    assert code == 0, out + err
    assert app.slots() == []


def test_slot_create_table_names_the_grant_and_the_owner_it_needs(app: App) -> None:
    setup_as_readme_says(app.db, role_statements())
    code, out, err = app.cli("slot", "create", "--slot", "mine", "--publication", "mine", "--table", "public.orders")
    assert code == 3, out + err
    assert f"GRANT CREATE ON DATABASE {app.db.name} TO {ROLE};" in err
    assert f"ALTER TABLE public.orders OWNER TO {ROLE};" in err
    assert app.slots() == [] and app.db.execute("SELECT pubname FROM pg_publication WHERE pubname = 'mine'") == []
    # README says what slot create --table needs, in the role's section.
    section = "\n".join(b.text for b in subsection("The role")) + _prose("The role")
    assert "GRANT CREATE ON DATABASE" in section and "OWNER TO" in section


def _prose(title: str) -> str:
    lines = readme.README.read_text(encoding="utf-8").splitlines()
    start = lines.index(title)
    end = next(i for i in range(start + 2, len(lines)) if set(lines[i].strip() or "x") == {"-"})
    return "\n".join(lines[start:end])


# README's CREATE SCHEMA left out, or done by a DBA without giving the schema (or the table) to the role.
INSTEAD_OF_THE_SCHEMA = {
    "no schema": [],
    "schema of another owner": ["CREATE SCHEMA wal2http"],
    "table of another owner": ["CREATE SCHEMA wal2http", LEGACY_TABLE.replace("public.", "wal2http.")],
}


@pytest.mark.parametrize("setup", sorted(INSTEAD_OF_THE_SCHEMA))
def test_without_the_schema_run_streams_and_the_refusal_names_the_fix(setup: str, app: App) -> None:
    statements = [s for s in role_statements() if not s.upper().startswith("CREATE SCHEMA")]
    setup_as_readme_says(app.db, statements + INSTEAD_OF_THE_SCHEMA[setup])
    code, checks = checks_of(app, "--create-slot")
    assert code == 0, checks  # streaming needs no table of wal2http's own: a warning
    requests = checks["backfill requests"]
    assert requests["status"] == "warning", requests
    run = app.start("--create-slot")  # streams, and says the same
    run.wait_streaming()
    assert requests["detail"] in run.stderr
    assert run.stop() == 0
    code, out, err = app.cli("slot", "status")  # lists the slot's backfills: UNKNOWN with the GRANT when it cannot
    assert (code, requests["fix"] in out) == ((3, True) if setup == "table of another owner" else (0, False)), out
    # --backfill queues right after creating the slot: refused before creating it.
    code, out, err = app.cli("run", "--create-slot", "--backfill", "--slot", "second")
    assert code == 3 and requests["fix"] in err, out + err
    assert app.slots() == ["wal2http"]
    code, out, err = app.cli("backfill", "--all-tables")
    assert code == 3 and requests["fix"] in err, out + err
    assert app.db.execute("SELECT count(*) FROM pg_class WHERE relname = 'wal2http_backfill'") == [
        (int(setup == "table of another owner"),)]
    # The fix as printed (up to an alternative), run by whom it names, makes the same command work.
    app.db.execute(requests["fix"].split(": ", 1)[-1].split("; or ")[0])
    code, out, err = app.cli("backfill", "--all-tables")
    assert code == 0, out + err
    code, checks = checks_of(app)
    assert code == 0 and checks["backfill requests"]["status"] == "ok", checks["backfill requests"]


def test_a_requests_table_left_in_public_gets_the_statement_that_moves_it(app: App) -> None:
    """Where wal2http 0.1 kept backfill requests: run keeps streaming and warns, backfill refuses until moved."""
    setup_as_readme_says(app.db, role_statements())
    app.db.execute(LEGACY_TABLE)
    app.db.execute(f"ALTER TABLE public.wal2http_backfill OWNER TO {ROLE}")  # 0.1's role created it
    app.db.execute("INSERT INTO public.wal2http_backfill (request, slot, publication, schema_name, table_name,"
                   " state) VALUES (1, 'wal2http', 'wal2http', 'public', 'orders', 'done')")
    move = "ALTER TABLE public.wal2http_backfill SET SCHEMA wal2http;"
    code, checks = checks_of(app, "--create-slot")
    assert code == 0 and checks["backfill requests"]["status"] == "warning"
    assert move in checks["backfill requests"]["fix"]
    run = app.start("--create-slot")
    run.wait_streaming()
    assert move in run.stderr
    assert run.stop() == 0
    code, out, err = app.cli("backfill", "--all-tables")
    assert code == 3 and move in err, out + err
    assert app.db.execute("SELECT to_regclass('wal2http.wal2http_backfill')") == [(None,)]
    with psycopg2.connect(app.dsn) as conn, conn.cursor() as cur:  # the fix, run as the role it was given to
        cur.execute(move)
    code, out, err = app.cli("backfill", "--all-tables")
    assert code == 0, out + err
    assert app.db.execute("SELECT request, state FROM wal2http.wal2http_backfill ORDER BY id")[0] == (1, "done")


@pytest.mark.parametrize("schema_by", ["wal2http", "readme"])
def test_taking_back_the_requests_table_drops_only_what_wal2http_made(schema_by: str, app: App) -> None:
    """slot create --backfill undoes what it made when queueing fails: never a schema README had a DBA make."""
    from wal2http.pg.backfill import create_requests_table, drop_requests_table

    if schema_by == "readme":
        setup_as_readme_says(app.db, role_statements())
    with contextlib.closing(app.db.connect()) as conn:
        conn.autocommit = True
        assert create_requests_table(conn) is True
        said = drop_requests_table(conn)
    schemas = app.db.execute("SELECT nspname::text FROM pg_namespace WHERE nspname = 'wal2http'")
    if schema_by == "wal2http":
        assert said == "table wal2http.wal2http_backfill and schema wal2http" and schemas == []
    else:
        assert said == "table wal2http.wal2http_backfill" and schemas == [("wal2http",)]
