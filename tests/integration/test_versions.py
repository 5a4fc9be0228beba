"""What differs between PostgreSQL versions and managed services: roles, switches, failover slots."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.pgcluster import Database, PgCluster
from tests.support.process import Start, check, cli, failures
from tests.support.receiver import Receiver
from tests.support.replication import ready

FAILOVER_VERSION = 170000


def server_version(db: Database) -> int:
    return int(db.execute("SELECT current_setting('server_version_num')")[0][0])


@pytest.fixture
def member_of(db: Database) -> Iterator[str]:
    """A login role without REPLICATION; the test makes it a member of managed services' roles."""
    role = f"managed_{db.name}"[:63]
    db.execute(f'CREATE ROLE "{role}" LOGIN')
    db.execute(f'GRANT ALL ON SCHEMA public TO "{role}"')
    yield role
    db.execute(f'DROP OWNED BY "{role}"')
    db.execute(f'DROP ROLE "{role}"')


def ensure_role(db: Database, name: str) -> None:
    db.execute(f"DO $$BEGIN CREATE ROLE {name} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$")


def test_a_member_of_rds_replication_is_not_refused(db: Database, member_of: str, wal2http_bin: str) -> None:
    ready(db)
    ensure_role(db, "rds_replication")
    db.execute(f'GRANT rds_replication TO "{member_of}"')
    result, checks = check(wal2http_bin, db.cluster.dsn(db.name, user=member_of))
    privilege = checks["replication privilege"]
    assert privilege["status"] == "ok", result.out
    assert privilege["detail"] == f"role {member_of} is a member of rds_replication (Amazon RDS / Aurora)"
    assert "replication privilege" not in failures(checks)


def test_an_admin_role_of_a_managed_service_gives_a_warning(db: Database, member_of: str,
                                                            wal2http_bin: str) -> None:
    ready(db)
    ensure_role(db, "cloudsqlsuperuser")
    db.execute(f'GRANT cloudsqlsuperuser TO "{member_of}"')
    result, checks = check(wal2http_bin, db.cluster.dsn(db.name, user=member_of))
    privilege = checks["replication privilege"]
    assert privilege["status"] == "warning", result.out
    assert "member of cloudsqlsuperuser" in privilege["detail"] and "the server decides" in privilege["detail"]
    # slot create goes past the check (the server then decides: here it refuses, as plain PostgreSQL does).
    created = cli(wal2http_bin, "slot", "create", dsn=db.cluster.dsn(db.name, user=member_of),
                  env={"WAL2HTTP_SLOT": "other"})
    assert "may not use replication slots" not in created.err  # not wal2http's refusal: the server's
    assert created.code == 3 and "cannot create replication slot 'other'" in created.err


def test_without_any_grant_the_role_is_refused(db: Database, member_of: str, wal2http_bin: str) -> None:
    ready(db)
    result, checks = check(wal2http_bin, db.cluster.dsn(db.name, user=member_of))
    assert result.code == 3 and failures(checks) == ["replication privilege"]


@pytest.fixture(scope="module")
def rds_like() -> Iterator[PgCluster]:
    """A server showing Amazon RDS's switch for logical decoding, turned off."""
    cluster = PgCluster(settings={"wal_level": "replica", "rds.logical_replication": "0"})
    cluster.start()
    cluster.execute("CREATE TABLE t (id int PRIMARY KEY)")
    cluster.execute("CREATE PUBLICATION wal2http FOR TABLE t")
    yield cluster
    cluster.cleanup()


def test_the_wal_level_fix_names_the_services_switch(rds_like: PgCluster, wal2http_bin: str) -> None:
    result, checks = check(wal2http_bin, rds_like.dsn(), "--create-slot")
    assert result.code == 3 and failures(checks) == ["wal_level"]
    fix = checks["wal_level"]["fix"]
    assert fix.startswith("set rds.logical_replication = 1 (now 0) in the DB parameter group"), fix


def test_failover_slots(db: Database, wal2http_bin: str) -> None:
    """17+: created with failover and shown by slot status; below 17: refused with the reason."""
    publish_ready(db)
    created = cli(wal2http_bin, "slot", "create", "--failover", dsn=db.dsn)
    if server_version(db) < FAILOVER_VERSION:
        assert created.code == 3, created.err
        assert "has no failover slots (they came with 17)" in created.err
        assert db.execute("SELECT count(*) FROM pg_replication_slots") == [(0,)]
        return
    assert created.code == 0, created.err
    assert "synchronized_standby_slots is empty" in created.err  # a warning: nothing waits for a standby
    assert db.execute("SELECT failover FROM pg_replication_slots WHERE slot_name = 'wal2http'") == [(True,)]
    status = cli(wal2http_bin, "slot", "status", "--json", dsn=db.dsn)
    slot = status.json()["slots"][0]
    assert slot["failover"] is True and slot["synced"] is False
    assert "failover             yes" in cli(wal2http_bin, "slot", "status", dsn=db.dsn).out


def test_slot_status_shows_what_the_server_has(db: Database, wal2http_bin: str) -> None:
    publish_ready(db)
    db.execute("SELECT pg_create_logical_replication_slot('wal2http', 'pgoutput')")
    slot = cli(wal2http_bin, "slot", "status", "--json", dsn=db.dsn).json()["slots"][0]
    version = server_version(db)
    assert (slot["conflicting"] is not None) == (version >= 160000)
    assert (slot["failover"] is not None) == (slot["synced"] is not None) == (version >= FAILOVER_VERSION)
    assert slot["invalidation_reason"] is None


def publish_ready(db: Database) -> None:
    db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    db.execute("CREATE PUBLICATION wal2http FOR TABLE t")


def test_published_generated_columns_arrive_as_values(db: Database, receiver: Receiver,
                                                     start_wal2http: Start) -> None:
    """18 can publish stored generated columns; earlier versions never send them."""
    version = server_version(db)
    db.execute("CREATE TABLE g (id int PRIMARY KEY, a int, doubled int GENERATED ALWAYS AS (a * 2) STORED)")
    options = " WITH (publish_generated_columns = stored)" if version >= 180000 else ""
    db.execute(f"CREATE PUBLICATION wal2http FOR TABLE g{options}")
    start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url)
    db.execute("INSERT INTO g (id, a) VALUES (1, 21)")
    (event,) = receiver.wait_for_events(1)
    expected = {"id": 1, "a": 21, "doubled": 42} if version >= 180000 else {"id": 1, "a": 21}
    assert event["new"] == expected
