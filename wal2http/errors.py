"""The exception hierarchy: one root, an exit code per class, mapped once in wal2http.cli.app."""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """Process exit codes of every command except ``slot status``."""

    OK = 0
    ERROR = 1
    USAGE = 2
    DATABASE = 3
    DELIVERY = 4
    INTERRUPTED = 130


class Wal2HttpError(Exception):
    """Root of every error wal2http raises on purpose."""

    exit_status: ExitStatus = ExitStatus.ERROR


class ConfigError(Wal2HttpError):
    """The configuration is invalid; nothing was started."""

    exit_status = ExitStatus.USAGE


class KeylessTable(ConfigError):
    """A table without a primary key or replica identity index cannot be backfilled (read in key order)."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.fix = (f"ALTER TABLE {table} ADD PRIMARY KEY (...), or ALTER TABLE {table} REPLICA IDENTITY "
                    "USING INDEX a_unique_index")
        super().__init__(f"table {table} has neither a primary key nor a replica identity index: a backfill "
                         f"reads it in key order; add one ({self.fix})")


class FileUnwritable(ConfigError):
    """A file wal2http writes (events, dead letters) cannot be written, and waiting will not change that."""


class DatabaseError(Wal2HttpError):
    """PostgreSQL refused, failed or is unreachable."""

    exit_status = ExitStatus.DATABASE


class LockUnavailable(DatabaseError):
    """A statement gave up waiting for a table's lock (lock_timeout): DDL holds it; try again later."""


class ReplicationLost(DatabaseError):
    """The replication connection broke while streaming; wal2http reconnects."""


class SlotInUse(DatabaseError):
    """Another consumer streams from the slot; wal2http stands by."""

    def __init__(self, message: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class SlotMissing(DatabaseError):
    """The replication slot does not exist (any more)."""


class SlotLost(DatabaseError):
    """The slot this process was streaming from disappeared: changes after the confirmed position may be lost."""


class OrderViolation(ReplicationLost):
    """The server sent a commit that does not come after the previous one; wal2http reconnects."""


class DecodeError(DatabaseError):
    """A pgoutput message could not be decoded."""

    def __init__(self, message: str, lsn: int | None = None) -> None:
        from wal2http.lsn import format_lsn

        where = f" at LSN {format_lsn(lsn)}" if lsn else ""
        super().__init__(f"cannot decode pgoutput message{where}: {message}")
        self.lsn = lsn


class DeliveryError(Wal2HttpError):
    """The receiver refused events and delivery cannot go on."""

    exit_status = ExitStatus.DELIVERY

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        event_id: str | None = None,
        body: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.event_id = event_id
        self.body = body


class DeliveryConfigError(DeliveryError):
    """The receiver says wal2http is misconfigured (401, 403, 404, 410): always halts."""


class RejectedError(DeliveryError):
    """The receiver refused an event for good; the reject policy decides what follows."""


class PayloadTooLarge(RejectedError):
    """The receiver answered 413: send fewer events per request; only a single event is refused for good."""


class DiversionLimit(DeliveryError):
    """The dead-letter file reached --max-dead-letters, or too many rows are parked: run halts."""


class GaveUp(DeliveryError):
    """An event kept failing past --give-up-after/--give-up-attempts; never leaves the deliverer."""

    def __init__(self, message: str, last: TransientDeliveryError) -> None:
        super().__init__(message, status=last.status)
        self.last = last


class TransientDeliveryError(DeliveryError):
    """A delivery attempt failed in a way worth retrying (network, timeout, 429, 5xx): never halts."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None,
                 resend_reason: str | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after
        # Why trying again sends the request again (a runtime.ResendReason); None when it never left.
        self.resend_reason = resend_reason
        # The request that failed, as (webhook-id, events), when the batch went out as several requests
        # (cloudevents-binary): only it goes again; None when it was the whole batch.
        self.request: tuple[str, int] | None = None


class UnmappableEvent(Wal2HttpError):
    """A change cannot take the form its sink requires (a Hook0 field breaks a rule); the message says which."""


class Interrupted(Wal2HttpError):
    """A second interrupt asked for an immediate stop."""

    exit_status = ExitStatus.INTERRUPTED


class StopRequested(Wal2HttpError):
    """Raised inside a wait when a stop was asked for and cannot wait any longer; ``run`` exits 0."""

    exit_status = ExitStatus.OK
