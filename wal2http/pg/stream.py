"""The replication stream: read pgoutput messages, confirm positions, keep the walsender happy."""

from __future__ import annotations

import contextlib
import logging
import re
import select
import time
from typing import Any

import psycopg2
import psycopg2.errors

from wal2http.errors import DatabaseError, ReplicationLost, SlotInUse, SlotMissing
from wal2http.lsn import format_lsn
from wal2http.pg.connection import connect_replication, error_text

logger = logging.getLogger(__name__)

_ACTIVE_PID_RE = re.compile(r"active for PID (\d+)")


class ReplicationStream:
    """One ``START_REPLICATION`` session at a time on a pgoutput slot; ``open`` again to reconnect."""

    def __init__(self, dsn: str, slot: str, publication: str, *, messages: bool, status_interval_s: float,
                 connect_timeout_s: int = 10, require_tls: bool = False) -> None:
        self._dsn = dsn
        self.slot = slot
        self.publication = publication
        self.messages = messages
        self.status_interval_s = status_interval_s
        self.connect_timeout_s = connect_timeout_s
        self.require_tls = require_tls
        self._conn: psycopg2.extras.LogicalReplicationConnection | None = None
        self._cur: psycopg2.extras.ReplicationCursor | None = None
        self._probed_at: float | None = None
        # When the server last sent us anything (psycopg2's io_timestamp also counts our own sends).
        self._last_received = 0.0

    @property
    def connected(self) -> bool:
        return self._cur is not None

    @property
    def _cursor(self) -> psycopg2.extras.ReplicationCursor:
        if self._cur is None:
            raise ReplicationLost("the replication connection is closed")
        return self._cur

    def open(self) -> None:
        """Connect and start streaming; raises SlotInUse, SlotMissing or ReplicationLost (retry).

        Anything else (DatabaseError: credentials, privileges, TLS refused under --require-tls;
        ConfigError; a bug) is not a lost connection: it halts the run with its own exit code.
        """
        self.close()
        self._conn = connect_replication(self._dsn, self.connect_timeout_s, self.require_tls)
        self._cur = cursor = self._conn.cursor()
        options = {"proto_version": "1", "publication_names": self.publication}
        if self.messages:
            options["messages"] = "true"
        try:
            cursor.start_replication(slot_name=self.slot, decode=False, options=options,
                                     status_interval=self.status_interval_s)  # type: ignore[arg-type]  # a float works
        except psycopg2.errors.ObjectInUse as e:
            self.close()
            match = _ACTIVE_PID_RE.search(str(e))
            raise SlotInUse(f"replication slot {self.slot!r} is in use by another consumer"
                            + (f" (PID {match.group(1)})" if match else ""),
                            int(match.group(1)) if match else None) from None
        except psycopg2.errors.UndefinedObject:
            self.close()
            raise SlotMissing(f"replication slot {self.slot!r} does not exist") from None
        except psycopg2.errors.ObjectNotInPrerequisiteState as e:
            self.close()
            # An invalidated slot (wal_status 'lost') never streams again: retrying cannot help.
            raise SlotMissing(f"replication slot {self.slot!r} cannot be used: {error_text(e)}") from None
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as e:
            self.close()  # the connection broke, or the server is going down: try again
            raise ReplicationLost(f"cannot start replication on slot {self.slot!r}: {error_text(e)}") from None
        except psycopg2.Error as e:
            self.close()  # the server refused the command itself (privileges, an option): it will again
            raise DatabaseError(f"cannot start replication on slot {self.slot!r}: {error_text(e)}") from None
        self._probed_at = None
        self._last_received = time.monotonic()
        logger.info("streaming from slot %s, publication %s", self.slot, self.publication)

    def read(self) -> Any:
        """The next message (``payload``, ``data_start``), or None when none is buffered."""
        try:
            message = self._cursor.read_message()
        except psycopg2.Error as e:
            raise ReplicationLost(f"replication connection lost: {error_text(e)}") from None
        if message is not None:
            self._last_received = time.monotonic()
        return message

    def wait(self, timeout: float, wake: Any = None) -> None:
        """Block until the server sends something, ``wake`` is readable, or ``timeout`` passes."""
        try:
            readable, _, _ = select.select([self._cur] if wake is None else [self._cur, wake], [], [], timeout)
        except (OSError, ValueError) as e:
            raise ReplicationLost(f"replication connection lost: {e}") from None
        if self._cur in readable:  # a keepalive counts: read_message() consumes those silently
            self._last_received = time.monotonic()

    def confirm(self, lsn: int, force: bool = False) -> None:
        """Report ``lsn`` as written and flushed; sent now when ``force``, else at the next status."""
        try:
            self._cursor.send_feedback(write_lsn=lsn, flush_lsn=lsn, force=force)  # type: ignore[no-untyped-call]
        except psycopg2.Error as e:
            raise ReplicationLost(f"cannot confirm {format_lsn(lsn)}: {error_text(e)}") from None
        if logger.isEnabledFor(logging.DEBUG):  # called after every delivery: format only when logged
            logger.debug("confirmed %s", format_lsn(lsn))

    def keepalive(self) -> None:
        """Send a status update now, so ``wal_sender_timeout`` does not end the stream."""
        try:
            self._cursor.send_feedback(force=True)  # type: ignore[no-untyped-call]
        except psycopg2.Error as e:
            raise ReplicationLost(f"replication connection lost: {error_text(e)}") from None

    def check_alive(self, silence_s: float) -> None:
        """Raise ReplicationLost when the server stayed silent too long, even to a direct question.

        A stalled peer (a hung proxy, a half-open connection the kernel has not noticed)
        never fails a read; after ``silence_s`` without a byte we ask the server to answer,
        and give it a quarter of that time.
        """
        now = time.monotonic()
        last = self._last_received
        if now - last < silence_s:
            self._probed_at = None
            return
        if self._probed_at is None or self._probed_at < last:
            try:
                self._cursor.send_feedback(reply=True, force=True)  # type: ignore[no-untyped-call]
            except psycopg2.Error as e:
                raise ReplicationLost(f"replication connection lost: {error_text(e)}") from None
            self._probed_at = now
            return
        if now - self._probed_at > max(1.0, silence_s / 4):
            raise ReplicationLost(f"no word from PostgreSQL for {now - last:.0f} s, "
                                  "not even an answer to a status request")

    @property
    def wal_end(self) -> int:
        """The server's position from the last data message or keepalive."""
        return int(self._cursor.wal_end)

    def close(self) -> None:
        for thing in (self._cur, self._conn):
            if thing is not None:
                with contextlib.suppress(psycopg2.Error):
                    thing.close()
        self._cur = self._conn = None

