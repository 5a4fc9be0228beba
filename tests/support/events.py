"""Events as a receiver got them: checks that they came in commit order, once, and were confirmed."""

from __future__ import annotations

from typing import Any

from tests.support import wait_until
from tests.support.pgcluster import Database
from wal2http.lsn import parse_lsn

__all__ = ["assert_confirmed_past", "assert_in_commit_order"]


def assert_in_commit_order(events: list[dict[str, Any]]) -> None:
    positions = [(parse_lsn(e["commit_lsn"]), e["seq"]) for e in events]
    assert positions == sorted(positions), "events out of commit order"
    assert len({e["id"] for e in events}) == len(events), "an event arrived twice"


def assert_confirmed_past(db: Database, events: list[dict[str, Any]], slot: str = "wal2http") -> None:
    last_commit = parse_lsn(events[-1]["commit_lsn"])
    wait_until(lambda: (db.cluster.confirmed_flush_lsn(slot) or 0) > last_commit, timeout=20,
               what="confirmed_flush_lsn past the last commit")
