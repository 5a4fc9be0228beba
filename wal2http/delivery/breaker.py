"""The circuit breaker: after repeated delivery failures, stop sending for a growing cool-down."""

from __future__ import annotations

import random

from wal2http.config.sections import DeliveryConfig
from wal2http.runtime import BreakerState


class Breaker:
    """Decides how long to wait before the next delivery attempt; pure, no clock of its own.

    Closed: failures are retried after a short exponential backoff with full jitter.
    After ``failures`` consecutive failures it opens for ``cooldown_s``; the next attempt is a
    single probe (half-open). A failed probe reopens it with the cool-down doubled, up to
    ``cooldown_max_s``; a success closes it and resets everything.
    """

    def __init__(self, failures: int, cooldown_s: float, cooldown_max_s: float,
                 backoff_max_s: float = 5.0, rng: random.Random | None = None) -> None:
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self.cooldown_max_s = max(cooldown_max_s, cooldown_s)
        self.backoff_max_s = backoff_max_s
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0
        self.opened_count = 0
        self._current_cooldown = cooldown_s
        self._rng = rng or random.Random()

    @classmethod
    def of(cls, delivery: DeliveryConfig) -> Breaker:
        """The breaker the operator's delivery settings describe."""
        return cls(delivery.breaker_failures, delivery.breaker_cooldown_s, delivery.breaker_cooldown_max_s)

    def failure(self, retry_after: float | None = None) -> float:
        """Record a failed attempt; return the seconds to wait before the next one."""
        self.consecutive_failures += 1
        if self.state == BreakerState.HALF_OPEN:
            self._current_cooldown = min(self._current_cooldown * 2, self.cooldown_max_s)
            return self._open(retry_after)
        if self.consecutive_failures >= self.threshold:
            return self._open(retry_after)
        if retry_after is not None:
            return min(retry_after, self.cooldown_max_s)
        ceiling = min(self.backoff_max_s, 0.25 * 2 ** self.consecutive_failures)
        return self._rng.uniform(0, ceiling)

    def before_attempt(self) -> None:
        """Call when the wait is over: an open breaker lets exactly one probe through."""
        if self.state == BreakerState.OPEN:
            self.state = BreakerState.HALF_OPEN

    def success(self) -> None:
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0
        self._current_cooldown = self.cooldown_s

    def _open(self, retry_after: float | None) -> float:
        self.state = BreakerState.OPEN
        self.opened_count += 1
        wait = self._current_cooldown
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.cooldown_max_s))
        return wait
