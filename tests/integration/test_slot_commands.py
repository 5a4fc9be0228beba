"""``slot create``, ``slot status`` and ``slot drop`` through the installed CLI, on a real server."""

from __future__ import annotations

import os
import pty
import select
import signal
import time

from tests.support import wait_until
from tests.support.pgcluster import Database
from tests.support.process import Result, Start, cli
from tests.support.receiver import Receiver
from tests.support.replication import publish, published, slot_row


def write_wal(db: Database, table: str, rows: int, width: int) -> None:
    """Insert rows and wait for their WAL to be written: the test cluster commits asynchronously,
    and the lag is measured from pg_current_wal_lsn(), the position written so far."""
    db.execute(f"SET synchronous_commit = on; INSERT INTO {table} "
               f"SELECT g, repeat('x', {width}) FROM generate_series(1, {rows}) g")


def status(binary: str, db: Database, *args: str) -> Result:
    return cli(binary, "slot", "status", *args, dsn=db.dsn)


def test_create_status_run_status_drop(db: Database, receiver: Receiver, wal2http_bin: str,
                                       start_wal2http: Start) -> None:
    db.execute("CREATE TABLE orders (id int PRIMARY KEY, note text)")
    created = cli(wal2http_bin, "slot", "create", "--table", "orders", "--json", dsn=db.dsn)
    assert created.code == 0, created.err
    data = created.json()
    assert data["slot"]["created"] and data["slot"]["plugin"] == "pgoutput"
    assert data["publication"]["created"] and data["publication"]["tables"] == ["public.orders"]
    assert slot_row(db) == ("pgoutput", False, data["slot"]["consistent_lsn"])
    assert published(db) == ["public.orders"]

    write_wal(db, "orders", 2000, 200)
    before = status(wal2http_bin, db, "--json")
    assert before.code == 0
    (slot,) = before.json()["slots"]
    assert not slot["active"] and slot["unconfirmed_bytes"] > 400_000
    assert slot["retained_bytes"] >= slot["unconfirmed_bytes"]

    wal2http = start_wal2http("--sink", "http", "--http-url", receiver.url, "--batch-size", "500")
    receiver.wait_for_events(2000)

    def drained() -> bool:
        (now,) = status(wal2http_bin, db, "--json").json()["slots"]
        return bool(now["active"] and now["unconfirmed_bytes"] < 8192)

    wait_until(drained, timeout=30, interval=0.5, what="slot status to show the lag drained")
    after = status(wal2http_bin, db, "--warn-lag", "64kB", "--warn-inactive")
    assert after.code == 0 and after.first_line.startswith("WAL2HTTP OK - slot wal2http active, lag ")
    assert "application_name wal2http" in after.out
    assert wal2http.stop() == 0

    dropped = cli(wal2http_bin, "slot", "drop", "--yes", "--with-publication", dsn=db.dsn)
    assert dropped.code == 0, dropped.err
    assert dropped.out.splitlines() == ["slot wal2http dropped", "publication wal2http dropped"]
    assert slot_row(db) is None and published(db) == []
    assert not db.execute("SELECT 1 FROM pg_publication")


