"""Configuration: frozen dataclasses, validated once before any connection opens."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from wal2http.errors import ConfigError

SLOT_NAME_RE = re.compile(r"^[a-z0-9_]{1,63}$")
PUBLICATION_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
SINKS = ("stdout", "file", "http")


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
class SinkConfig:
    kind: str = "stdout"
    http: HttpConfig | None = None
    file_path: str | None = None


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
        return [v for v in values if v]


def validate(config: Config, database: bool = True) -> Config:
    """Raise ConfigError naming the first invalid setting; return the config unchanged.

    ``database`` is False for commands that never connect (``replay``).
    """
    src = config.source
    if database and not src.dsn:
        raise ConfigError("no database given: set --dsn, WAL2HTTP_DSN or DATABASE_URL")
    if not SLOT_NAME_RE.match(src.slot):
        raise ConfigError(
            f"invalid slot name {src.slot!r}: use 1-63 lower-case letters, digits or underscores"
        )
    if not PUBLICATION_NAME_RE.match(src.publication):
        raise ConfigError(f"invalid publication name {src.publication!r}")
    sink = config.sink
    if sink.kind not in SINKS:
        raise ConfigError(f"unknown sink {sink.kind!r}: choose one of {', '.join(SINKS)}")
    if sink.kind == "http":
        if sink.http is None or not sink.http.url:
            raise ConfigError("--sink http needs --http-url (or WAL2HTTP_HTTP_URL, HTTP_ENDPOINT_URL)")
        validate_url(sink.http.url, "--http-url")
    if sink.kind == "file" and not sink.file_path:
        raise ConfigError("--sink file needs --file-path (or WAL2HTTP_FILE_PATH)")
    b = config.batch
    if b.max_events < 1:
        raise ConfigError("--batch-size must be at least 1")
    if b.max_bytes < 1024:
        raise ConfigError("--batch-bytes must be at least 1024")
    if b.max_wait_ms < 0:
        raise ConfigError("--batch-wait-ms must not be negative")
    d = config.delivery
    if d.on_reject not in ("halt", "dead-letter", "skip"):
        raise ConfigError(f"--on-reject must be halt, dead-letter or skip, not {d.on_reject!r}")
    if d.on_reject == "dead-letter" and not d.dead_letter_path:
        raise ConfigError("--on-reject dead-letter needs --dead-letter-path (or WAL2HTTP_DEAD_LETTER_PATH)")
    if d.max_event_bytes < 1024:
        raise ConfigError("--max-event-bytes must be at least 1024")
    if d.breaker_failures < 1:
        raise ConfigError("--breaker-failures must be at least 1")
    if d.breaker_cooldown_s <= 0 or d.shutdown_timeout_s < 0:
        raise ConfigError("--breaker-cooldown must be positive and --shutdown-timeout not negative")
    return config


def validate_url(url: str, option: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{option} must start with http:// or https://")
    if not parts.hostname:
        raise ConfigError(f"{option} has no host")
    if parts.username or parts.password:
        raise ConfigError(f"{option} must not contain credentials; use a bearer token or header")


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
