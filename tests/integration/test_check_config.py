"""``check-config`` catches each mistake on its own, and ``run`` and ``slot create`` say the same."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port, wait_until
from tests.support.fake_hook0 import FakeHook0
from tests.support.pgcluster import Database, PgCluster
from tests.support.process import Wal2http, check, cli, failures
from tests.support.receiver import Receiver
from tests.support.replication import publish, ready, slot_row


@pytest.fixture(scope="module")
def replica_only() -> Iterator[PgCluster]:
    """A second throwaway server with wal_level=replica, where logical decoding is impossible."""
    cluster = PgCluster(settings={"wal_level": "replica"})
    cluster.start()
    cluster.execute("CREATE TABLE t (id int PRIMARY KEY)")
    cluster.execute("CREATE PUBLICATION wal2http FOR TABLE t")
    yield cluster
    cluster.cleanup()


def test_a_ready_setup_passes_and_no_secret_is_printed(db: Database, receiver: Receiver,
                                                       wal2http_bin: str) -> None:
    ready(db)
    dsn = f"postgresql://postgres:s3cret-pw@127.0.0.1:{db.cluster.port}/{db.name}"
    url = f"{receiver.url}/hook?token=t0ken-value"
    result, checks = check(wal2http_bin, dsn, "--sink", "http", "--http-url", url)
    assert result.code == 0, result.out
    assert failures(checks) == []
    assert checks["wal_level"]["detail"] == "logical"
    assert checks["slot"]["status"] == "ok" and checks["publication"]["detail"].endswith("public.t")
    assert "without TLS" in checks["database"]["detail"]
    assert "accepts TCP connections" in checks["sink"]["detail"]
    assert "s3cret-pw" not in result.out + result.err and "t0ken-value" not in result.out + result.err
    assert receiver.requests == []  # nothing was sent
    lines = result.out.splitlines()
    assert lines[0].startswith("ok       dsn: host 127.0.0.1") and lines[-1].startswith("0 failed, ")


def test_wal_level_not_logical(replica_only: PgCluster, wal2http_bin: str) -> None:
    dsn = replica_only.dsn()
    result, checks = check(wal2http_bin, dsn, "--create-slot")
    assert result.code == 3 and failures(checks) == ["wal_level"]
    fix = "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"
    assert checks["wal_level"]["detail"] == "wal_level is 'replica'; logical decoding needs 'logical'"
    assert checks["wal_level"]["fix"] == fix
    assert "FAILED   wal_level: wal_level is 'replica'" in result.out and f"fix: {fix}" in result.out
    # slot create and run --create-slot stop on the same check, with the same words, before creating anything.
    message = f"{checks['wal_level']['detail']}; {fix}"
    created = cli(wal2http_bin, "slot", "create", dsn=dsn)
    assert created.code == 3 and message in created.err
    run = cli(wal2http_bin, "run", "--create-slot", dsn=dsn)
    assert run.code == 3 and message in run.err
    assert replica_only.execute("SELECT count(*) FROM pg_replication_slots") == [(0,)]


def test_role_without_replication(db: Database, wal2http_bin: str) -> None:
    ready(db)
    role = f"norep_{db.name}"[:63]
    db.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        result, checks = check(wal2http_bin, db.cluster.dsn(db.name, user=role))
    finally:
        db.execute(f'DROP ROLE "{role}"')
    assert result.code == 3 and failures(checks) == ["replication privilege"]
    assert "may not use replication slots" in checks["replication privilege"]["detail"]
    assert checks["replication privilege"]["fix"] == f"ALTER ROLE {role} REPLICATION;"


def test_missing_publication_gives_the_message_run_gives(db: Database, wal2http_bin: str) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    result, checks = check(wal2http_bin, db.dsn, "--create-slot")
    assert result.code == 2 and failures(checks) == ["publication"]
    publication = checks["publication"]
    assert publication["detail"] == f"publication 'wal2http' does not exist in database '{db.name}'"
    assert "wal2http slot create --publication wal2http --table TABLE" in publication["fix"]
    run = cli(wal2http_bin, "run", "--create-slot", dsn=db.dsn)
    assert run.code == 2 and f"{publication['detail']}; {publication['fix']}" in run.err
    assert slot_row(db) is None  # nothing was created


def test_table_without_replica_identity(db: Database, wal2http_bin: str) -> None:
    publish(db, "CREATE TABLE keyed (id int PRIMARY KEY)", "CREATE TABLE bare (v text)",
            "CREATE TABLE full_row (v text)", "ALTER TABLE full_row REPLICA IDENTITY FULL",
            tables="keyed, bare, full_row")
    db.execute("SELECT pg_create_logical_replication_slot('wal2http', 'pgoutput')")
    result, checks = check(wal2http_bin, db.dsn)
    # The primary refuses their UPDATE and DELETE, the stream is unharmed: a warning, as run logs it.
    assert result.code == 0 and failures(checks) == [] and checks["replica identity"]["status"] == "warning"
    identity = checks["replica identity"]
    assert identity["detail"].startswith("UPDATE and DELETE statements fail on public.bare:")
    assert "keyed" not in identity["detail"] and "full_row" not in identity["detail"]
    assert "ALTER TABLE public.bare REPLICA IDENTITY FULL;" in identity["fix"]


def test_slot_with_the_wrong_plugin(db: Database, wal2http_bin: str) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    db.execute("SELECT pg_create_logical_replication_slot('wal2http', 'test_decoding')")
    result, checks = check(wal2http_bin, db.dsn)
    assert result.code == 2 and failures(checks) == ["slot"]
    assert checks["slot"]["detail"] == (
        "replication slot 'wal2http' uses plugin 'test_decoding'; wal2http needs pgoutput"
    )
    assert "wal2http slot drop --slot wal2http" in checks["slot"]["fix"]


def test_sink_port_with_nothing_listening(db: Database, wal2http_bin: str) -> None:
    ready(db)
    port = free_port()
    result, checks = check(wal2http_bin, db.dsn, "--sink", "http", "--http-url", f"http://127.0.0.1:{port}/")
    assert result.code == 2 and failures(checks) == ["sink"]
    assert checks["sink"]["detail"].startswith(f"cannot connect to 127.0.0.1:{port}: ")
    assert "FAILED   sink: cannot connect" in result.out


def test_invalid_url_offline_and_online(db: Database, wal2http_bin: str) -> None:
    unreachable = "postgresql://u@127.0.0.1:1/app"
    result, checks = check(wal2http_bin, unreachable, "--offline", "--sink", "http", "--http-url", "ftp://x/")
    assert result.code == 2 and failures(checks) == ["sink settings"]
    assert "database" not in checks  # --offline connects to nothing
    assert checks["sink settings"]["detail"] == "--http-url must start with http:// or https://"
    ready(db)
    result, checks = check(wal2http_bin, db.dsn, "--sink", "http", "--http-url", "https://user:pw@example.com/")
    assert result.code == 2 and failures(checks) == ["sink settings"] and "sink" not in checks
    assert "must not contain credentials" in checks["sink settings"]["detail"]


def test_hook0_application_id_must_be_a_uuid(db: Database, wal2http_bin: str) -> None:
    ready(db)
    application = "0b8e9c2e-5d2a-4f6e-9a51-3c1d7e0f4a12"
    with FakeHook0(application_id=application, token="hook0-s3cret-token") as fake:
        token = {"HOOK0_API_TOKEN": fake.token}
        hook0 = ("--sink", "hook0", "--hook0-api-url", fake.url, "--hook0-mode", "changes",
                 "--hook0-ensure-event-types")
        result, checks = check(wal2http_bin, db.dsn, *hook0, "--hook0-application-id", "app-42", env=token)
        assert result.code == 2 and failures(checks) == ["sink settings"] and "sink" not in checks
        assert checks["sink settings"]["detail"].startswith("--hook0-application-id must be a UUID, not 'app-42'")
        assert fake.requests == []  # an invalid setting: nothing is asked of Hook0
        result, checks = check(wal2http_bin, db.dsn, *hook0, "--hook0-application-id", application, env=token)
        assert result.code == 0 and failures(checks) == []
        assert f"application {application}" in checks["sink settings"]["detail"]
        assert "accepts TCP connections" in checks["sink"]["detail"]
        assert {r.method for r in fake.requests} == {"GET"} and fake.events() == []  # reads only
        assert "hook0-s3cret-token" not in result.out + result.err


def test_unreachable_database(wal2http_bin: str) -> None:
    result, checks = check(wal2http_bin, "postgresql://u:s3cret-pw@127.0.0.1:1/app")
    assert result.code == 3 and failures(checks) == ["database"]
    assert checks["database"]["detail"].startswith("cannot connect to PostgreSQL")
    assert "s3cret-pw" not in result.out + result.err


def _start_outcome(binary: str, dsn: str, *args: str, env: dict[str, str] | None = None,
                   timeout: float = 30.0) -> tuple[int | None, str]:
    """What ``run`` does with the same options: its exit code when it stops at start, None when it streams."""
    process = Wal2http(binary, ["run", *args], {"WAL2HTTP_DSN": dsn, **(env or {})})
    process.start()
    try:
        wait_until(lambda: not process.running or "streaming from slot" in process.stderr, timeout=timeout,
                   what="run to stop or stream")
        if process.running:
            return None, process.stderr
        return process.wait(5), process.stderr
    finally:
        process.kill()


def _unwritable(tmp_path: Path) -> str:
    """A path no one can create, not even root: its directory is a regular file."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    return str(blocker / "out.jsonl")


