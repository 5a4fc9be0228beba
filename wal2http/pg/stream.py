"""The replication stream: read pgoutput messages, confirm positions, keep the walsender happy."""

from __future__ import annotations

import contextlib
import logging
import select
from typing import Any

import psycopg2

from wal2http.errors import DatabaseError, ReplicationLost
from wal2http.lsn import format_lsn
from wal2http.pg.connection import connect_replication

logger = logging.getLogger(__name__)


class ReplicationStream:
    """One ``START_REPLICATION`` session on a pgoutput slot."""

    def __init__(self, dsn: str, slot: str, publication: str, *, messages: bool, status_interval_s: float,
                 connect_timeout_s: int = 10) -> None:
        self._dsn = dsn
        self.slot = slot
        self.publication = publication
        self.messages = messages
        self.status_interval_s = status_interval_s
        self.connect_timeout_s = connect_timeout_s
        self._conn: Any = None
        self._cur: Any = None

    def open(self) -> None:
        self._conn = connect_replication(self._dsn, self.connect_timeout_s)
        self._cur = self._conn.cursor()
        options = {"proto_version": "1", "publication_names": self.publication}
        if self.messages:
            options["messages"] = "true"
        try:
            self._cur.start_replication(
                slot_name=self.slot,
                decode=False,
                options=options,
                status_interval=self.status_interval_s,
            )
        except psycopg2.Error as e:
            self.close()
            raise DatabaseError(f"cannot start replication on slot {self.slot!r}: {str(e).strip()}") from None
        logger.info("streaming from slot %s, publication %s", self.slot, self.publication)

    def read(self) -> Any:
        """The next message (``payload``, ``data_start``), or None when none is buffered."""
        try:
            return self._cur.read_message()
        except psycopg2.Error as e:
            reason = str(e).strip() or type(e).__name__
            raise ReplicationLost(f"replication connection lost: {reason}") from None

    def wait(self, timeout: float, wake: Any = None) -> None:
        """Block until the server sends something, ``wake`` is readable, or ``timeout`` passes."""
        try:
            select.select([self._cur] if wake is None else [self._cur, wake], [], [], timeout)
        except (OSError, ValueError) as e:
            raise ReplicationLost(f"replication connection lost: {e}") from None

    def confirm(self, lsn: int, force: bool = False) -> None:
        """Report ``lsn`` as written and flushed; sent now when ``force``, else at the next status."""
        try:
            self._cur.send_feedback(write_lsn=lsn, flush_lsn=lsn, force=force)
        except psycopg2.Error as e:
            raise ReplicationLost(f"cannot confirm {format_lsn(lsn)}: {str(e).strip()}") from None
        logger.debug("confirmed %s", format_lsn(lsn))

    def keepalive(self) -> None:
        """Send a status update now, so ``wal_sender_timeout`` does not end the stream."""
        try:
            self._cur.send_feedback(force=True)
        except psycopg2.Error as e:
            raise ReplicationLost(f"replication connection lost: {str(e).strip()}") from None

    @property
    def wal_end(self) -> int:
        """The server's position from the last data message or keepalive."""
        return int(self._cur.wal_end)

    def close(self) -> None:
        for thing in (self._cur, self._conn):
            if thing is not None:
                with contextlib.suppress(psycopg2.Error):
                    thing.close()
        self._cur = self._conn = None
