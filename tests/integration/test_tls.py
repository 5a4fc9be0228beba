"""TLS to PostgreSQL (reported, required, verified) and mutual TLS to the receiver, with real certificates."""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.certs import CertificateAuthority, KeyPair
from tests.support.pgcluster import Database, PgCluster
from tests.support.process import Start, Wal2http, check, cli, run_once
from tests.support.receiver import Receiver
from tests.support.replication import publish


@pytest.fixture(scope="module")
def pki() -> Iterator[tuple[CertificateAuthority, KeyPair]]:
    """A CA and a server certificate for 127.0.0.1, readable by the postgres user when we are root."""
    directory = Path(tempfile.mkdtemp(prefix="wal2http-pki-"))
    ca = CertificateAuthority(directory)
    server = ca.issue("server", server=True)
    if os.geteuid() == 0:
        # PostgreSQL refuses a key file that is not owned by it with mode 0600 (or root 0640).
        for path in (directory, server.cert, server.key):
            shutil.chown(path, "postgres", "postgres")
        directory.chmod(0o755)
    server.key.chmod(0o600)
    yield ca, server
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def tls_cluster(pki: tuple[CertificateAuthority, KeyPair]) -> Iterator[PgCluster]:
    _, server = pki
    cluster = PgCluster(
        settings={"ssl": "on", "ssl_cert_file": str(server.cert), "ssl_key_file": str(server.key)}
    )
    cluster.start()
    yield cluster
    cluster.cleanup()


