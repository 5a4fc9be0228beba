"""Configuration: frozen dataclasses, validated once before any connection opens."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from wal2http import signing
from wal2http.dsn import dsn_password, dsn_secret_values, redact_dsn
from wal2http.errors import ConfigError
from wal2http.validation import (
    check_range,
    check_tls_files,
    is_loopback,
    validate_identifier,
    validate_url,
    validate_uuid,
)

if TYPE_CHECKING:
    from wal2http.headers import Header

__all__ = ["dsn_password", "redact_dsn"]  # re-exported: the DSN helpers live in wal2http.dsn

SLOT_NAME_RE = re.compile(r"^[a-z0-9_]{1,63}$")
SINKS = ("stdout", "file", "http", "hook0")
MAX_SECRET_FILE_BYTES = 65536
BEARER_TOKEN_RE = re.compile(r"^[\x21-\x7e]{1,4096}$")
HOOK0_MODES = ("outbox", "changes")
HOOK0_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,50}$")  # one part of a service.resource_type.verb
HOOK0_MAX_LABELS = 10
HOOK0_FIXED_LABELS = ("schema", "table")  # the labels changes mode always sets


class Secret:
    """A string that never shows itself in ``repr``, ``str`` or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class SecretSource:
    """Where one secret may come from: a ``--*-file`` option or environment variables, never a flag.

    Precedence: the file (``--x-file`` or ``WAL2HTTP_X_FILE``), then ``WAL2HTTP_X``, then the
    earlier tool's variable. Setting both the file and ``WAL2HTTP_X`` is refused as ambiguous.
    """

    env: tuple[str, ...]  # WAL2HTTP_ name first, then legacy names
    file_option: str  # "--signing-secret-file"

    @property
    def file_env(self) -> str:
        return f"{self.env[0]}_FILE"

    def describe(self) -> str:
        return f"{self.env[0]} or {self.file_option}"

    def load(self, file_path: str | None, environ: Mapping[str, str]) -> Secret | None:
        """The secret, or None when no source is set."""
        if file_path:
            if environ.get(self.env[0]):
                raise ConfigError(f"both {self.env[0]} and {self.file_option} are set: keep one of them")
            return Secret(read_secret_file(file_path, self.file_option))
        for name in self.env:
            if environ.get(name):
                return Secret(environ[name])
        return None


DSN = SecretSource(("WAL2HTTP_DSN", "DATABASE_URL"), "--dsn-file")
HTTP_BEARER_TOKEN = SecretSource(("WAL2HTTP_HTTP_BEARER_TOKEN",), "--http-bearer-token-file")
SIGNING_SECRET = SecretSource(("WAL2HTTP_SIGNING_SECRET",), "--signing-secret-file")
HOOK0_API_TOKEN = SecretSource(("WAL2HTTP_HOOK0_API_TOKEN", "HOOK0_API_TOKEN"), "--hook0-api-token-file")
ADMIN_TOKEN = SecretSource(("WAL2HTTP_ADMIN_TOKEN",), "--admin-token-file")
SMTP_PASSWORD = SecretSource(("WAL2HTTP_SMTP_PASSWORD", "SMTP_PASSWORD"), "--smtp-password-file")
# Every secret a command reads; the documentation test checks each is documented.
SECRET_SOURCES = (DSN, HTTP_BEARER_TOKEN, SIGNING_SECRET, HOOK0_API_TOKEN, ADMIN_TOKEN, SMTP_PASSWORD)


