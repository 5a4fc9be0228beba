"""The offline half of ``check-config``: every setting checked, a fix with each failure, no secret shown."""

from __future__ import annotations

from dataclasses import replace

import pytest

from wal2http.checklist import Status, exit_status, failed, ok, render_text, warning
from wal2http.config.rules import problems, validate
from wal2http.config.secrets import Secret
from wal2http.config.sections import (
    BatchConfig,
    DeliveryConfig,
    HttpConfig,
    SourceConfig,
)
from wal2http.config.settings import Config, SinkConfig
from wal2http.config.validation import validate_uuid
from wal2http.errors import ConfigError, DatabaseError, ExitStatus
from wal2http.ops.check_config import offline_checks
from wal2http.ops.checks import requests_check
from wal2http.ops.start import refuse
from wal2http.pg.privileges import PublishAccess, RequestsAccess

DSN = "postgresql://app:s3cret-pw@db.example.com:5433/app"


def config(dsn: str = DSN, url: str | None = "https://hooks.example.com/pg?token=t0ken-value",
           **source: object) -> Config:
    http = HttpConfig(url) if url is not None else None
    return Config(SourceConfig(Secret(dsn), **source),  # type: ignore[arg-type]
                  SinkConfig("http", http), BatchConfig())


def by_name(cfg: Config) -> dict[str, tuple[Status, str]]:
    return {c.name: (c.status, c.detail) for c in offline_checks(cfg)}


def test_a_valid_configuration_passes_without_showing_secrets() -> None:
    found = offline_checks(config())
    assert all(c.status is Status.OK for c in found), found
    text = "\n".join(render_text(found))
    assert "db.example.com" in text and "port 5433" in text and "hooks.example.com/pg" in text
    assert "s3cret-pw" not in text and "t0ken-value" not in text
    assert exit_status(found) is ExitStatus.OK


def test_every_problem_is_listed_not_only_the_first() -> None:
    checks = by_name(config(dsn="", url="ftp://hooks.example.com", slot="Bad-Name", publication="1pub"))
    assert checks["dsn"][0] is Status.FAILED and "no database given" in checks["dsn"][1]
    assert checks["slot name"][0] is Status.FAILED
    assert checks["publication name"][0] is Status.FAILED
    assert checks["sink settings"] == (Status.FAILED, "--http-url must start with http:// or https://")
    dead_letters = replace(config(), delivery=DeliveryConfig(on_reject="dead-letter"))
    assert by_name(dead_letters)["delivery settings"] == (
        Status.FAILED, "--on-reject dead-letter needs --dead-letter-path (or WAL2HTTP_DEAD_LETTER_PATH)")


def test_urls_without_host_or_with_credentials_fail() -> None:
    assert by_name(config(url="https:///path"))["sink settings"][1] == "--http-url has no host"
    detail = by_name(config(url="https://user:pw@hooks.example.com/"))["sink settings"][1]
    assert "must not contain credentials" in detail and "pw@" not in detail
    assert "invalid port" in by_name(config(url="http://hooks.example.com:99999/"))["sink settings"][1]
    assert "needs --http-url" in by_name(config(url=None))["sink settings"][1]


def test_uuids() -> None:
    validate_uuid("0B8E9C2E-5D2A-4F6E-9A51-3C1D7E0F4A12", "--x")
    validate_uuid("0b8e9c2e5d2a4f6e9a513c1d7e0f4a12", "--x")
    for bad in ("", "app-42", "0b8e9c2e-5d2a-4f6e-9a51-3c1d7e0f4a1"):
        with pytest.raises(ConfigError, match="--x must be a UUID"):
            validate_uuid(bad, "--x")


def test_an_invalid_dsn_fails_without_quoting_it() -> None:
    status, detail = by_name(config(dsn="host=db password='s3cret-pw"))["dsn"]
    assert status is Status.FAILED and "invalid database DSN" in detail and "s3cret-pw" not in detail


def test_exit_status_prefers_configuration_errors() -> None:
    db = failed("wal_level", "replica", "set it", ExitStatus.DATABASE)
    assert exit_status([ok("a", ""), warning("b", "")]) is ExitStatus.OK
    assert exit_status([db]) is ExitStatus.DATABASE
    assert exit_status([db, failed("sink", "refused")]) is ExitStatus.USAGE


def test_the_checklist_shows_the_fix_of_what_is_not_ok() -> None:
    lines = render_text([ok("wal_level", "logical"), failed("slot", "missing", "run 'wal2http slot create'")])
    assert lines == [
        "ok       wal_level: logical",
        "FAILED   slot: missing",
        "         fix: run 'wal2http slot create'",
        "1 failed, 0 warnings, 1 ok",
    ]


def test_the_security_rules_are_listed_with_the_others() -> None:
    """Every rule of validate() is a Problem: the first one is what run says, check-config lists all."""
    http = HttpConfig("https://hooks.example.com/pg", signing_secrets=(Secret("whsec_not base64!"),))
    cfg = Config(SourceConfig(Secret(DSN), publication="MyPub"), SinkConfig("http", http),
                 BatchConfig(max_bytes=128 << 20), DeliveryConfig(max_event_bytes=1 << 30))
    found = problems(cfg)
    assert [p.setting for p in found] == ["publication", "sink", "batch", "delivery"]
    assert found[0].message.startswith("invalid --publication 'MyPub': use 1-63 lower-case")
    assert found[1].message.startswith("signing secret (WAL2HTTP_SIGNING_SECRET or --signing-secret-file)")
    assert found[2].message == "--batch-bytes must be between 1024 and 6.71089e+07, not 1.34218e+08"
    assert found[3].message.startswith("--max-event-bytes must be between 1024 and")
    with pytest.raises(ConfigError) as raised:
        validate(cfg)
    assert str(raised.value) == found[0].message
    checks = by_name(cfg)
    assert checks["sink settings"][0] is Status.FAILED and "whsec_not" not in checks["sink settings"][1]


