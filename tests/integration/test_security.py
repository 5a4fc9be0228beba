"""Signed and authenticated delivery end to end, and no secret in any output, whatever happens."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path
from urllib.parse import quote

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tests.support.pgcluster import Database
from tests.support.process import Start, Wal2http, run_once
from tests.support.receiver import Receiver
from tests.support.replication import publish


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def http_sink(receiver: Receiver, *more: str) -> list[str]:
    return ["--create-slot", "--sink", "http", "--http-url", receiver.url, *more]


def test_single_events_are_signed_over_the_bytes_sent(
    db: Database, receiver: Receiver, start_wal2http: Start
) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY, note text, doc jsonb)", tables="t")
    secret = new_secret()
    wal2http = start_wal2http(*http_sink(receiver), env={"WAL2HTTP_SIGNING_SECRET": secret})
    receiver.fail_next(1, status=503)  # the retry is signed again, with its own timestamp
    db.execute(
        """INSERT INTO t VALUES (1, 'é "quoted" \\ ✓', '{"n": 1.50, "a": [1, "x"]}'), (2, NULL, NULL)"""
    )
    receiver.wait_for_events(2)
    assert wal2http.stop() == 0
    requests = receiver.requests
    assert [r.status for r in requests] == [503, 200, 200]
    for request in requests:
        assert request.headers["webhook-signature"].startswith("v1,")
        payload = Webhook(secret).verify(request.body, request.headers)
        assert payload["id"] == request.headers["webhook-id"] == request.headers["idempotency-key"]
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(request.body.replace(b'"insert"', b'"delete"'), request.headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(new_secret()).verify(request.body, request.headers)
    assert requests[0].headers["webhook-id"] == requests[1].headers["webhook-id"]


def test_batches_are_signed_with_every_secret_during_a_rotation(
    db: Database, receiver: Receiver, start_wal2http: Start, tmp_path: Path
) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    new, old = new_secret(), new_secret()
    secret_file = tmp_path / "signing-secrets"
    secret_file.write_text(f"{new}\n{old}\n")
    wal2http = start_wal2http(
        *http_sink(receiver, "--batch-size", "50", "--signing-secret-file", str(secret_file))
    )
    db.execute("INSERT INTO t SELECT generate_series(1, 120)")
    events = receiver.wait_for_events(120)
    assert wal2http.stop() == 0
    assert [e["new"]["id"] for e in events] == list(range(1, 121))
    assert len(receiver.requests) >= 3
    for request in receiver.requests:
        assert len(request.headers["webhook-signature"].split(" ")) == 2
        for secret in (new, old):  # receivers on either secret accept every request
            assert isinstance(Webhook(secret).verify(request.body, request.headers), list)
        tampered = request.body[:-2] + b" ]"
        with pytest.raises(WebhookVerificationError):
            Webhook(new).verify(tampered, request.headers)


def test_bearer_token_and_headers(
    db: Database, receiver: Receiver, start_wal2http: Start, tmp_path: Path
) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    token_file = tmp_path / "token"
    token_file.write_text("tok-from-file\n")
    wal2http = start_wal2http(
        *http_sink(
            receiver,
            "--http-bearer-token-file",
            str(token_file),
            "--header",
            "X-Api-Key: env:TEST_KEY",
            "--header",
            "X-Team: billing",
        ),
        env={"TEST_KEY": "key-from-env", "WAL2HTTP_HEADER": "X-Ignored: flags win"},
    )
    db.execute("INSERT INTO t VALUES (1)")
    receiver.wait_for_events(1)
    assert wal2http.stop() == 0
    (request,) = receiver.requests
    assert request.headers["authorization"] == "Bearer tok-from-file"
    assert request.headers["x-api-key"] == "key-from-env"
    assert request.headers["x-team"] == "billing"
    assert "x-ignored" not in request.headers
    assert "webhook-signature" not in request.headers  # no secret, no signature
    assert "plain http://" not in wal2http.stderr  # loopback: no warning


# -- no secret leaks -------------------------------------------------------------------------------

PASSWORD = "Pw-" + secrets.token_hex(6) + "@:/ %é"
TOKEN = "tok-" + secrets.token_hex(12)
SIGNING = new_secret()
HEADER_VALUE = "hdr-" + secrets.token_hex(12)
HOOK0_TOKEN = "hook0-" + secrets.token_hex(12)
# Every form in which a secret could be printed: as given, URL-encoded, the key part of whsec_.
FORBIDDEN = [PASSWORD, quote(PASSWORD, safe=""), TOKEN, SIGNING, SIGNING[6:], HEADER_VALUE, HOOK0_TOKEN]

# Fault injection for the crash case: an unexpected exception whose message holds every secret,
# as a careless library might raise. Loaded through PYTHONPATH; wal2http itself is unchanged.
CRASH = """
import os
import wal2http.sinks.http as http

