"""Replication slot SQL: the slot record and its one query; create, drop, and the consumer holding a slot."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg2
import psycopg2.errors

from wal2http.errors import DatabaseError, SlotInUse
from wal2http.lsn import format_lsn, parse_lsn
from wal2http.pg.connection import Connection, error_text, query

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Slot:
    """One logical slot as ``pg_replication_slots`` and ``pg_stat_replication_slots`` show it: the one
    record every command reads (run's start, slot status, check-config, the slot monitor)."""

    name: str
    plugin: str
    database: str
    active: bool
    active_pid: int | None = None
    application_name: str | None = None
    wal_status: str | None = None
    safe_wal_size: int | None = None  # None: unlimited (max_slot_wal_keep_size = -1) or lost
    restart_lsn: int | None = None
    confirmed_flush_lsn: int | None = None
    lag_bytes: int | None = None  # current WAL position - confirmed_flush_lsn
    retained_bytes: int | None = None  # current WAL position - restart_lsn: the WAL the slot keeps
    spill_txns: int | None = None
    spill_count: int | None = None
    spill_bytes: int | None = None
    stream_txns: int | None = None
    stream_count: int | None = None
    stream_bytes: int | None = None
    total_txns: int | None = None
    total_bytes: int | None = None
    # Columns of newer servers; None where the server has no such column.
    conflicting: bool | None = None  # 16+: invalidated by a recovery conflict (on a standby)
    invalidation_reason: str | None = None  # 17+: why the slot can no longer be used
    inactive_since: str | None = None  # 17+: when its last consumer went away (UTC, ISO 8601)
    failover: bool | None = None  # 17+: kept in sync on standbys (sync_replication_slots)
    synced: bool | None = None  # 17+: a standby's copy synced from the primary

    @property
    def invalidated(self) -> bool:
        """The slot can never stream again: WAL it needs is gone (``lost``), or the server
        invalidated it for another reason (18's ``idle_timeout``, a recovery conflict, ...)."""
        return self.wal_status == "lost" or self.invalidation_reason is not None or bool(self.conflicting)

    def why_invalidated(self) -> str:
        reason = self.invalidation_reason or ("recovery conflict" if self.conflicting else "wal_removed")
        return {"wal_removed": "PostgreSQL removed WAL it needs (wal_status lost)",
                "idle_timeout": "it was inactive longer than idle_replication_slot_timeout",
                "rows_removed": "a standby conflict: rows it needed were removed",
                "wal_level_insufficient": "wal_level was lowered below logical"}.get(
                    reason, f"PostgreSQL invalidated it ({reason})")


@dataclass(frozen=True)
class Consumer:
    """The backend streaming from a slot (a walsender), as ``pg_stat_activity`` shows it."""

    pid: int
    application_name: str | None
    client_addr: str | None

    def describe(self) -> str:
        name = repr(self.application_name) if self.application_name else "unknown (not visible to this role)"
        client = f", client {self.client_addr}" if self.client_addr else ""
        return f"PID {self.pid} (application_name {name}{client})"


def in_use(slot: str, holder: Consumer) -> SlotInUse:
    """The error refusing to drop a slot that ``holder`` consumes."""
    return SlotInUse(f"replication slot {slot!r} is active: {holder.describe()} is consuming it; "
                     "stop that consumer first, or pass --force to terminate it and drop the slot", holder.pid)


def _lsn(text: str | None) -> int | None:
    return parse_lsn(text) if text else None


def find_slot(conn: Connection, name: str) -> Slot | None:
    """The logical slot ``name``, in whichever database it is; None when there is none."""
    found = read_slots(conn, name)
    return found[0] if found else None


def create_slot(conn: Connection, name: str, failover: bool = False) -> int:
    """Create a pgoutput slot, with failover (PostgreSQL 17+) when asked; return its consistent point."""
    if failover:
        # Arguments: temporary, two-phase, failover.
        rows = query(conn, "SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'pgoutput', false, false,"
                           " true)", (name,), what=f"create failover replication slot {name!r}")
    else:
        rows = query(conn, "SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'pgoutput')", (name,),
                     what=f"create replication slot {name!r}")
    lsn = parse_lsn(rows[0][0])
    logger.info("created replication slot %s (pgoutput%s) at %s", name, ", failover" if failover else "",
                format_lsn(lsn))
    return lsn


def consumer(conn: Connection, pid: int) -> Consumer:
    """Who runs backend ``pid``; the name and address stay unknown when the role may not see them."""
    rows = query(conn, "SELECT application_name, host(client_addr) FROM pg_stat_activity WHERE pid = %s",
                 (pid,), what=f"look up PID {pid}")
    if not rows:
        return Consumer(pid, None, None)
    return Consumer(pid, rows[0][0] or None, rows[0][1])


def drop_slot(conn: Connection, name: str) -> None:
    """Drop a slot; SlotInUse when a consumer holds it."""
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_drop_replication_slot(%s)", (name,))
    except psycopg2.errors.ObjectInUse:
        info = find_slot(conn, name)
        pid = info.active_pid if info and info.active_pid else 0
        raise in_use(name, consumer(conn, pid)) from None
    except psycopg2.Error as e:
        raise DatabaseError(f"cannot drop replication slot {name!r}: {error_text(e)}") from None
    logger.info("dropped replication slot %s", name)


def terminate(conn: Connection, pid: int) -> None:
    """Ask PostgreSQL to end backend ``pid`` (needs superuser, pg_signal_backend or the same role)."""
    query(conn, "SELECT pg_terminate_backend(%s)", (pid,), what=f"terminate PID {pid}")


# pg_current_wal_lsn() fails on a standby; a standby's slots are measured against what it replayed.
_SLOTS_SQL = """
WITH here AS (
  SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END AS lsn
)
SELECT s.slot_name, s.plugin, s.database, s.active, s.active_pid, a.application_name,
       s.wal_status, s.safe_wal_size, s.restart_lsn::text, s.confirmed_flush_lsn::text,
       pg_wal_lsn_diff(here.lsn, s.confirmed_flush_lsn)::bigint,
       pg_wal_lsn_diff(here.lsn, s.restart_lsn)::bigint,
       st.spill_txns, st.spill_count, st.spill_bytes, st.stream_txns, st.stream_count, st.stream_bytes,
       st.total_txns, st.total_bytes,
       -- Columns added by later versions, read through to_jsonb so one query serves 14 to 18.
       (to_jsonb(s) ->> 'conflicting')::bool, to_jsonb(s) ->> 'invalidation_reason',
       to_char((to_jsonb(s) ->> 'inactive_since')::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
       (to_jsonb(s) ->> 'failover')::bool, (to_jsonb(s) ->> 'synced')::bool
FROM pg_replication_slots s
CROSS JOIN here
LEFT JOIN pg_stat_replication_slots st ON st.slot_name = s.slot_name
LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid
WHERE s.slot_type = 'logical'
  AND (%(slot)s::text IS NULL OR s.slot_name = %(slot)s)
  AND (%(slot)s::text IS NOT NULL OR s.database = current_database())
ORDER BY s.slot_name
"""


def read_slots(conn: Connection, name: str | None) -> list[Slot]:
    """The logical slot ``name`` (any database), or every logical slot of the connected database."""
    rows = query(conn, _SLOTS_SQL, {"slot": name}, what="read replication slots")
    return [
        Slot(
            name=r[0], plugin=r[1] or "", database=r[2] or "", active=bool(r[3]), active_pid=r[4],
            application_name=r[5] or None, wal_status=r[6], safe_wal_size=r[7],
            restart_lsn=_lsn(r[8]), confirmed_flush_lsn=_lsn(r[9]),
            lag_bytes=r[10], retained_bytes=r[11],
            spill_txns=r[12], spill_count=r[13], spill_bytes=r[14],
            stream_txns=r[15], stream_count=r[16], stream_bytes=r[17],
            total_txns=r[18], total_bytes=r[19],
            conflicting=r[20], invalidation_reason=r[21], inactive_since=r[22], failover=r[23], synced=r[24],
        )
        for r in rows
    ]