def read_secret_file(path: str, option: str) -> str:
    """The text of a secret file, without its trailing newline; ConfigError never quotes the content."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"cannot read {option} {path!r}: {e.strerror or e}") from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise ConfigError(f"{option} {path!r} is over {MAX_SECRET_FILE_BYTES} bytes: not a secret file")
    try:
        text = data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ConfigError(f"{option} {path!r} is not UTF-8 text") from None
    if not text.strip():
        raise ConfigError(f"{option} {path!r} is empty")
    return text


def load_dsn(flag: str | None, file_path: str | None, environ: Mapping[str, str]) -> Secret:
    """The DSN from ``--dsn`` (refused if it holds a password), ``--dsn-file`` or the environment."""
    if flag:
        if file_path:
            raise ConfigError("both --dsn and --dsn-file are set: keep one of them")
        if dsn_secret_values(flag):
            raise ConfigError(
                "--dsn must not contain a password: anyone on this machine can read command lines; "
                "put the DSN in WAL2HTTP_DSN or in a file named by --dsn-file, "
                "or leave the password out and use PGPASSWORD or ~/.pgpass"
            )
        return Secret(flag)
    return DSN.load(file_path, environ) or Secret("")


@dataclass(frozen=True)
class SourceConfig:
    dsn: Secret
    slot: str = "wal2http"
    publication: str = "wal2http"
    create_slot: bool = False
    messages: bool = False
    status_interval_s: float = 10.0
    connect_timeout_s: int = 10
    reconnect_max_wait_s: float = 30.0
    # Silence from the server (no data, no keepalive) before asking it to answer.
    replication_timeout_s: float = 30.0
    require_tls: bool = False


@dataclass(frozen=True)
class BatchConfig:
    max_events: int = 1
    max_bytes: int = 1_048_576
    max_wait_ms: int = 100


@dataclass(frozen=True)
class DeliveryConfig:
    on_reject: str = "halt"  # halt | dead-letter | skip
    dead_letter_path: str | None = None
    max_event_bytes: int = 1_048_576
    breaker_failures: int = 5
    breaker_cooldown_s: float = 10.0
    breaker_cooldown_max_s: float = 300.0
    shutdown_timeout_s: float = 30.0


@dataclass(frozen=True)
class HttpConfig:
    url: str
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0
    retries: int = 2  # quick retries inside one attempt (urllib3)
    retry_after_max_s: float = 5.0
    retry_max_wait_s: float = 30.0  # cap of the wait between attempts during an outage
    bearer_token: Secret | None = None
    signing_secrets: tuple[Secret, ...] = ()  # Standard Webhooks whsec_ secrets, newest first
    headers: tuple[Header, ...] = ()
    ca_file: str | None = None  # trust only these CAs instead of the default bundle
    client_cert: str | None = None  # PEM certificate (may hold the key too) for mutual TLS
    client_key: str | None = None


@dataclass(frozen=True)
class Hook0Config:
    """The Hook0 sink: where the API is, which application, and how rows become events."""

    http: HttpConfig  # url is the API base, e.g. https://app.hook0.com/api/v1
    application_id: str
    token: Secret
    mode: str = "outbox"
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


@dataclass(frozen=True)
class SinkConfig:
    kind: str = "stdout"
    http: HttpConfig | None = None
    file_path: str | None = None
    hook0: Hook0Config | None = None


@dataclass(frozen=True)
class LogConfig:
    format: str = "text"
    level: str = "INFO"
    file: str | None = None
    max_bytes: int = 104_857_600  # 0: no rotation by wal2http (logrotate, then SIGHUP)
    backups: int = 5
    progress_s: float = 60.0  # 0: no progress lines


@dataclass(frozen=True)
class MetricsConfig:
    """The admin endpoint (/metrics, /healthz, /readyz) and the slot polling that feeds it."""

    address: tuple[str, int] | None = None  # --metrics-addr; None: no endpoint
    token: Secret | None = None  # WAL2HTTP_ADMIN_TOKEN: every admin path wants it as a bearer token
    health_stall_s: float = 120.0
    slot_poll_s: float = 15.0  # 0: never polled
    table_labels: bool = False


@dataclass(frozen=True)
class NotifyConfig:
    """Failure notifications by email; off unless ``smtp_host`` is set."""

    smtp_host: str | None = None
    smtp_port: int | None = None  # None: 587 with STARTTLS, else 25
    username: str | None = None
    password: Secret | None = None
    sender: str = ""
    recipients: tuple[str, ...] = ()
    starttls: bool = True
    notify_after_s: float = 300.0  # breaker open this long before an email
    interval_s: float = 900.0  # at most one email of a kind this often; dead letters in between are summed
    timeout_s: float = 5.0  # overall, per email

    @property
    def port(self) -> int:
        if self.smtp_port:
            return self.smtp_port
        return 587 if self.starttls else 25


@dataclass(frozen=True)
class Config:
    source: SourceConfig
    sink: SinkConfig = field(default_factory=SinkConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)

    def secrets(self) -> list[str]:
        """Every secret value in every form it may be printed in, for the logging filter."""
        values: list[str] = []
        for secret in _secrets_in(self):
            value = secret.reveal()
            if secret is self.source.dsn:
                # Only its passwords: a DSN without one is not secret, and shows in messages.
                forms = dsn_secret_values(value)
            else:
                forms = [value, unquote(value)]
                if value.startswith(signing.SECRET_PREFIX):
                    forms.append(value[len(signing.SECRET_PREFIX) :])
            values.extend(f for f in forms if f and f not in values)
        return values


def _secrets_in(value: object) -> Iterator[Secret]:
    """Every Secret inside a tree of dataclasses and tuples, so a new secret field needs no registration."""
    if isinstance(value, Secret):
        yield value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _secrets_in(getattr(value, f.name))
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _secrets_in(item)


@dataclass(frozen=True)
class Problem:
    """One invalid setting: the group it belongs to (``dsn``, ``slot``, ``publication``, ``sink``,
    ``batch``, ``delivery``) and the message an operator sees."""

    setting: str
    message: str


def validate(config: Config, database: bool = True) -> Config:
    """Raise ConfigError naming the first invalid setting and what is allowed; return the config.

    ``database`` is False for commands that never connect (``replay``).
    """
    found = problems(config, database)
    if found:
        raise ConfigError(found[0].message)
    return config


def problems(config: Config, database: bool = True) -> list[Problem]:
    """Every invalid setting, in the order ``validate`` reports them (``check-config`` lists all)."""
    found: list[Problem] = []

    def check(setting: str, rule: Callable[..., object], *args: Any) -> None:
        """Run one rule that raises ConfigError; its message becomes a Problem of ``setting``."""
        try:
            rule(*args)
        except ConfigError as e:
            found.append(Problem(setting, str(e)))

    src = config.source
    if database and not src.dsn:
        found.append(Problem("dsn", "no database given: set WAL2HTTP_DSN (or DATABASE_URL), --dsn-file or --dsn"))
    if not SLOT_NAME_RE.match(src.slot):
        found.append(Problem(
            "slot", f"invalid --slot {src.slot!r}: use 1-63 lower-case letters, digits or underscores"
        ))
    check("publication", validate_identifier, src.publication, "--publication")
    check("sink", validate_sink, config.sink)
    b = config.batch
    check("batch", check_range, "--batch-size", b.max_events, 1, 100_000)
    check("batch", check_range, "--batch-bytes", b.max_bytes, 1024, 64 << 20)
    check("batch", check_range, "--batch-wait-ms", b.max_wait_ms, 0, 60_000)
    d = config.delivery
    if d.on_reject not in ("halt", "dead-letter", "skip"):
        found.append(Problem("delivery", f"--on-reject must be halt, dead-letter or skip, not {d.on_reject!r}"))
    if d.on_reject == "dead-letter" and not d.dead_letter_path:
        found.append(Problem(
            "delivery", "--on-reject dead-letter needs --dead-letter-path (or WAL2HTTP_DEAD_LETTER_PATH)"
        ))
    check("delivery", check_range, "--max-event-bytes", d.max_event_bytes, 1024, 64 << 20)
    if d.breaker_failures < 1:
        found.append(Problem("delivery", "--breaker-failures must be at least 1"))
    if d.breaker_cooldown_s <= 0 or d.shutdown_timeout_s < 0:
        found.append(Problem(
            "delivery", "--breaker-cooldown must be positive and --shutdown-timeout not negative"
        ))
    check("notify", validate_notify, config.notify)
    return found


def validate_sink(sink: SinkConfig) -> None:
    """The first problem of the chosen sink's settings, as ConfigError."""
    if sink.kind not in SINKS:
        raise ConfigError(f"unknown sink {sink.kind!r}: choose one of {', '.join(SINKS)}")
    if sink.kind == "http":
        if sink.http is None or not sink.http.url:
            raise ConfigError("--sink http needs --http-url (or WAL2HTTP_HTTP_URL, HTTP_ENDPOINT_URL)")
        validate_http(sink.http)
    if sink.kind == "file" and not sink.file_path:
        raise ConfigError("--sink file needs --file-path (or WAL2HTTP_FILE_PATH)")
    if sink.kind == "hook0":
        validate_hook0(sink.hook0)


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
    if not BEARER_TOKEN_RE.match(hook0.token.reveal()):
        raise ConfigError(
            f"the Hook0 API token ({HOOK0_API_TOKEN.describe()}) must be 1-4096 printable ASCII "
            "characters without spaces (the value is not shown)"
        )
    if hook0.mode not in HOOK0_MODES:
        raise ConfigError(f"unknown --hook0-mode {hook0.mode!r}: choose one of {', '.join(HOOK0_MODES)}")
    outbox_schema_table(hook0.outbox_table)
    if not hook0.message_prefix:
        raise ConfigError("--hook0-message-prefix must not be empty")
    if hook0.service is not None and not HOOK0_NAME_RE.match(hook0.service):
        raise ConfigError(
            f"--hook0-service must be 1-50 letters, digits or underscores, not {hook0.service!r}"
        )
    if hook0.labels and hook0.mode != "changes":
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


