"""Where ``run --until`` ends: a WAL position, then the backfills that were queued before the run started."""

from __future__ import annotations

import time
from collections.abc import Callable

BACKFILL_POLL_S = 1.0  # how often the backfills still to finish are read once the position is passed


class Until:
    """Transactions whose commit is at or before ``lsn`` are delivered; the run ends once the stream shows a
    position past it (``passed``) and none of ``backfills`` (task ids) is unfinished any more.

    ``unfinished(ids)`` says which of the ids are not finished yet; it is asked at most every
    BACKFILL_POLL_S, and only once the position is passed.
    """

    def __init__(self, lsn: int, backfills: frozenset[int] = frozenset(),
                 unfinished: Callable[[frozenset[int]], frozenset[int]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lsn = lsn
        self.backfills = backfills
        self._unfinished = unfinished
        self._clock = clock
        self.passed = False
        self._next_poll = 0.0

    def beyond(self, position: int) -> bool:
        """Whether ``position`` (a commit's or a message's) lies past the end; remembers that it was seen."""
        if position > self.lsn:
            self.passed = True
        return position > self.lsn

    def reached(self) -> bool:
        """The position is passed and the backfills are done: the run ends at the next transaction boundary."""
        if not self.passed:
            return False
        if self.backfills and self._unfinished is not None and self._clock() >= self._next_poll:
            self.backfills = self._unfinished(self.backfills)
            self._next_poll = self._clock() + BACKFILL_POLL_S
        return not self.backfills
