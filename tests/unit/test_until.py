"""Where ``run --until`` ends, and how resent requests are reported: the pure parts."""

from __future__ import annotations

import logging

import pytest

from wal2http.delivery.resends import Resends
from wal2http.delivery.until import BACKFILL_POLL_S, Until
from wal2http.observe.metrics import Metrics
from wal2http.runtime import ResendReason


def test_the_end_is_reached_only_past_the_position() -> None:
    until = Until(100)
    assert not until.beyond(100) and not until.reached()  # a commit at the position itself is delivered
    assert until.beyond(101) and until.reached()


def test_backfills_queued_before_the_start_are_waited_for_polled_at_most_every_second() -> None:
    now = [0.0]
    asked: list[frozenset[int]] = []
    left = {1, 2}

    def unfinished(ids: frozenset[int]) -> frozenset[int]:
        asked.append(ids)
        return frozenset(ids & left)

    until = Until(100, frozenset({1, 2}), unfinished, clock=lambda: now[0])
    assert not until.reached() and asked == []  # the position first
    until.beyond(200)
    assert not until.reached() and len(asked) == 1
    left.discard(1)
    assert not until.reached() and len(asked) == 1  # not asked again within the second
    now[0] += BACKFILL_POLL_S
    assert not until.reached() and len(asked) == 2  # task 2 is still running
    now[0] += BACKFILL_POLL_S
    left.discard(2)
    assert until.reached() and asked[-1] == frozenset({2})


def test_resends_are_counted_every_time_and_logged_once_per_streak(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    resends = Resends(metrics)
    caplog.set_level(logging.WARNING)
    for _ in range(3):
        resends.request_started()
        resends.resent(ResendReason.MALFORMED_ANSWER, 2, "A-1", "BadStatusLine")
        resends.accepted(1)  # accepted, but only after a resend: the streak goes on
    assert metrics.resent_requests[ResendReason.MALFORMED_ANSWER] == 3
    assert metrics.resent_events[ResendReason.MALFORMED_ANSWER] == 6
    assert len(caplog.records) == 1 and "malformed-answer" in caplog.records[0].getMessage()
    resends.request_started()
    resends.accepted(1)  # a clean request ends the streak
    resends.request_started()
    resends.resent(ResendReason.MALFORMED_ANSWER, 1, "B-1", "BadStatusLine")
    assert len(caplog.records) == 2
