"""Events: one factory for tests of what comes after decoding, and checks on events as a receiver got them."""

from __future__ import annotations

from typing import Any

from tests.support import wait_until
from tests.support.pgcluster import Database
from wal2http.decode.events import Event, encode, event_id
from wal2http.lsn import parse_lsn

__all__ = ["assert_confirmed_past", "assert_in_commit_order", "event"]


def event(commit_lsn: int = 1, seq: int = 1, op: str = "insert", *, xid: int | None = 1, commit_time_us: int = 0,
          record: dict[str, Any] | None = None, pad: int = 0, body: bytes | None = None) -> Event:
    """An Event as the decoder makes it: id ``<commit LSN>-<seq>`` as wal2http writes ids; the record is
    ``{"id": id}`` unless given (with ``pad`` x's under "pad" to make it larger), the body its JSON unless
    given."""
    the_id = event_id(commit_lsn, seq)
    if record is None:
        record = {"id": the_id, **({"pad": "x" * pad} if pad else {})}
    return Event(the_id, op, xid, commit_lsn, commit_time_us, seq, record, encode(record) if body is None else body)


def assert_in_commit_order(events: list[dict[str, Any]]) -> None:
    positions = [(parse_lsn(e["commit_lsn"]), e["seq"]) for e in events]
    assert positions == sorted(positions), "events out of commit order"
    assert len({e["id"] for e in events}) == len(events), "an event arrived twice"


def assert_confirmed_past(db: Database, events: list[dict[str, Any]], slot: str = "wal2http") -> None:
    last_commit = parse_lsn(events[-1]["commit_lsn"])
    wait_until(lambda: (db.cluster.confirmed_flush_lsn(slot) or 0) > last_commit, timeout=20,
               what="confirmed_flush_lsn past the last commit")