def test_delivery_authentication_is_shown_without_its_secrets() -> None:
    secrets = (Secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
               Secret("whsec_dGhlIHByZXZpb3VzIHNlY3JldCwgMzIgYnl0ZXMhISE="))
    http = HttpConfig("https://hooks.example.com/pg", bearer_token=Secret("b3arer-value"), signing_secrets=secrets)
    cfg = Config(SourceConfig(Secret(DSN), require_tls=True), SinkConfig("http", http), BatchConfig())
    found = offline_checks(cfg)
    assert all(c.status is Status.OK for c in found), found
    text = "\n".join(render_text(found))
    assert "bearer token given (hidden)" in text and "signed with 2 secrets (hidden)" in text
    assert "b3arer-value" not in text and "MfKQ9r8" not in text and "s3cret-pw" not in text
    dsn = {c.name: c.detail for c in found}["dsn"]
    assert dsn.endswith("sslmode require, TLS required (--require-tls): postgresql://app:***@db.example.com:5433/app")


def _access(**changed: object) -> RequestsAccess:
    """The README's role: owns schema wal2http, whose requests table it created."""
    fields: dict[str, object] = dict(role="wal2http", database="app", exists=True, legacy=False, schema_exists=True,
                                     may_create=True, schema_usage=True, may_select=True, may_update=True,
                                     may_insert=True, sequence_usage=True)
    return RequestsAccess(**{**fields, **changed})  # type: ignore[arg-type]


@pytest.mark.parametrize(("access", "status", "fix"), [
    (_access(), Status.OK, None),
    (_access(exists=False, schema_exists=False), Status.OK, None),
    (_access(exists=False, schema_exists=False, may_create=False), Status.WARNING,
     "as a superuser or the owner of database app: CREATE SCHEMA wal2http AUTHORIZATION wal2http;"),
    (_access(exists=False, may_create=False), Status.WARNING, "GRANT USAGE, CREATE ON SCHEMA wal2http TO wal2http;"),
    (_access(may_insert=False), Status.WARNING,
     "GRANT USAGE ON SCHEMA wal2http TO wal2http; GRANT SELECT, INSERT, UPDATE ON wal2http.wal2http_backfill TO "
     "wal2http; GRANT USAGE ON SEQUENCE wal2http.wal2http_backfill_id_seq TO wal2http;"),
    (_access(schema_usage=False), Status.WARNING, "GRANT USAGE ON SCHEMA wal2http TO wal2http;"),
    (_access(exists=False, legacy=True), Status.WARNING, "ALTER TABLE public.wal2http_backfill SET SCHEMA wal2http;"),
    (_access(exists=False, schema_exists=False, legacy=True), Status.WARNING,
     "CREATE SCHEMA wal2http AUTHORIZATION wal2http; ALTER TABLE public.wal2http_backfill SET SCHEMA wal2http;"),
    (_access(legacy=True), Status.OK, None),  # moved already; the old one is named as unused
])
def test_the_requests_check_names_the_statement_that_allows_it(access: RequestsAccess, status: Status,
                                                               fix: str | None) -> None:
    check = requests_check(access)
    assert check.status is status, check
    assert (fix is None and check.fix is None) or (fix is not None and check.fix is not None and fix in check.fix)
    # Streaming needs none of it; a start that queues the initial backfill does, and fails before the slot.
    needed = requests_check(access, needed=True)
    assert needed.status is (Status.FAILED if status is Status.WARNING else Status.OK)
    assert needed.status is not Status.FAILED or needed.exit_status == ExitStatus.DATABASE


def test_creating_a_publication_names_the_grant_and_each_table_to_own() -> None:
    access = PublishAccess("wal2http", "app", superuser=False, may_create=False, not_owned=("public.orders",))
    refusal = access.refusal("wal2http", ["orders"], None)
    assert refusal is not None
    assert "GRANT CREATE ON DATABASE app TO wal2http; ALTER TABLE public.orders OWNER TO wal2http;" in refusal
    assert "CREATE PUBLICATION wal2http FOR TABLE orders;" in refusal
    assert PublishAccess("wal2http", "app", False, True, ()).refusal("wal2http", ["orders"], None) is None
    assert "needs a superuser" in (PublishAccess("w", "app", False, True, ()).refusal("p", [], "all tables") or "")
    assert PublishAccess("postgres", "app", True, False, ("public.orders",)).refusal("p", ["orders"], None) is None


def test_run_reports_every_failed_start_check_with_check_configs_exit_status(
        caplog: pytest.LogCaptureFixture) -> None:
    checks = [ok("a", "fine"), failed("publication", "missing", "create it"),
              failed("wal_level", "replica", "set it", ExitStatus.DATABASE), warning("slot", "busy")]
    with pytest.raises(ConfigError) as raised, caplog.at_level("ERROR"):
        refuse(checks)
    assert "2 start checks failed (publication, wal_level)" in str(raised.value)
    assert [r.getMessage() for r in caplog.records] == ["publication: missing; create it", "wal_level: replica; set it"]
    with pytest.raises(DatabaseError, match=r"^replica; set it$"):  # one failure: its own message, as before
        refuse([checks[2]])
    refuse([checks[0], checks[3]])  # warnings do not stop run
