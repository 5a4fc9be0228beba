"""Batching by count, bytes and wait time, and where batches carry the commit to confirm."""

from __future__ import annotations

import orjson

from tests.support.events import event
from wal2http.delivery.batch import Batcher


def test_full_by_count() -> None:
    b = Batcher(max_events=2, max_bytes=10_000, max_wait_s=1)
    b.add(event(1))
    assert not b.full
    b.add(event(2))
    assert b.full
    batch = b.take()
    assert [e.id for e in batch.events] == [event(1).id, event(2).id]
    assert not b.pending


def test_byte_limit_sends_oversized_event_alone() -> None:
    b = Batcher(max_events=100, max_bytes=200, max_wait_s=1)
    b.add(event(1))
    big = event(2, pad=500)
    assert b.would_overflow(big)
    first = b.take()
    b.add(big)
    assert b.full
    assert len(first.events) == 1 and len(b.take().events) == 1


def test_wait_time() -> None:
    b = Batcher(max_events=100, max_bytes=10_000, max_wait_s=0.5)
    assert b.seconds_until_due(0) is None
    b.add(event(1))
    opened = b.current.opened_at
    assert b.seconds_until_due(opened + 0.2) == 0.3 or abs(b.seconds_until_due(opened + 0.2) - 0.3) < 1e-9
    assert b.seconds_until_due(opened + 1) == 0.0


def test_commit_mark_makes_an_empty_batch_pending() -> None:
    b = Batcher(max_events=10, max_bytes=10_000, max_wait_s=1)
    b.mark_commit(500)
    assert b.pending
    assert b.take().commit_end_lsn == 500


def test_commit_mark_stays_with_the_batch_holding_the_last_event() -> None:
    b = Batcher(max_events=2, max_bytes=10_000, max_wait_s=1)
    b.add(event(1))
    b.add(event(2))
    first = b.take()  # the transaction is still open: nothing to confirm yet
    b.add(event(3))
    b.mark_commit(900)
    assert first.commit_end_lsn is None
    assert b.take().commit_end_lsn == 900


def test_body_object_or_array_and_batch_id() -> None:
    b = Batcher(max_events=10, max_bytes=10_000, max_wait_s=1)
    b.add(event(1))
    single = b.take()
    assert orjson.loads(single.body(as_array=False))["id"] == single.batch_id
    assert isinstance(orjson.loads(single.body(as_array=True)), list)
    b.add(event(1))
    b.add(event(2))
    two = b.take()
    assert two.batch_id == f"{event(1).id}--{event(2).id}"
    assert [e["id"] for e in orjson.loads(two.body(as_array=True))] == [event(1).id, event(2).id]


def test_a_batch_never_mixes_destinations() -> None:
    batcher = Batcher(max_events=10, max_bytes=10_000, max_wait_s=1.0)
    assert not batcher.goes_elsewhere("a")  # an empty batch goes anywhere
    batcher.add(event(1), "a")
    assert not batcher.goes_elsewhere("a")
    assert batcher.goes_elsewhere("b")
    assert batcher.take().destination == "a"
    batcher.add(event(2), "b")
    assert batcher.current.destination == "b"