def test_status_exit_codes_follow_the_monitoring_convention(db: Database, wal2http_bin: str) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY, v text)", tables="t")
    assert cli(wal2http_bin, "slot", "create", dsn=db.dsn).code == 0
    ok = status(wal2http_bin, db, "--warn-lag", "512MB", "--crit-lag", "2GB")
    assert ok.code == 0 and ok.first_line.startswith("WAL2HTTP OK - slot wal2http inactive, lag ")
    assert "lag_bytes=" in ok.first_line and ";536870912;2147483648;0" in ok.first_line

    write_wal(db, "t", 3000, 500)  # about 1.9 MB of WAL
    warn = status(wal2http_bin, db, "--warn-lag", "1MB", "--crit-lag", "1GB")
    assert warn.code == 1 and warn.first_line.startswith("WAL2HTTP WARNING - slot wal2http inactive, lag ")
    assert "lag" in warn.out and ">= warning 1.0 MB" in warn.out
    inactive = status(wal2http_bin, db, "--warn-inactive")
    assert inactive.code == 1 and "inactive: no consumer" in inactive.out
    crit = status(wal2http_bin, db, "--warn-lag", "100kB", "--crit-lag", "1MB", "--json")
    assert crit.code == 2 and crit.json()["status"] == "CRITICAL"
    assert crit.json()["slots"][0]["reasons"][0].endswith(">= critical 1.0 MB")

    missing = status(wal2http_bin, db, "--slot", "nosuchslot")
    assert missing.code == 2 and missing.first_line == "WAL2HTTP CRITICAL - slot nosuchslot does not exist"
    every = status(wal2http_bin, db, "--all", "--slot", "nosuchslot", "--json")
    assert every.code == 0 and [s["name"] for s in every.json()["slots"]] == ["wal2http"]

    unreachable = cli(wal2http_bin, "slot", "status", dsn="postgresql://u:s3cret-pw@127.0.0.1:1/app")
    assert unreachable.code == 3
    assert unreachable.first_line.startswith("WAL2HTTP UNKNOWN - cannot connect to PostgreSQL")
    assert "s3cret-pw" not in unreachable.out + unreachable.err
    bad_size = status(wal2http_bin, db, "--warn-lag", "lots")
    assert bad_size.code == 3 and bad_size.first_line.startswith("WAL2HTTP UNKNOWN - ")


def test_drop_refuses_an_active_slot_unless_forced(db: Database, wal2http_bin: str,
                                                   start_wal2http: Start) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    wal2http = start_wal2http("--create-slot")
    (pid,) = db.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'wal2http'")[0]

    refused = cli(wal2http_bin, "slot", "drop", "--yes", dsn=db.dsn)
    assert refused.code == 3
    assert f"PID {pid} (application_name 'wal2http'" in refused.err and "--force" in refused.err
    assert slot_row(db) is not None and wal2http.running

    forced = cli(wal2http_bin, "slot", "drop", "--yes", "--force", dsn=db.dsn)
    assert forced.code == 0, forced.err
    # wal2http reconnects after losing its connection, so it may be terminated again before the drop.
    *terminated, last = forced.out.splitlines()
    assert terminated[0] == f"terminated PID {pid} (application_name 'wal2http', client 127.0.0.1)"
    assert all(line.startswith("terminated PID ") for line in terminated) and last == "slot wal2http dropped"
    assert slot_row(db) is None
    assert wal2http.wait() == 3  # its replication connection was ended
    assert published(db) == ["public.t"]  # the publication stays without --with-publication


def test_drop_needs_confirmation_and_an_existing_slot(db: Database, wal2http_bin: str) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    assert cli(wal2http_bin, "slot", "create", dsn=db.dsn).code == 0
    unconfirmed = cli(wal2http_bin, "slot", "drop", dsn=db.dsn)  # standard input is not a terminal
    assert unconfirmed.code == 2 and "pass --yes" in unconfirmed.err
    assert slot_row(db) is not None
    assert cli(wal2http_bin, "slot", "drop", "-y", dsn=db.dsn).code == 0
    again = cli(wal2http_bin, "slot", "drop", "--yes", dsn=db.dsn)
    assert again.code == 2 and "replication slot 'wal2http' does not exist" in again.err
    tolerated = cli(wal2http_bin, "slot", "drop", "--if-exists", "--with-publication", dsn=db.dsn)
    assert tolerated.code == 2 and "pass --yes" in tolerated.err  # a publication is still there to drop
    tolerated = cli(wal2http_bin, "slot", "drop", "--if-exists", "--with-publication", "--yes", dsn=db.dsn)
    assert tolerated.code == 0
    assert tolerated.out.splitlines() == ["slot wal2http does not exist", "publication wal2http dropped"]


