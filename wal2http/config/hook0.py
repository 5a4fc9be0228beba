"""Hook0 settings: the API, the application, the mode, and the rules they must follow."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from wal2http.config.secrets import HOOK0_API_TOKEN, Secret
from wal2http.config.sections import HttpConfig
from wal2http.config.validation import (
    check_bearer_token,
    check_tls_files,
    validate_url,
    validate_uuid,
)
from wal2http.errors import ConfigError


class Hook0Mode(StrEnum):
    """outbox: rows of the outbox table (and hook0 messages) are the events; changes: every row change is."""

    OUTBOX = "outbox"
    CHANGES = "changes"


HOOK0_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,50}$")  # one part of a service.resource_type.verb
HOOK0_MAX_LABELS = 10
HOOK0_FIXED_LABELS = ("schema", "table")  # the labels changes mode always sets


@dataclass(frozen=True)
class Hook0Config:
    """The Hook0 sink: where the API is, which application, and how rows become events."""

    http: HttpConfig  # url is the API base, e.g. https://app.hook0.com/api/v1
    application_id: str
    token: Secret
    mode: Hook0Mode = Hook0Mode.OUTBOX
    outbox_table: str = "public.hook0_outbox"
    message_prefix: str = "hook0"
    service: str | None = None  # changes mode; None: the database name, sanitised
    labels: tuple[tuple[str, str], ...] = ()  # changes mode: (label name, column name)
    ensure_event_types: bool = False

    @property
    def api_url(self) -> str:
        return self.http.url.rstrip("/")

    @property
    def outbox_schema_table(self) -> tuple[str, str]:
        """The outbox table as (schema, table); a bare name is in ``public``."""
        return _split_table(self.outbox_table)


def _split_table(name: str) -> tuple[str, str]:
    schema, dot, table = name.partition(".")
    return (schema, table) if dot else ("public", schema)


def outbox_schema_table(name: str) -> tuple[str, str]:
    """``--hook0-outbox-table`` as (schema, table), a bare name in ``public``; ConfigError if malformed."""
    schema, table = _split_table(name)
    if not schema or not table or "." in table:
        raise ConfigError(f"--hook0-outbox-table must be TABLE or SCHEMA.TABLE, not {name!r}")
    return schema, table


def validate_hook0(hook0: Hook0Config | None) -> None:
    if hook0 is None or not hook0.http.url:
        raise ConfigError("--sink hook0 needs --hook0-api-url (or WAL2HTTP_HOOK0_API_URL, HOOK0_API_URL), "
                          "e.g. https://app.hook0.com/api/v1")
    validate_url(hook0.http.url, "--hook0-api-url")
    if not hook0.application_id:
        raise ConfigError("--sink hook0 needs --hook0-application-id "
                          "(or WAL2HTTP_HOOK0_APPLICATION_ID, HOOK0_APPLICATION_ID)")
    validate_uuid(hook0.application_id, "--hook0-application-id")
    if not hook0.token:
        raise ConfigError("--sink hook0 needs an API token: set HOOK0_API_TOKEN "
                          "(or WAL2HTTP_HOOK0_API_TOKEN) or pass --hook0-api-token-file")
    check_bearer_token(hook0.token.reveal(), f"the Hook0 API token ({HOOK0_API_TOKEN.describe()})")
    if hook0.mode not in tuple(Hook0Mode):
        raise ConfigError(f"unknown --hook0-mode {hook0.mode!r}: choose one of {', '.join(Hook0Mode)}")
    outbox_schema_table(hook0.outbox_table)
    if not hook0.message_prefix:
        raise ConfigError("--hook0-message-prefix must not be empty")
    if hook0.service is not None and not HOOK0_NAME_RE.match(hook0.service):
        raise ConfigError(
            f"--hook0-service must be 1-50 letters, digits or underscores, not {hook0.service!r}"
        )
    if hook0.labels and hook0.mode != Hook0Mode.CHANGES:
        raise ConfigError("--hook0-label applies to --hook0-mode changes; outbox rows carry their own labels")
    names = [name for name, _ in hook0.labels]
    for name, column in hook0.labels:
        if not name or not column or len(name.encode()) > 50:
            raise ConfigError(
                f"--hook0-label must be NAME=COLUMN with a NAME of 1-50 bytes, not {name}={column}"
            )
        if name in HOOK0_FIXED_LABELS:
            raise ConfigError(f"--hook0-label cannot set {name!r}: changes mode sets schema and table itself")
        if names.count(name) > 1:
            raise ConfigError(f"--hook0-label {name!r} is given more than once")
    if len(names) > HOOK0_MAX_LABELS - len(HOOK0_FIXED_LABELS):
        raise ConfigError(f"at most {HOOK0_MAX_LABELS - len(HOOK0_FIXED_LABELS)} --hook0-label mappings: "
                          f"Hook0 takes {HOOK0_MAX_LABELS} labels and schema and table are two of them")
    check_tls_files(hook0.http.ca_file, hook0.http.client_cert, hook0.http.client_key)