def validate_http(http: HttpConfig) -> None:
    """The receiver URL, credentials, signing secrets and TLS files of the http sink."""
    validate_url(http.url, "--http-url")
    check_range("--http-timeout", http.read_timeout_s, 0.1, 300)
    if http.bearer_token is not None and not BEARER_TOKEN_RE.match(http.bearer_token.reveal()):
        raise ConfigError(
            f"the bearer token ({HTTP_BEARER_TOKEN.describe()}) must be 1-4096 printable ASCII "
            "characters without spaces (the value is not shown)"
        )
    signing_keys(http.signing_secrets)
    if http.bearer_token is not None and any(h.name.lower() == "authorization" for h in http.headers):
        raise ConfigError(
            f"--header Authorization conflicts with the bearer token ({HTTP_BEARER_TOKEN.describe()}): "
            "keep one of them"
        )
    check_tls_files(http.ca_file, http.client_cert, http.client_key)


def signing_keys(secrets: tuple[Secret, ...]) -> list[bytes]:
    """The HMAC keys of the signing secrets; ConfigError names the faulty one by position only."""
    keys = []
    for n, secret in enumerate(secrets, 1):
        try:
            keys.append(signing.decode_secret(secret.reveal()))
        except ValueError as e:
            which = f"secret {n} of {len(secrets)}" if len(secrets) > 1 else "the secret"
            raise ConfigError(
                f"signing secret ({SIGNING_SECRET.describe()}): {which} {e} "
                f"(expected {signing.SECRET_PREFIX}<base64>, several separated by spaces)"
            ) from None
    return keys


