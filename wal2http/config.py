"""Configuration: frozen dataclasses, validated once before any connection opens."""

from __future__ import annotations

import ipaddress
import re
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from wal2http.errors import ConfigError

SLOT_NAME_RE = re.compile(r"^[a-z0-9_]{1,63}$")
PUBLICATION_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
SINKS = ("stdout", "file", "http", "hook0")
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
        schema, dot, table = self.outbox_table.partition(".")
        return (schema, table) if dot else ("public", schema)


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


@dataclass(frozen=True)
class Config:
    source: SourceConfig
    sink: SinkConfig = field(default_factory=SinkConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def secrets(self) -> list[str]:
        """Every secret value, for the logging filter that scrubs them."""
        values = [self.source.dsn.reveal()]
        password = dsn_password(self.source.dsn.reveal())
        if password:
            values.append(password)
        if self.sink.hook0 is not None:
            values.append(self.sink.hook0.token.reveal())
        return [v for v in values if v]


@dataclass(frozen=True)
class Problem:
    """One invalid setting: the group it belongs to (``dsn``, ``slot``, ``publication``, ``sink``,
    ``batch``, ``delivery``) and the message an operator sees."""

    setting: str
    message: str


def validate(config: Config, database: bool = True) -> Config:
    """Raise ConfigError naming the first invalid setting; return the config unchanged.

    ``database`` is False for commands that never connect (``replay``).
    """
    found = problems(config, database)
    if found:
        raise ConfigError(found[0].message)
    return config


def problems(config: Config, database: bool = True) -> list[Problem]:
    """Every invalid setting, in the order ``validate`` reports them (``check-config`` lists all)."""
    found: list[Problem] = []
    src = config.source
    if database and not src.dsn:
        found.append(Problem("dsn", "no database given: set --dsn, WAL2HTTP_DSN or DATABASE_URL"))
    if not SLOT_NAME_RE.match(src.slot):
        found.append(Problem(
            "slot", f"invalid slot name {src.slot!r}: use 1-63 lower-case letters, digits or underscores"
        ))
    if not PUBLICATION_NAME_RE.match(src.publication):
        found.append(Problem("publication", f"invalid publication name {src.publication!r}"))
    found.extend(Problem("sink", message) for message in _sink_problems(config.sink))
    b = config.batch
    if b.max_events < 1:
        found.append(Problem("batch", "--batch-size must be at least 1"))
    if b.max_bytes < 1024:
        found.append(Problem("batch", "--batch-bytes must be at least 1024"))
    if b.max_wait_ms < 0:
        found.append(Problem("batch", "--batch-wait-ms must not be negative"))
    found.extend(Problem("delivery", message) for message in _delivery_problems(config.delivery))
    return found


def _sink_problems(sink: SinkConfig) -> list[str]:
    if sink.kind not in SINKS:
        return [f"unknown sink {sink.kind!r}: choose one of {', '.join(SINKS)}"]
    if sink.kind == "http":
        if sink.http is None or not sink.http.url:
            return ["--sink http needs --http-url (or WAL2HTTP_HTTP_URL, HTTP_ENDPOINT_URL)"]
        try:
            validate_url(sink.http.url, "--http-url")
        except ConfigError as e:
            return [str(e)]
    if sink.kind == "file" and not sink.file_path:
        return ["--sink file needs --file-path (or WAL2HTTP_FILE_PATH)"]
    if sink.kind == "hook0":
        try:
            validate_hook0(sink.hook0)
        except ConfigError as e:
            return [str(e)]
    return []


def _delivery_problems(d: DeliveryConfig) -> list[str]:
    found = []
    if d.on_reject not in ("halt", "dead-letter", "skip"):
        found.append(f"--on-reject must be halt, dead-letter or skip, not {d.on_reject!r}")
    if d.on_reject == "dead-letter" and not d.dead_letter_path:
        found.append("--on-reject dead-letter needs --dead-letter-path (or WAL2HTTP_DEAD_LETTER_PATH)")
    if d.max_event_bytes < 1024:
        found.append("--max-event-bytes must be at least 1024")
    if d.breaker_failures < 1:
        found.append("--breaker-failures must be at least 1")
    if d.breaker_cooldown_s <= 0 or d.shutdown_timeout_s < 0:
        found.append("--breaker-cooldown must be positive and --shutdown-timeout not negative")
    return found


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
    if hook0.mode not in HOOK0_MODES:
        raise ConfigError(f"unknown --hook0-mode {hook0.mode!r}: choose one of {', '.join(HOOK0_MODES)}")
    schema, table = hook0.outbox_schema_table
    if not schema or not table or "." in table:
        raise ConfigError(f"--hook0-outbox-table must be TABLE or SCHEMA.TABLE, not {hook0.outbox_table!r}")
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


def validate_uuid(value: str, option: str) -> None:
    """ConfigError unless ``value`` is a UUID (any case, with or without hyphens or braces)."""
    try:
        uuid.UUID(value)
    except ValueError:
        raise ConfigError(f"{option} must be a UUID, not {value!r}") from None


def read_secret_file(path: str, option: str) -> Secret:
    """A secret kept in a file (one line; surrounding whitespace and the newline are dropped)."""
    try:
        with open(path, encoding="utf-8") as f:
            value = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {option} {path!r}: {getattr(e, 'strerror', None) or e}") from None
    if not value:
        raise ConfigError(f"{option} {path!r} is empty")
    return Secret(value)


def validate_url(url: str, option: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{option} must start with http:// or https://")
    try:
        host, _port = parts.hostname, parts.port
    except ValueError:
        raise ConfigError(f"{option} has an invalid port") from None
    if not host:
        raise ConfigError(f"{option} has no host")
    if parts.username or parts.password:
        raise ConfigError(f"{option} must not contain credentials; use a bearer token or header")


def public_url(url: str) -> str:
    """The URL without credentials, query or fragment (they may hold tokens), for showing."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    try:
        if parts.port is not None:
            netloc += f":{parts.port}"
    except ValueError:
        pass
    hidden = " (query hidden)" if parts.query else ""
    return f"{parts.scheme}://{netloc}{parts.path}{hidden}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def dsn_password(dsn: str) -> str | None:
    """The password inside a DSN (URL or keyword form), for redaction."""
    if "://" in dsn:
        return urlsplit(dsn).password
    match = re.search(r"(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", dsn)
    if match is None:
        return None
    value = match.group(1)
    return value[1:-1] if value.startswith("'") else value


def redact_dsn(dsn: str) -> str:
    """The DSN with its password replaced by ``***``."""
    password = dsn_password(dsn)
    if not password:
        return dsn
    if "://" in dsn:
        parts = urlsplit(dsn)
        netloc = parts.netloc.replace(f":{password}@", ":***@", 1)
        return parts._replace(netloc=netloc).geturl()
    return re.sub(r"((?:^|\s)password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", dsn)