def crash(self, batch):
    names = ("WAL2HTTP_DSN", "LEAK_PASSWORD", "WAL2HTTP_HTTP_BEARER_TOKEN", "WAL2HTTP_SIGNING_SECRET",
             "LEAK_HEADER")
    raise RuntimeError("crash: " + " ".join(os.environ[n] for n in names))

http.HttpSink.send = crash
"""


def leak_env(db: Database, receiver: Receiver, fmt: str, port: int | None = None) -> dict[str, str]:
    dsn = f"postgresql://postgres:{quote(PASSWORD, safe='')}@127.0.0.1:{port or db.cluster.port}/{db.name}"
    return {
        "WAL2HTTP_DSN": dsn,
        "LEAK_PASSWORD": PASSWORD,
        "LEAK_HEADER": HEADER_VALUE,
        "WAL2HTTP_HTTP_BEARER_TOKEN": TOKEN,
        "WAL2HTTP_SIGNING_SECRET": SIGNING,
        "WAL2HTTP_LOG_LEVEL": "debug",
        "WAL2HTTP_LOG_FORMAT": fmt,
        "WAL2HTTP_SINK": "http",
        "WAL2HTTP_HTTP_URL": receiver.url,
        "WAL2HTTP_HEADER": "X-Api-Key: env:LEAK_HEADER",
        "HOOK0_API_TOKEN": HOOK0_TOKEN,
    }


def assert_no_secret(*outputs: str) -> None:
    for output in outputs:
        for value in FORBIDDEN:
            assert value not in output, f"a secret leaked:\n{output}"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_secret_leaks_through_a_connection_failure(
    wal2http_bin: str, db: Database, receiver: Receiver, fmt: str
) -> None:
    code, out, err = run_once(wal2http_bin, ["run"], leak_env(db, receiver, fmt, port=1), timeout=30)
    assert code == 3
    assert "cannot connect to PostgreSQL (postgresql://postgres:***@127.0.0.1:1/" in err.replace("\\/", "/")
    assert_no_secret(out, err)


def secret_file_args(env: dict[str, str], tmp_path: Path) -> list[str]:
    """Move the secrets of ``env`` into files named by --*-file flags: the flags an operator types."""
    files = {"--dsn-file": env.pop("WAL2HTTP_DSN"), "--http-bearer-token-file": env.pop("WAL2HTTP_HTTP_BEARER_TOKEN"),
             "--signing-secret-file": env.pop("WAL2HTTP_SIGNING_SECRET"), "X-Api-Key": env.pop("LEAK_HEADER")}
    del env["WAL2HTTP_HEADER"]
    env["WAL2HTTP_DSN"] = ""  # empty is unset: else start_wal2http passes its own
    args = []
    for flag, secret in files.items():
        path = tmp_path / flag.strip("-").lower()
        path.write_text(secret + "\n")
        args += ["--header", f"{flag}: file:{path}"] if flag == "X-Api-Key" else [flag, str(path)]
    return args


def command_line(process: Wal2http) -> list[str]:
    assert process.proc is not None
    return Path(f"/proc/{process.proc.pid}/cmdline").read_bytes().decode(errors="replace").split("\0")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_secret_leaks_through_a_401(
    db: Database, receiver: Receiver, start_wal2http: Start, fmt: str, tmp_path: Path
) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    # A careless receiver that echoes the credentials it refused.
    receiver.set_status(401, body=f"invalid credentials: Bearer {TOKEN}, X-Api-Key {HEADER_VALUE}".encode())
    env = leak_env(db, receiver, fmt)
    files = secret_file_args(env, tmp_path)
    visible = "trace-" + secrets.token_hex(8)  # a value passed as a flag, as a secret would be if it could
    wal2http = start_wal2http("--create-slot", *files, "--header", f"X-Trace: {visible}", env=env)
    cmdline = command_line(wal2http)
    assert f"X-Trace: {visible}" in cmdline and str(tmp_path / "dsn-file") in cmdline  # argv is what we read
    assert_no_secret("\0".join(cmdline))  # ...and no secret is in it
    db.execute("INSERT INTO t VALUES (1)")
    assert wal2http.wait() == 4
    (request,) = receiver.requests
    # The secrets were really in use, read from the files.
    assert request.headers["authorization"] == f"Bearer {TOKEN}" and request.headers["x-api-key"] == HEADER_VALUE
    assert Webhook(SIGNING).verify(request.body, request.headers)
    assert "receiver answered 401" in wal2http.stderr and "invalid credentials: Bearer ***" in wal2http.stderr
    assert_no_secret(wal2http.stdout, wal2http.stderr)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_secret_leaks_when_hook0_refuses_the_token(
    db: Database, receiver: Receiver, start_wal2http: Start, fmt: str
) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    receiver.set_status(
        401, body=f'{{"id": "AuthInvalidBiscuit", "detail": "bad token {HOOK0_TOKEN}"}}'.encode()
    )
    hook0 = [
        "--sink",
        "hook0",
        "--hook0-api-url",
        f"{receiver.url}/api/v1",
        "--hook0-mode",
        "changes",
        "--hook0-application-id",
        "3fa85f64-5717-4562-b3fc-2c963f66afa6",
    ]
    wal2http = start_wal2http("--create-slot", *hook0, env=leak_env(db, receiver, fmt))
    db.execute("INSERT INTO t VALUES (1)")
    assert wal2http.wait() == 4
    (request,) = receiver.requests
    assert request.path.endswith("/api/v1/event")
    assert request.headers["authorization"] == f"Bearer {HOOK0_TOKEN}"
    assert "Hook0 refused the API token" in wal2http.stderr
    assert_no_secret(wal2http.stdout, wal2http.stderr)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_secret_leaks_through_a_crash(
    db: Database, receiver: Receiver, start_wal2http: Start, tmp_path: Path, fmt: str
) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    (tmp_path / "sitecustomize.py").write_text(CRASH)
    env = {**leak_env(db, receiver, fmt), "PYTHONPATH": str(tmp_path)}
    wal2http = start_wal2http("--create-slot", env=env)
    db.execute("INSERT INTO t VALUES (1)")
    assert wal2http.wait() == 1
    assert "unexpected error: RuntimeError: crash: " in wal2http.stderr
    assert "Traceback (most recent call last)" in wal2http.stderr.replace("\\n", "\n")  # DEBUG shows it
    assert_no_secret(wal2http.stdout, wal2http.stderr)


def test_help_shows_no_secret(wal2http_bin: str, db: Database, receiver: Receiver) -> None:
    code, out, err = run_once(wal2http_bin, ["run", "--help"], leak_env(db, receiver, "text"))
    assert code == 0 and "--signing-secret-file" in out
    assert_no_secret(out, err)


def test_plain_http_to_a_remote_host_warns(wal2http_bin: str, db: Database) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    process = Wal2http(
        wal2http_bin,
        ["run", "--create-slot", "--sink", "http", "--http-url", "http://hooks.invalid/pg"],
        {"WAL2HTTP_DSN": db.dsn, "WAL2HTTP_HTTP_BEARER_TOKEN": TOKEN},
    ).start()
    try:
        process.wait_streaming()
        assert process.stop() == 0
    finally:
        process.kill()
    assert (
        "--http-url uses plain http:// to hooks.invalid: events and credentials cross the network "
        "unencrypted; use https://"
    ) in process.stderr


def test_replay_signs_and_authenticates_like_run(
    wal2http_bin: str, receiver: Receiver, tmp_path: Path
) -> None:
    capture = tmp_path / "capture.jsonl"
    capture.write_text(
        '{"id":"00000000016B3800-1","op":"insert","new":{"id":1}}\n'
        '{"id":"00000000016B3800-2","op":"insert","new":{"id":2}}\n'
    )
    secret = new_secret()
    env = {"WAL2HTTP_SIGNING_SECRET": secret, "WAL2HTTP_HTTP_BEARER_TOKEN": TOKEN}
    code, out, err = run_once(
        wal2http_bin, ["replay", "--sink", "http", "--http-url", receiver.url, str(capture)], env, timeout=30
    )
    assert code == 0, err
    assert [r.json()["id"] for r in receiver.requests] == ["00000000016B3800-1", "00000000016B3800-2"]
    for request in receiver.requests:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert Webhook(secret).verify(request.body, request.headers)["id"] == request.headers["webhook-id"]
    assert_no_secret(out, err)