# Each condition, and whether it stops run (the exit code) or not (None): check-config must agree.
CONDITIONS: dict[str, int | None] = {
    "unwritable dead-letter path": 2,
    "unwritable file sink": 2,
    "insert-only table without replica identity": None,
    "missing publication": 2,
    "slot with another plugin": 2,
    "hook0 outbox table missing": 2,
    "ready": None,
}


@pytest.mark.parametrize("condition", sorted(CONDITIONS))
def test_check_config_fails_exactly_what_stops_run(condition: str, db: Database, wal2http_bin: str,
                                                   tmp_path: Path) -> None:
    args: list[str] = []
    if condition == "insert-only table without replica identity":
        publish(db, "CREATE TABLE log (v text)", tables="log")  # publishes updates and deletes too
    elif condition != "missing publication":
        publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    plugin = "test_decoding" if condition == "slot with another plugin" else "pgoutput"
    db.execute("SELECT pg_create_logical_replication_slot('wal2http', %s)", (plugin,))
    if condition == "unwritable dead-letter path":
        args = ["--on-reject", "dead-letter", "--dead-letter-path", _unwritable(tmp_path)]
    elif condition == "unwritable file sink":
        args = ["--sink", "file", "--file-path", _unwritable(tmp_path)]
    with FakeHook0() as hook0:
        env = {"HOOK0_API_TOKEN": hook0.token}
        if condition == "hook0 outbox table missing":
            args = ["--sink", "hook0", "--hook0-api-url", hook0.url, "--hook0-application-id", hook0.application_id]
        result, checks = check(wal2http_bin, db.dsn, *args, env=env)
        code, stderr = _start_outcome(wal2http_bin, db.dsn, *args, env=env)
    assert code == CONDITIONS[condition], stderr
    assert result.code == (code or 0), result.out  # fatal in both, with the same exit code, or in neither
    for name in failures(checks):  # run names each failure check-config shows
        assert checks[name]["detail"] in stderr, (name, stderr)
    if condition == "missing publication":
        assert "backfill" not in checks or "every published table can be read" not in checks["backfill"]["detail"]
    if condition == "insert-only table without replica identity":
        assert checks["replica identity"]["status"] == "warning"
        assert "ALTER TABLE public.log REPLICA IDENTITY FULL;" in checks["replica identity"]["fix"]
        assert checks["replica identity"]["detail"] in stderr  # run warns with the same words


def test_run_reports_every_failed_start_check_at_once(db: Database, wal2http_bin: str) -> None:
    ready(db)  # the publication and the slot are in this database; the DSN names another
    other = db.cluster.create_database(f"{db.name[:50]}_other")
    try:
        result, checks = check(wal2http_bin, other.dsn)
        code, stderr = _start_outcome(wal2http_bin, other.dsn)
    finally:
        other.drop()
    assert sorted(failures(checks)) == ["publication", "slot"]
    assert code == result.code == 2
    assert f"publication 'wal2http' does not exist in database '{other.name}'" in stderr
    assert f"replication slot 'wal2http' belongs to database '{db.name}'" in stderr
