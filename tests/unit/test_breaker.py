"""Circuit breaker schedule: short retries, then open with a growing cool-down, one probe, close."""

from __future__ import annotations

import random

from wal2http.delivery.breaker import Breaker
from wal2http.runtime import BreakerState


def breaker() -> Breaker:
    return Breaker(failures=3, cooldown_s=10, cooldown_max_s=35, backoff_max_s=2, rng=random.Random(1))


def test_short_backoff_while_closed() -> None:
    b = breaker()
    waits = [b.failure(), b.failure()]
    assert b.state == BreakerState.CLOSED
    assert all(0 <= w <= 2 for w in waits)


def test_opens_after_threshold_then_probes_then_grows_to_cap() -> None:
    b = breaker()
    b.failure()
    b.failure()
    assert b.failure() == 10 and b.state == BreakerState.OPEN
    b.before_attempt()
    assert b.state == BreakerState.HALF_OPEN
    assert b.failure() == 20 and b.state == BreakerState.OPEN
    b.before_attempt()
    assert b.failure() == 35  # capped
    b.before_attempt()
    assert b.failure() == 35
    assert b.opened_count == 4


def test_success_closes_and_resets_the_cooldown() -> None:
    b = breaker()
    for _ in range(3):
        b.failure()
    b.before_attempt()
    b.success()
    assert b.state == BreakerState.CLOSED and b.consecutive_failures == 0
    for _ in range(2):
        b.failure()
    assert b.failure() == 10


def test_retry_after_is_honoured_but_capped() -> None:
    b = breaker()
    assert b.failure(retry_after=7) == 7
    assert b.failure(retry_after=100) == 35
    assert b.failure(retry_after=12) == 12 and b.state == BreakerState.OPEN  # the longer of cool-down and Retry-After