@pytest.fixture
def tls_db(tls_cluster: PgCluster, request: pytest.FixtureRequest) -> Iterator[Database]:
    database = tls_cluster.create_database(request.node.name.lower().replace("[", "_").strip("]")[:63])
    publish(database, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    yield database
    database.drop()


def start(wal2http_bin: str, dsn: str, receiver: Receiver, *args: str) -> Wal2http:
    process = Wal2http(
        wal2http_bin,
        ["run", "--create-slot", "--sink", "http", "--http-url", receiver.url, *args],
        {"WAL2HTTP_DSN": dsn},
    ).start()
    process.wait_streaming()
    return process


def test_sslmode_require_streams_and_reports_tls(
    wal2http_bin: str, tls_db: Database, receiver: Receiver
) -> None:
    process = start(wal2http_bin, f"{tls_db.dsn} sslmode=require", receiver, "--require-tls")
    try:
        tls_db.execute("INSERT INTO t VALUES (1)")
        (event,) = receiver.wait_for_events(1)
        assert process.stop() == 0
    finally:
        process.kill()
    assert event["new"] == {"id": 1}
    where = f"postgres@127.0.0.1:{tls_db.cluster.port}/{tls_db.name}"
    for kind in ("connection", "replication connection"):
        assert f"INFO wal2http.pg.connection: {kind} to {where}: TLS TLSv1.3, cipher TLS_" in process.stderr


def test_verify_full_checks_the_server_certificate(
    wal2http_bin: str,
    tls_db: Database,
    receiver: Receiver,
    pki: tuple[CertificateAuthority, KeyPair],
    tmp_path: Path,
) -> None:
    ca, _ = pki
    process = start(wal2http_bin, f"{tls_db.dsn} sslmode=verify-full sslrootcert={ca.cert}", receiver)
    try:
        assert process.stop() == 0
    finally:
        process.kill()
    assert ": TLS TLSv1.3" in process.stderr
    stranger = CertificateAuthority(tmp_path / "other-ca", name="someone else")
    code, _, err = run_once(
        wal2http_bin,
        ["run"],
        {"WAL2HTTP_DSN": f"{tls_db.dsn} sslmode=verify-full sslrootcert={stranger.cert}"},
    )
    assert code == 3 and "certificate verify failed" in err


def test_require_tls_against_a_server_without_tls_exits_3(wal2http_bin: str, db: Database) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    code, _, err = run_once(wal2http_bin, ["run", "--create-slot", "--require-tls"], {"WAL2HTTP_DSN": db.dsn})
    assert code == 3
    assert (
        "cannot connect to PostgreSQL" in err and "server does not support SSL, but SSL was required" in err
    )
    assert "--require-tls is set: the server must accept TLS connections" in err
    assert db.execute("SELECT count(*) FROM pg_replication_slots")[0][0] == 0, "nothing was done"


def test_require_tls_refuses_an_unencrypted_connection_even_when_possible(
    wal2http_bin: str, tls_db: Database
) -> None:
    code, _, err = run_once(
        wal2http_bin, ["run", "--require-tls"], {"WAL2HTTP_DSN": f"{tls_db.dsn} sslmode=disable"}
    )
    assert code == 3
    assert (
        f"connection to postgres@127.0.0.1:{tls_db.cluster.port}/{tls_db.name} does not use TLS and "
        "--require-tls is set" in err
    )


def test_check_config_and_the_slot_commands_report_and_require_tls(wal2http_bin: str, tls_db: Database) -> None:
    """--require-tls and the TLS report hold for every command that connects, not only run."""
    dsn = f"{tls_db.dsn} sslmode=require"
    checked = cli(wal2http_bin, "check-config", "--json", "--create-slot", "--require-tls", dsn=dsn)
    assert checked.code == 0, checked.out
    checks = {c["name"]: c for c in checked.json()["checks"]}
    assert checks["database"]["status"] == "ok" and ", TLS TLSv1.3, cipher TLS_" in checks["database"]["detail"]
    assert checks["dsn"]["detail"].endswith(f"TLS required (--require-tls): {dsn}")
    created = cli(wal2http_bin, "slot", "create", "--require-tls", dsn=dsn)
    assert created.code == 0, created.err
    status = cli(wal2http_bin, "slot", "status", "--require-tls", dsn=dsn)
    assert status.code == 0 and status.first_line.startswith("WAL2HTTP OK"), status.out
    plain = f"{tls_db.dsn} sslmode=disable"
    refused = "does not use TLS and --require-tls is set"
    checked = cli(wal2http_bin, "check-config", "--json", "--require-tls", dsn=plain)
    checks = {c["name"]: c for c in checked.json()["checks"]}
    assert checked.code == 3 and checks["database"]["status"] == "failed"
    assert refused in checks["database"]["detail"] and "slot" not in checks
    status = cli(wal2http_bin, "slot", "status", "--require-tls", dsn=plain)
    assert status.code == 3 and status.first_line.startswith("WAL2HTTP UNKNOWN") and refused in status.out
    for args in (("slot", "create", "--if-not-exists"), ("slot", "drop", "--yes")):
        result = cli(wal2http_bin, *args, "--require-tls", dsn=plain)
        assert result.code == 3 and refused in result.err, (args, result.err)
    assert tls_db.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'wal2http'")[0][0] == 1
    dropped = cli(wal2http_bin, "slot", "drop", "--yes", "--require-tls", dsn=dsn)
    assert dropped.code == 0, dropped.err


def test_the_new_commands_refuse_a_password_in_dsn_and_read_dsn_file(
    wal2http_bin: str, db: Database, tmp_path: Path
) -> None:
    """slot and check-config build their source like run: --dsn-file works, a password in --dsn is refused."""
    publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    with_password = f"postgresql://postgres:pw-in-flag-s3cret@127.0.0.1:{db.cluster.port}/{db.name}"
    for args in (("check-config",), ("slot", "create"), ("slot", "drop", "--yes")):
        code, out, err = run_once(wal2http_bin, [*args, "--dsn", with_password], {"WAL2HTTP_DSN": ""})
        assert code == 2 and "--dsn must not contain a password" in err, (args, err)
        assert "pw-in-flag-s3cret" not in out + err
    code, out, _ = run_once(wal2http_bin, ["slot", "status", "--dsn", with_password], {"WAL2HTTP_DSN": ""})
    assert code == 3 and out.startswith("WAL2HTTP UNKNOWN") and "pw-in-flag-s3cret" not in out
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(f"postgresql://postgres:file-s3cret@127.0.0.1:{db.cluster.port}/{db.name}\n")
    env = {"WAL2HTTP_DSN": "", "DATABASE_URL": ""}
    code, out, err = run_once(wal2http_bin, ["slot", "create", "--dsn-file", str(dsn_file)], env)
    assert code == 0, err
    code, out, err = run_once(wal2http_bin, ["check-config", "--dsn-file", str(dsn_file)], env)
    assert code == 0, out + err
    assert "postgres:***@127.0.0.1" in out and "file-s3cret" not in out + err


def test_without_tls_on_loopback_it_says_so_without_a_warning(
    db: Database, receiver: Receiver, start_wal2http: Start
) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    process = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url)
    assert process.stop() == 0
    assert (
        f"replication connection to postgres@127.0.0.1:{db.cluster.port}/{db.name}: no TLS (local)"
        in process.stderr
    )
    assert "WARNING" not in process.stderr


