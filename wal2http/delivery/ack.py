"""The confirmed position: the highest commit end LSN whose events are all delivered."""

from __future__ import annotations


class AckTracker:
    """Decides which WAL position may be confirmed to PostgreSQL.

    Invariants (tested in tests/unit/test_ack.py): the confirmed LSN never moves
    backwards, only moves to a commit end LSN after that transaction was delivered,
    or to the server's ``wal_end`` while nothing is pending.
    """

    def __init__(self, start_lsn: int = 0) -> None:
        self.confirmed_lsn = start_lsn
        self.delivered_commit_end_lsn = start_lsn
        self.duplicate_transactions = 0
        # The last event delivered, to resume inside a transaction that was cut off.
        self._partial_commit_lsn = -1
        self._partial_seq = 0

    def delivered(self, commit_end_lsn: int) -> bool:
        """Record that a transaction ending at ``commit_end_lsn`` was fully delivered.

        Returns True when the confirmed LSN moved forward.
        """
        if commit_end_lsn > self.delivered_commit_end_lsn:
            self.delivered_commit_end_lsn = commit_end_lsn
        return self._advance(commit_end_lsn)

    def idle(self, wal_end: int) -> bool:
        """Confirm the server's ``wal_end``; call only when no change is pending."""
        return self._advance(wal_end)

    def already_delivered(self, commit_lsn: int) -> bool:
        """True for a transaction resent after a reconnect that this process delivered.

        ``commit_lsn`` is the start of its commit record (from Begin); every commit record
        begins after the end of the previous one, so a new transaction is never below
        the end of the last delivered commit.
        """
        if commit_lsn < self.delivered_commit_end_lsn:
            self.duplicate_transactions += 1
            return True
        return False

    def events_delivered(self, commit_lsn: int, seq: int) -> None:
        """Record the last delivered event of a transaction that may not be complete yet."""
        self._partial_commit_lsn = commit_lsn
        self._partial_seq = seq

    def partial_seq(self, commit_lsn: int) -> int:
        """Events of this transaction up to this ``seq`` were delivered before a reconnect."""
        return self._partial_seq if commit_lsn == self._partial_commit_lsn else 0

    def _advance(self, lsn: int) -> bool:
        if lsn > self.confirmed_lsn:
            self.confirmed_lsn = lsn
            return True
        return False
