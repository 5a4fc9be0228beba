"""Secrets come from the environment or files, never show in repr, and are scrubbed from every log record."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from wal2http.config.headers import Header
from wal2http.config.rules import split_signing_secrets
from wal2http.config.secrets import DSN, SIGNING_SECRET, Secret, load_dsn, read_secret_file
from wal2http.config.sections import HttpConfig, SourceConfig
from wal2http.config.settings import Config, SinkConfig
from wal2http.errors import ConfigError
from wal2http.observe import log

PASSWORD = "p@ss w0rd/é"
DSN_TEXT = "postgresql://app:p%40ss%20w0rd%2F%C3%A9@db.example.com:5432/app"
TOKEN = "tok-5f1e2d3c4b5a"
SIGNING = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HEADER_VALUE = "hdr-9a8b7c6d"


def full_config() -> Config:
    http = HttpConfig(
        url="https://hooks.example.com/pg",
        bearer_token=Secret(TOKEN),
        signing_secrets=(Secret(SIGNING),),
        headers=(Header("X-Api-Key", Secret(HEADER_VALUE)), Header("X-Team", "billing")),
    )
    return Config(source=SourceConfig(dsn=Secret(DSN_TEXT)), sink=SinkConfig(kind="http", http=http))


def test_repr_and_str_never_show_a_secret() -> None:
    config = full_config()
    for text in (repr(config), str(config), f"{config}", repr(config.sink.http), str(Secret(TOKEN))):
        for value in (PASSWORD, "p%40ss", TOKEN, SIGNING, HEADER_VALUE, DSN_TEXT):
            assert value not in text
    assert "billing" in repr(config)  # not secret: shown


def test_secrets_lists_every_form_a_secret_may_be_printed_in() -> None:
    secrets = full_config().secrets()
    for value in (PASSWORD, "p%40ss%20w0rd%2F%C3%A9", TOKEN, SIGNING, SIGNING[6:], HEADER_VALUE):
        assert value in secrets
    assert "billing" not in secrets
    # A DSN is secret only through its passwords: without one it may show, e.g. in connection errors.
    assert Config(source=SourceConfig(dsn=Secret("postgresql://app@db/app"))).secrets() == []


def test_secret_source_precedence(tmp_path: Path) -> None:
    secret_file = tmp_path / "dsn"
    secret_file.write_text("host=from-file password=x\n")
    assert DSN.load(None, {"DATABASE_URL": "legacy"}) == Secret("legacy")
    assert DSN.load(None, {"WAL2HTTP_DSN": "new", "DATABASE_URL": "legacy"}) == Secret("new")
    assert DSN.load(str(secret_file), {"DATABASE_URL": "legacy"}) == Secret("host=from-file password=x")
    assert DSN.load(None, {"WAL2HTTP_DSN": ""}) is None
    with pytest.raises(ConfigError, match="both WAL2HTTP_DSN and --dsn-file are set"):
        DSN.load(str(secret_file), {"WAL2HTTP_DSN": "new"})


def test_a_dsn_flag_with_a_password_is_refused_without_quoting_it(tmp_path: Path) -> None:
    for flag in (
        "postgresql://app:hunter22@db/app",
        "host=db password=hunter22",
        "host=db sslpassword=hunter22",
    ):
        with pytest.raises(ConfigError, match="--dsn must not contain a password") as raised:
            load_dsn(flag, None, {})
        assert "hunter22" not in str(raised.value) and "WAL2HTTP_DSN" in str(raised.value)
    assert load_dsn("host=db user=app", None, {"WAL2HTTP_DSN": "other"}) == Secret("host=db user=app")
    with pytest.raises(ConfigError, match="both --dsn and --dsn-file"):
        load_dsn("host=db", str(tmp_path / "f"), {})


def test_secret_files(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"  two words \r\n\n")
    assert read_secret_file(str(path), "--x-file") == "  two words "
    for content, problem in ((b"\n", "is empty"), (b"\xff\xfe", "not UTF-8"), (b"x" * 70000, "over 65536")):
        path.write_bytes(content)
        with pytest.raises(ConfigError, match=problem):
            read_secret_file(str(path), "--x-file")
    with pytest.raises(ConfigError, match=r"cannot read --x-file .*No such file"):
        read_secret_file(str(tmp_path / "missing"), "--x-file")


def test_several_signing_secrets_are_split_on_white_space() -> None:
    loaded = SIGNING_SECRET.load(None, {"WAL2HTTP_SIGNING_SECRET": f"{SIGNING}  whsec_b\nwhsec_c"})
    assert split_signing_secrets(loaded) == (Secret(SIGNING), Secret("whsec_b"), Secret("whsec_c"))


@pytest.fixture(params=["text", "json"])
def captured(request: pytest.FixtureRequest) -> Iterator[tuple[str, io.StringIO]]:
    """The root logger as log.setup() configures it, writing to a string."""
    stream = io.StringIO()
    log.setup("DEBUG", request.param, full_config().secrets())
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    yield request.param, stream
    logging.getLogger().handlers.clear()


def test_the_log_filter_scrubs_messages_arguments_extras_and_tracebacks(
    captured: tuple[str, io.StringIO],
) -> None:
    fmt, stream = captured
    logger = logging.getLogger("wal2http.test")
    logger.debug("dsn %s token %s", DSN_TEXT, TOKEN)
    logger.info("password %r in a dict", {"password": PASSWORD})
    logger.warning("extra field", extra={"auth": f"Bearer {TOKEN}", "key": SIGNING[6:]})
    try:
        raise RuntimeError(f"failed with {HEADER_VALUE} and {SIGNING}")
    except RuntimeError:
        logger.exception("crash")
    logger.error("stack", stack_info=True, extra={"note": PASSWORD})
    output = stream.getvalue()
    for value in (PASSWORD, "p%40ss", TOKEN, SIGNING, SIGNING[6:], HEADER_VALUE):
        assert value not in output
    if fmt == "json":
        records = [json.loads(line) for line in output.splitlines()]
        assert [r["message"] for r in records] == [
            "dsn postgresql://app:***@db.example.com:5432/app token ***",
            "password {'password': '***'} in a dict",
            "extra field",
            "crash",
            "stack",
        ]
        assert records[2]["auth"] == "Bearer ***" and records[2]["key"] == "***"
        assert records[3]["exc_info"].endswith("RuntimeError: failed with *** and ***")
        assert records[4]["note"] == "***" and "stack_info" in records[4]
    else:
        assert (
            "dsn postgresql://app:***@db.example.com:5432/app token ***" in output
            and "password {'password': '***'} in a dict" in output
        )
        assert "RuntimeError: failed with *** and ***" in output
        assert "Stack (most recent call last)" in output
