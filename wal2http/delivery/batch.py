"""Group encoded events into batches bounded by count, bytes and wait time."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from wal2http.decode.events import Event


@dataclass(slots=True)
class Batch:
    """Events to send in one request, and the commit they complete (if any)."""

    events: list[Event] = field(default_factory=list)
    nbytes: int = 0
    # End LSN of the last transaction whose final event is in this batch or an earlier one.
    commit_end_lsn: int | None = None
    opened_at: float = 0.0
    destination: object = None  # where every event of the batch goes, when the URL or headers are templates

    @classmethod
    def of(cls, event: Event) -> Batch:
        """A batch holding one event (to send an event of a refused batch on its own)."""
        return cls(events=[event], nbytes=len(event.body))

    @property
    def batch_id(self) -> str:
        """The ``webhook-id``: the event id, or first and last ids joined by ``--``."""
        if len(self.events) == 1:
            return self.events[0].id
        return f"{self.events[0].id}--{self.events[-1].id}"

    def body(self, as_array: bool) -> bytes:
        """The request body: one JSON object, or a JSON array of them."""
        if not as_array and len(self.events) == 1:
            return self.events[0].body
        # Brackets on the first and last parts, so the whole body is copied once, by the join:
        # b"[" + ... + b"]" made three bodies of up to --batch-bytes each, and the allocator
        # handed their memory back and forth to the kernel.
        parts = [e.body for e in self.events]
        if not parts:
            return b"[]"
        parts[0] = b"[" + parts[0]
        parts[-1] = parts[-1] + b"]"
        return b",".join(parts)


class Batcher:
    """Accumulates events; the pipeline asks it when a batch must be sent."""

    def __init__(self, max_events: int, max_bytes: int, max_wait_s: float) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_wait_s = max_wait_s
        self.current = Batch()

    def add(self, event: Event, destination: object = None) -> None:
        batch = self.current
        if not batch.events:
            batch.opened_at = time.monotonic()
            batch.destination = destination
        batch.events.append(event)
        batch.nbytes += len(event.body)

    def mark_commit(self, commit_end_lsn: int) -> None:
        """A transaction ended: once this batch is delivered, ``commit_end_lsn`` may be confirmed."""
        self.current.commit_end_lsn = commit_end_lsn

    def would_overflow(self, event: Event) -> bool:
        """True when adding ``event`` would push a non-empty batch past its byte limit."""
        batch = self.current
        return bool(batch.events) and batch.nbytes + len(event.body) > self.max_bytes

    def goes_elsewhere(self, destination: object) -> bool:
        """True when the open batch holds events for another destination: a batch never mixes them."""
        batch = self.current
        return bool(batch.events) and batch.destination != destination

    @property
    def full(self) -> bool:
        batch = self.current
        return len(batch.events) >= self.max_events or batch.nbytes >= self.max_bytes

    @property
    def pending(self) -> bool:
        """True when there is something to send or to confirm."""
        return bool(self.current.events) or self.current.commit_end_lsn is not None

    def seconds_until_due(self, now: float) -> float | None:
        """Seconds until the open batch must be sent; None when it holds no event."""
        if not self.current.events:
            return None
        return max(0.0, self.current.opened_at + self.max_wait_s - now)

    def take(self) -> Batch:
        batch, self.current = self.current, Batch()
        return batch
