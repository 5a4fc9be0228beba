"""A primary fails over to its standby while wal2http streams: 17+ goes on from the synced failover
slot with no change lost; below 17 the new primary has no slot and wal2http halts with the recovery."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port, wait_until
from tests.support.pgcluster import SUPERUSER, PgCluster, _conf_value
from tests.support.process import Wal2http
from tests.support.receiver import Receiver

FAILOVER_VERSION = 170000
STANDBY_SLOT = "standby1"


class Standby(PgCluster):
    """A standby made from a cold copy of a stopped primary's data directory (there is no pg_basebackup
    among the packaged binaries): no slots of its own, streaming from the primary's physical slot."""

    def __init__(self, primary: PgCluster) -> None:
        super().__init__(primary.bindir, primary.settings)
        self.primary = primary

    def start(self) -> None:
        source = self.primary._require_datadir()
        self.datadir = Path(str(source) + "-standby")
        shutil.copytree(source, self.datadir, symlinks=True)
        for entry in (self.datadir / "pg_replslot").iterdir():
            shutil.rmtree(entry)
        (self.datadir / "postmaster.pid").unlink(missing_ok=True)
        (self.datadir / "standby.signal").touch()
        self._port = free_port()
        settings = {
            "port": str(self._port),
            "unix_socket_directories": str(self.datadir),
            "primary_conninfo": f"host={self.primary.host} port={self.primary.port} user={SUPERUSER} dbname=postgres",
            "primary_slot_name": STANDBY_SLOT,
            "hot_standby_feedback": "on",
        }
        if self.primary.version >= FAILOVER_VERSION:
            settings["sync_replication_slots"] = "on"
        with open(self.datadir / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# standby\n" + "".join(f"{k} = {_conf_value(v)}\n" for k, v in settings.items()))
        if self._as_postgres:
            for path in [self.datadir, *self.datadir.rglob("*")]:
                shutil.chown(path, SUPERUSER, SUPERUSER)
        self._pg_ctl("start")


@pytest.fixture
def pair() -> Iterator[tuple[PgCluster, Standby, int]]:
    primary = PgCluster(settings={"wal_sender_timeout": "10s"})
    primary.start()
    version = primary.version
    standby = Standby(primary)
    try:
        yield primary, standby, version
    finally:
        standby.cleanup()
        primary.cleanup()


def rows_of(receiver: Receiver) -> list[int]:
    return [e["new"]["id"] for e in receiver.events() if e["op"] == "insert"]


def first_deliveries(ids: list[int]) -> list[int]:
    seen: set[int] = set()
    return [i for i in ids if not (i in seen or seen.add(i))]  # type: ignore[func-returns-value]


def test_streaming_survives_a_failover(pair: tuple[PgCluster, Standby, int], receiver: Receiver,
                                       wal2http_bin: str) -> None:
    primary, standby, version = pair
    failover = version >= FAILOVER_VERSION
    primary.execute("SELECT pg_create_physical_replication_slot(%s, true)", (STANDBY_SLOT,))
    primary.execute("CREATE TABLE t (id int PRIMARY KEY)")
    primary.execute("CREATE PUBLICATION wal2http FOR TABLE t")
    primary.stop()
    standby.start()  # the cold copy is taken here, while the primary is stopped
    primary._pg_ctl("start")
    if failover:  # the primary only: once promoted, the standby has no standby of its own to wait for
        primary.execute(f"ALTER SYSTEM SET synchronized_standby_slots = '{STANDBY_SLOT}'")
        primary.execute("SELECT pg_reload_conf()")
    dsn = (f"host={primary.host},{standby.host} port={primary.port},{standby.port} dbname=postgres "
           f"user={SUPERUSER} target_session_attrs=read-write connect_timeout=2")
    args = ["run", "--create-slot", "--sink", "http", "--http-url", receiver.url, "--reconnect-max-wait", "1",
            "--slot-poll-seconds", "0"]
    if failover:
        args.append("--failover")
    wal2http = Wal2http(wal2http_bin, args, {"WAL2HTTP_DSN": dsn}).start()
    try:
        wal2http.wait_streaming()
        for i in range(1, 101):
            primary.execute("INSERT INTO t VALUES (%s)", (i,))
        wait_until(lambda: len(set(rows_of(receiver))) >= 100, what="rows 1-100 delivered", timeout=60)
        if failover:
            primary.execute("SELECT pg_log_standby_snapshot()")
            confirmed = primary.confirmed_flush_lsn("wal2http")
            assert confirmed is not None

            def synced() -> bool:
                rows = standby.execute("SELECT synced, confirmed_flush_lsn FROM pg_replication_slots "
                                       "WHERE slot_name = 'wal2http'")
                return bool(rows) and rows[0][0] and rows[0][1] is not None

            wait_until(synced, timeout=60, interval=0.5, what="the failover slot synced to the standby")
        primary.stop("immediate")  # the primary dies
        standby.execute("SELECT pg_promote()")
        if not failover:
            code = wal2http.wait(60)
            assert code == 3, wal2http.stderr
            assert "wal2http slot create --backfill" in wal2http.stderr  # the recovery, with the existing rows
            return
        for i in range(101, 201):
            standby.execute("INSERT INTO t VALUES (%s)", (i,))
        try:
            wait_until(lambda: len(set(rows_of(receiver))) >= 200, what="rows 101-200 delivered after promotion",
                       timeout=60, interval=0.2)
        except TimeoutError as e:
            raise AssertionError(f"{e}\n{wal2http.stderr}\n{standby._log_tail(40)}") from None
        assert wal2http.running, wal2http.stderr
        assert first_deliveries(rows_of(receiver)) == list(range(1, 201))
    finally:
        wal2http.kill()