# -- mutual TLS with the receiver ------------------------------------------------------------------


@pytest.fixture
def mtls_receiver(tmp_path: Path) -> Iterator[tuple[Receiver, CertificateAuthority]]:
    """An HTTPS receiver for 127.0.0.1 that only talks to clients with a certificate from its CA."""
    ca = CertificateAuthority(tmp_path / "pki")
    server = ca.issue("receiver", server=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca.cert))
    context.load_cert_chain(str(server.cert), str(server.key))
    context.verify_mode = ssl.CERT_REQUIRED
    with Receiver(ssl_context=context) as receiver:
        yield receiver, ca


def test_mutual_tls_delivers(
    db: Database, mtls_receiver: tuple[Receiver, CertificateAuthority], start_wal2http: Start
) -> None:
    receiver, ca = mtls_receiver
    client = ca.issue("wal2http", server=False)
    publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    assert receiver.url.startswith("https://127.0.0.1:")
    process = start_wal2http(
        "--create-slot",
        "--sink",
        "http",
        "--http-url",
        receiver.url,
        "--ca-file",
        str(ca.cert),
        "--client-cert",
        str(client.cert),
        "--client-key",
        str(client.key),
    )
    db.execute("INSERT INTO t VALUES (1), (2)")
    events = receiver.wait_for_events(2)
    assert process.stop() == 0
    assert [e["new"]["id"] for e in events] == [1, 2]
    assert receiver.tls_failures == []


def test_check_config_verifies_the_receiver_as_run_does(
    db: Database, mtls_receiver: tuple[Receiver, CertificateAuthority], wal2http_bin: str
) -> None:
    """check-config's handshake trusts --ca-file and presents the client certificate, as run's requests do:
    a receiver run delivers to passes, one whose certificate run would refuse fails."""
    receiver, ca = mtls_receiver
    client = ca.issue("wal2http", server=False)
    publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    sink = ("--create-slot", "--sink", "http", "--http-url", receiver.url,
            "--client-cert", str(client.cert), "--client-key", str(client.key))
    trusted, checks = check(wal2http_bin, db.dsn, *sink, "--ca-file", str(ca.cert))
    assert trusted.code == 0, trusted.out
    assert "with a valid certificate for 127.0.0.1" in checks["sink"]["detail"]
    untrusted, checks = check(wal2http_bin, db.dsn, *sink)
    assert untrusted.code == 2 and checks["sink"]["status"] == "failed"
    assert checks["sink"]["detail"].endswith(" failed: self-signed certificate in certificate chain")
    missing = str(ca.directory / "missing.pem")  # run's requests would fail on each attempt too
    unreadable, checks = check(wal2http_bin, db.dsn, *sink, env={"REQUESTS_CA_BUNDLE": missing})
    assert unreadable.code == 2 and checks["sink"]["detail"].startswith("cannot load the CAs to verify the receiver")
    assert receiver.requests == []


def test_mutual_tls_without_a_client_certificate_delivers_nothing(
    db: Database, mtls_receiver: tuple[Receiver, CertificateAuthority], start_wal2http: Start
) -> None:
    receiver, ca = mtls_receiver
    publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    process = start_wal2http(
        "--create-slot", "--sink", "http", "--http-url", receiver.url, "--ca-file", str(ca.cert)
    )
    db.execute("INSERT INTO t VALUES (1)")
    receiver.wait_for_tls_failures(1)
    assert process.stop() == 0  # retried until stopped; nothing confirmed, nothing lost
    assert receiver.requests == []
    assert "failed: cannot reach receiver" in process.stderr


def test_the_receiver_certificate_is_always_verified(
    db: Database, mtls_receiver: tuple[Receiver, CertificateAuthority], start_wal2http: Start
) -> None:
    receiver, ca = mtls_receiver
    client = ca.issue("wal2http", server=False)
    publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    # No --ca-file: the private CA is not trusted, whatever the client certificate.
    process = start_wal2http(
        "--create-slot",
        "--sink",
        "http",
        "--http-url",
        receiver.url,
        "--client-cert",
        str(client.cert),
        "--client-key",
        str(client.key),
    )
    db.execute("INSERT INTO t VALUES (1)")
    receiver.wait_for_tls_failures(1)
    assert process.stop() == 0
    assert receiver.requests == []
    assert "CERTIFICATE_VERIFY_FAILED" in process.stderr or "certificate verify failed" in process.stderr
