"""Rows to read again by key for their large (TOASTed) values, and the stream positions they hold.

An update streamed without a large value leaves the receiver without a whole row: its row waits here,
by table and key, with that update's commit. Until a read of the row is confirmed, the stream is not
confirmed past that commit, so a restart streams the update again and queues the row again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wal2http.backfill.chunk import KeyText, identity, key_text
from wal2http.decode.pgoutput import ColumnValue
from wal2http.pg.backfill_model import TableSpec


@dataclass(frozen=True)
class Queued:
    """A row to read again: as the update lacking its TOASTed value streamed it, and that update's commit."""

    new: tuple[ColumnValue, ...]
    commit_lsn: int


# A row a window took to read again: its table's OID, its pending id, and how it was queued.
Taken = tuple[int, bytes, Queued]


def pending_id(key: Mapping[str, Any]) -> bytes:
    """What names a row in the queue: its key columns and values, in column name order."""
    return identity(sorted(key), key)


class Rereads:
    """The rows waiting to be read again, by table OID, and the commits they hold.

    A row leaves the queue when a window takes it (``take``); its hold ends only once that window's
    reads are confirmed (``confirmed``), or the row goes back to the queue if the stream restarts
    first (``put_back``).
    """

    def __init__(self) -> None:
        self._rows: dict[int, dict[bytes, Queued]] = {}
        self._holds: Counter[int] = Counter()

    def hold_lsn(self) -> int | None:
        """The oldest commit of an update whose row is not read again and confirmed yet."""
        return min(self._holds) if self._holds else None

    def count(self, oid: int) -> int:
        return len(self._rows.get(oid, ()))

    def next_table(self, besides: int | None = None) -> int | None:
        """A table with rows to read again, other than ``besides``."""
        return next((oid for oid in self._rows if oid != besides), None)

    def add(self, oid: int, key: Mapping[str, Any], queued: Queued) -> bytes:
        """Queue a row (again); it keeps its newest key texts and the oldest hold. Returns its pending id."""
        rows = self._rows.setdefault(oid, {})
        ident = pending_id(key)
        earlier = rows.get(ident)
        if earlier is None:
            self._holds[queued.commit_lsn] += 1
            rows[ident] = queued
        else:
            rows[ident] = Queued(queued.new, min(earlier.commit_lsn, queued.commit_lsn))
            if queued.commit_lsn < earlier.commit_lsn:
                self._release(earlier.commit_lsn)
                self._holds[queued.commit_lsn] += 1
        return ident

    def keys(self, spec: TableSpec, limit: int) -> tuple[list[bytes], list[KeyText], list[bytes]]:
        """Up to ``limit`` rows of ``spec`` for the next window: their pending ids and key texts, then the
        pending ids of rows that cannot be read by key (dropped from the queue, their holds ended)."""
        pending = self._rows.get(spec.oid, {})
        ids: list[bytes] = []
        keys: list[KeyText] = []
        unreadable: list[bytes] = []
        for ident, queued in list(pending.items()):
            key = key_text(spec, queued.new)
            if key is None:
                del pending[ident]
                self._release(queued.commit_lsn)
                unreadable.append(ident)
                continue
            ids.append(ident)
            keys.append(key)
            if len(ids) >= limit:
                break
        return ids, keys, unreadable

    def take(self, oid: int, idents: list[bytes]) -> list[Taken]:
        """The rows a window read again leave the queue; they hold the stream until ``confirmed``."""
        pending = self._rows.get(oid)
        if pending is None:
            return []
        taken = [(oid, ident, queued) for ident in idents if (queued := pending.pop(ident, None)) is not None]
        if not pending:
            del self._rows[oid]
        return taken

    def confirmed(self, taken: list[Taken]) -> None:
        """The reads of these rows are confirmed: their holds end."""
        for _, _, queued in taken:
            self._release(queued.commit_lsn)

    def put_back(self, taken: list[Taken]) -> None:
        """The stream restarted before these rows' reads were confirmed: they wait to be read again. A row
        queued meanwhile keeps its newer key texts and the older hold."""
        for oid, ident, queued in taken:
            self._release(queued.commit_lsn)
            rows = self._rows.setdefault(oid, {})
            current = rows.get(ident)
            if current is not None:
                if current.commit_lsn <= queued.commit_lsn:
                    continue
                self._release(current.commit_lsn)
                queued = Queued(current.new, queued.commit_lsn)
            self._holds[queued.commit_lsn] += 1
            rows[ident] = queued

    def drop(self, oid: int) -> int:
        """Forget a table's rows (it cannot be read, or its backfill failed); how many there were."""
        rows = self._rows.pop(oid, {})
        for queued in rows.values():
            self._release(queued.commit_lsn)
        return len(rows)

    def _release(self, commit_lsn: int) -> None:
        self._holds[commit_lsn] -= 1
        if self._holds[commit_lsn] <= 0:
            del self._holds[commit_lsn]
