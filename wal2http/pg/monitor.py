"""Slot monitoring on a plain SQL connection: how far behind the slot is and how much WAL it keeps."""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg2

from wal2http.errors import DatabaseError
from wal2http.pg.connection import connect_sql, error_text
from wal2http.pg.slot import Slot, read_slots


class SlotMonitor:
    """Owns one autocommit connection (opened lazily, dropped on error) used only by the main thread.

    Short connect and statement timeouts: a poll must not hold up the main loop for long.
    """

    def __init__(self, dsn: str, slot: str, connect_timeout_s: int = 3, statement_timeout_ms: int = 2000,
                 require_tls: bool = False) -> None:
        self._dsn = dsn
        self.require_tls = require_tls
        self.slot = slot
        self.connect_timeout_s = connect_timeout_s
        self.statement_timeout_ms = statement_timeout_ms
        self._conn: Any = None

    def poll(self) -> Slot | None:
        """The slot's numbers, or None when it does not exist; raises DatabaseError when PostgreSQL fails."""
        try:
            if self._conn is None:
                self._conn = connect_sql(self._dsn, self.connect_timeout_s, self.require_tls)
                with self._conn.cursor() as cur:
                    cur.execute("SET statement_timeout = %s", (self.statement_timeout_ms,))
                    # Told apart from the replication connection in pg_stat_activity.
                    cur.execute("SELECT set_config('application_name',"
                                " left(current_setting('application_name'), 49) || ' slot monitor', false)")
            found = read_slots(self._conn, self.slot)
        except psycopg2.Error as e:
            self.close()
            raise DatabaseError(f"cannot read slot {self.slot!r}: {error_text(e)}") from None
        except DatabaseError:
            self.close()
            raise
        return found[0] if found else None

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self._conn.close()
        self._conn = None