def split_signing_secrets(secret: Secret | None) -> tuple[Secret, ...]:
    """Several secrets, separated by white space, sign each request with all of them (rotation)."""
    return tuple(Secret(s) for s in secret.reveal().split()) if secret is not None else ()


def parse_listen_address(text: str, option: str = "--metrics-addr") -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT``, ``:PORT`` or ``PORT``; the host defaults to 127.0.0.1."""
    text = text.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"{option} {text!r}: write an IPv6 address in brackets, e.g. [::1]:9187")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{option} {text!r}: expected HOST:PORT or PORT, with a port from 1 to 65535")
    return host or "127.0.0.1", int(port_text)


def validate_notify(n: NotifyConfig) -> None:
    if not n.smtp_host:
        return
    if not n.recipients:
        raise ConfigError("SMTP_HOST is set but no recipient: set --smtp-to (or WAL2HTTP_SMTP_TO, SMTP_TO)")
    if not n.sender:
        raise ConfigError("SMTP_HOST is set but no sender: set --smtp-from (or WAL2HTTP_SMTP_FROM, SMTP_FROM)")
    for address in (n.sender, *n.recipients):
        if "@" not in address or any(c.isspace() for c in address):
            raise ConfigError(f"not an email address: {address!r} (--smtp-from, --smtp-to)")
    if n.password and not n.username:
        raise ConfigError("an SMTP password is set without --smtp-username")
    if n.password and not n.starttls and not is_loopback(n.smtp_host):
        raise ConfigError("the SMTP password would cross the network in clear text: keep STARTTLS on, "
                          "or relay through a mail server on this host")