def drop_on_a_terminal(binary: str, dsn: str, answer: bytes, timeout: float = 30.0) -> tuple[int, str]:
    """Run ``slot drop`` with a pseudo-terminal as standard input and answer its question."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: become wal2http at once
        env = {k: v for k, v in os.environ.items() if not k.startswith("WAL2HTTP_")}
        os.execve(binary, [binary, "slot", "drop"], {**env, "WAL2HTTP_DSN": dsn})
    output, answered = b"", False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([fd], [], [], 0.1)[0]:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child exited and closed the terminal
                break
            if not chunk:
                break
            output += chunk
            if not answered and b"[y/N]" in output:
                os.write(fd, answer)
                answered = True
        else:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def test_drop_asks_on_a_terminal(db: Database, wal2http_bin: str) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    assert cli(wal2http_bin, "slot", "create", dsn=db.dsn).code == 0
    code, output = drop_on_a_terminal(wal2http_bin, db.dsn, b"n\n")
    assert f"Drop replication slot wal2http (database {db.name}, plugin pgoutput)?" in output
    assert code == 1 and "Aborted" in output and slot_row(db) is not None
    code, output = drop_on_a_terminal(wal2http_bin, db.dsn, b"y\n")
    assert code == 0 and "slot wal2http dropped" in output and slot_row(db) is None


def test_create_is_idempotent_only_when_asked(db: Database, wal2http_bin: str) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    first = cli(wal2http_bin, "slot", "create", dsn=db.dsn)
    assert first.code == 0
    assert first.out.splitlines()[1].startswith("slot wal2http created: plugin pgoutput, database ")
    again = cli(wal2http_bin, "slot", "create", dsn=db.dsn)
    assert again.code == 2
    assert "replication slot 'wal2http' already exists" in again.err and "--if-not-exists" in again.err
    accepted = cli(wal2http_bin, "slot", "create", "--if-not-exists", dsn=db.dsn)
    assert accepted.code == 0
    row = slot_row(db)
    assert row is not None
    confirmed = row[2]
    assert accepted.out.splitlines() == [
        "publication wal2http already exists: publishes insert, update, delete, truncate for 1 table: "
        "public.t",
        f"slot wal2http already exists: plugin pgoutput, database {db.name}, confirmed up to {confirmed}",
    ]


def test_create_needs_a_publication_first(db: Database, wal2http_bin: str) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    refused = cli(wal2http_bin, "slot", "create", dsn=db.dsn)
    assert refused.code == 2
    assert f"publication 'wal2http' does not exist in database '{db.name}'; create it:" in refused.err
    assert slot_row(db) is None
    missing_table = cli(wal2http_bin, "slot", "create", "--table", "public.nosuch", dsn=db.dsn)
    assert missing_table.code == 2 and "table 'public.nosuch' does not exist" in missing_table.err
    assert slot_row(db) is None and not db.execute("SELECT 1 FROM pg_publication")


def test_create_publishes_schemas_and_operations_and_warns_about_replica_identity(
    db: Database, wal2http_bin: str
) -> None:
    db.execute("CREATE SCHEMA shop")
    db.execute("CREATE TABLE shop.orders (id int PRIMARY KEY)")
    db.execute("CREATE TABLE shop.log (line text)")
    if int(db.execute("SELECT current_setting('server_version_num')")[0][0]) < 150000:
        refused = cli(wal2http_bin, "slot", "create", "--schema", "shop", dsn=db.dsn)
        assert refused.code == 3 and "--schema needs PostgreSQL 15 or later" in refused.err
        assert slot_row(db) is None and published(db) == []
        created = cli(wal2http_bin, "slot", "create", "--table", "shop.log", "--table", "shop.orders", dsn=db.dsn)
    else:
        created = cli(wal2http_bin, "slot", "create", "--schema", "shop", dsn=db.dsn)
    assert created.code == 0
    assert "warning: UPDATE and DELETE statements fail on shop.log" in created.err
    assert "ALTER TABLE shop.log REPLICA IDENTITY FULL;" in created.err
    assert "shop.orders" not in created.err
    assert published(db) == ["shop.log", "shop.orders"]

    inserts = cli(wal2http_bin, "slot", "create", "--slot", "inserts", "--publication", "inserts",
                  "--table", "shop.log", "--publish", "insert", dsn=db.dsn)
    assert inserts.code == 0 and "warning" not in inserts.err  # no update or delete: no identity needed
    assert db.execute("SELECT pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication "
                      "WHERE pubname = 'inserts'") == [(True, False, False, False)]

    other = cli(wal2http_bin, "slot", "create", "--slot", "other", "--table", "shop.orders", dsn=db.dsn)
    assert other.code == 0
    assert "publication wal2http already exists and was not changed" in other.err
    assert published(db) == ["shop.log", "shop.orders"]  # not altered
