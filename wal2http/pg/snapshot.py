"""Whether a chunk select saw the transactions already read from the stream: its snapshot against their xids.

Logical decoding may send a transaction before it is visible to other sessions: its commit record is
flushed, then it leaves the proc array (with synchronous replication, only once a standby confirmed).
A change read from the stream before a low watermark, by a transaction the chunk's select did not
see, would otherwise be overwritten by the chunk's older row.
"""

from __future__ import annotations

from dataclasses import dataclass

XID_SPAN = 1 << 32
STREAMED_XIDS = 10_000  # streamed transactions remembered until a snapshot has seen them


@dataclass(frozen=True)
class Snapshot:
    """``pg_current_snapshot()``: xids from ``xmax`` on, and those in ``in_progress``, are not visible."""

    xmin: int
    xmax: int
    in_progress: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        """``xmin:xmax:xip,xip,...`` (64-bit xids, as pg_snapshot prints them)."""
        xmin, xmax, xip = text.split(":")
        return cls(int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x))

    def sees(self, xid: int) -> bool:
        """Whether a committed transaction with this 32-bit xid (as pgoutput sends it) is visible."""
        # The 64-bit xid nearest to xmax with these low 32 bits: stream xids are recent ones.
        full = (self.xmax & ~(XID_SPAN - 1)) | (xid & (XID_SPAN - 1))
        if full > self.xmax + XID_SPAN // 2:
            full -= XID_SPAN
        elif full < self.xmax - XID_SPAN // 2:
            full += XID_SPAN
        if full >= self.xmax:
            return False
        return full < self.xmin or full not in self.in_progress
