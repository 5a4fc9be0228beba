"""The settings of each part (database, batching, delivery, HTTP, logging, metrics, notifications)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from wal2http.config.cloudevents import CloudEventsConfig, EventFormat
from wal2http.config.headers import Header
from wal2http.config.outcomes import StatusClasses
from wal2http.config.secrets import Secret

MiB = 1 << 20


class SinkKind(StrEnum):
    STDOUT = "stdout"
    FILE = "file"
    HTTP = "http"
    HOOK0 = "hook0"


class OnReject(StrEnum):
    """What an event the receiver refuses for good does (``--on-reject``)."""

    HALT = "halt"
    DEAD_LETTER = "dead-letter"
    SKIP = "skip"


# The allowed range of each numeric option, by option name: the CLI's types and the rules use these.
RANGES: dict[str, tuple[float, float]] = {
    "batch_size": (1, 100_000),
    "batch_bytes": (1024, 64 * MiB),
    "batch_wait_ms": (0, 60_000),
    "max_event_bytes": (1024, 64 * MiB),
    "breaker_failures": (1, 1000),
    "breaker_cooldown": (0.1, 3600),
    "shutdown_timeout": (0, 3600),
    "http_timeout": (0.1, 300),
    "reconnect_max_wait": (0.1, 3600),
    "replication_timeout": (1, 3600),
    "log_backups": (0, 1000),
    "progress_seconds": (0, 86400),
    "health_stall_seconds": (1, 86400),
    "slot_poll_seconds": (0, 86400),
    "notify_after": (0, 86400),
    "notify_interval": (0, 86400),
    "backfill_chunk_size": (1, 1_000_000),
    "backfill_chunk_bytes": (1024, 1024 * MiB),
    "give_up_after": (0.1, 30 * 86400),
    "give_up_attempts": (1, 1_000_000),
    "max_dead_letters": (1, 100_000_000),
}


@dataclass(frozen=True)
class SourceConfig:
    dsn: Secret
    slot: str = "wal2http"
    publication: str = "wal2http"
    create_slot: bool = False
    failover: bool = False  # create the slot with failover (PostgreSQL 17+)
    messages: bool = False
    until: str | None = None  # run --until: "now" or a WAL position ("16/B374D848"), checked by the CLI
    status_interval_s: float = 10.0
    connect_timeout_s: int = 10
    reconnect_max_wait_s: float = 30.0
    # Silence from the server (no data, no keepalive) before asking it to answer.
    replication_timeout_s: float = 30.0
    require_tls: bool = False


@dataclass(frozen=True)
class BatchConfig:
    max_events: int = 1
    max_bytes: int = MiB
    max_wait_ms: int = 100


@dataclass(frozen=True)
class DeliveryConfig:
    on_reject: OnReject = OnReject.HALT
    dead_letter_path: str | None = None
    max_event_bytes: int = MiB
    breaker_failures: int = 5
    breaker_cooldown_s: float = 10.0
    breaker_cooldown_max_s: float = 300.0
    shutdown_timeout_s: float = 30.0
    statuses: StatusClasses = field(default_factory=StatusClasses)  # --reject-status, --retry-status over the defaults
    # An event failing (transient) this long, or this many attempts, goes to the dead-letter file; None: never.
    give_up_after_s: float | None = None
    give_up_attempts: int | None = None
    max_dead_letters: int | None = None  # lines in the dead-letter file past which run halts; None: no limit

    @property
    def gives_up(self) -> bool:
        return self.give_up_after_s is not None or self.give_up_attempts is not None


@dataclass(frozen=True)
class HttpConfig:
    url: str
    connect_timeout_s: float = 5.0
    timeout_s: float = 15.0  # total per request: connect, TLS, send, answer (--http-timeout)
    retries: int = 2  # quick retries inside one attempt (urllib3)
    retry_after_max_s: float = 5.0
    retry_max_wait_s: float = 30.0  # cap of the wait between attempts during an outage
    bearer_token: Secret | None = None
    signing_secrets: tuple[Secret, ...] = ()  # Standard Webhooks whsec_ secrets, newest first
    headers: tuple[Header, ...] = ()
    ca_file: str | None = None  # trust only these CAs instead of the default bundle
    client_cert: str | None = None  # PEM certificate (may hold the key too) for mutual TLS
    client_key: str | None = None
    format: EventFormat = EventFormat.JSON  # --format: the shape of each request
    cloudevents: CloudEventsConfig = field(default_factory=CloudEventsConfig)


@dataclass(frozen=True)
class LogConfig:
    format: str = "text"
    level: str = "INFO"
    file: str | None = None
    max_bytes: int = 100 * MiB  # 0: no rotation by wal2http (logrotate, then SIGHUP)
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
class BackfillConfig:
    """How ``run`` works backfill requests."""

    chunk_size: int = 1000  # rows per chunk select (--backfill-chunk-size)
    chunk_bytes: int = 32 * MiB  # column text per chunk at most (--backfill-chunk-bytes)
    reselect_toast: bool = False  # follow an update lacking a TOASTed value with a read (--reselect-toast)
    initial: bool = False  # --backfill with --create-slot: request every published table once created
