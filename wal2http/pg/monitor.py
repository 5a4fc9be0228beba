"""Slot monitoring on its own SQL connection: how far behind the slot is and how much WAL it keeps."""

from __future__ import annotations

import psycopg2

from wal2http.errors import DatabaseError
from wal2http.pg.connection import LazyConnection, error_text
from wal2http.pg.slot import Slot, read_slots


class SlotMonitor:
    """Polls the slot on a lazy connection used only by the main thread, dropped on error.

    Short connect, statement and answer timeouts: a poll must not hold up the main loop for long,
    even on a stalled network path.
    """

    def __init__(self, dsn: str, slot: str, connect_timeout_s: int = 3, statement_timeout_ms: int = 2000,
                 require_tls: bool = False) -> None:
        self.slot = slot
        self._connection = LazyConnection(dsn, connect_timeout_s=connect_timeout_s,
                                          statement_timeout_ms=statement_timeout_ms,
                                          answer_timeout_s=connect_timeout_s, require_tls=require_tls,
                                          purpose="slot monitor")

    def poll(self) -> Slot | None:
        """The slot's numbers, or None when it does not exist; raises DatabaseError when PostgreSQL fails."""
        try:
            found = read_slots(self._connection.get(), self.slot)
        except psycopg2.Error as e:
            self.close()
            raise DatabaseError(f"cannot read slot {self.slot!r}: {error_text(e)}") from None
        except DatabaseError:
            self.close()
            raise
        return found[0] if found else None

    def close(self) -> None:
        self._connection.close()
