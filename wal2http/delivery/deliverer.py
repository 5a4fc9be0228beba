"""Deliver a batch until the receiver accepts it: retries, the circuit breaker, the reject policy."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from wal2http.config.sections import OnReject
from wal2http.decode.events import Event
from wal2http.delivery.batch import Batch
from wal2http.delivery.breaker import Breaker
from wal2http.delivery.deadletter import DeadLetterFile
from wal2http.delivery.lines import DISK_RETRY_MAX_S, write_until_done
from wal2http.delivery.resends import Resends
from wal2http.delivery.sink import Sink
from wal2http.errors import (
    DeliveryError,
    PayloadTooLarge,
    RejectedError,
    TransientDeliveryError,
)
from wal2http.lsn import format_lsn
from wal2http.observe.metrics import Metrics
from wal2http.runtime import BreakerState, ResendReason

logger = logging.getLogger(__name__)

# Requests accepted at a reduced size before a larger one is tried; doubled after each try that failed.
GROW_AFTER = 16
GROW_AFTER_MAX = 1024


class SizeLimit:
    """How many events one request may carry, learnt from 413 answers; pure.

    A 413 halves the size, or goes back to the size that last passed when a larger try failed.
    After GROW_AFTER requests accepted at the limit it grows by a quarter, until batches
    go whole again.
    """

    def __init__(self, max_events: int) -> None:
        self.max_events = max_events
        self.ceiling: int | None = None  # None: batches go whole
        self._passed = 0  # the largest size accepted since the limit was last lowered below it
        self._streak = 0
        self._grow_after = GROW_AFTER

    def size(self, available: int) -> int:
        return available if self.ceiling is None else min(available, self.ceiling)

    def too_large(self, size: int) -> int:
        """``size`` events were answered 413: the new limit (below ``size``)."""
        if 0 < self._passed < size:
            self.ceiling = self._passed  # a larger try failed: back to what passed, try again later
            self._grow_after = min(self._grow_after * 2, GROW_AFTER_MAX)
        else:
            self.ceiling = max(1, size // 2)
            self._passed = 0
        self._streak = 0
        return self.ceiling

    def accepted(self, size: int) -> int | None:
        """``size`` events were accepted in one request: the new limit when it grows, else None."""
        if self.ceiling is None:
            return None
        self._passed = max(self._passed, size)
        if size < self.ceiling:
            return None
        self._streak += 1
        if self._streak < self._grow_after:
            return None
        self._streak = 0
        grown = self.ceiling + max(1, self.ceiling // 4)
        self.ceiling = None if grown >= self.max_events else grown
        return grown


class Deliverer:
    """Sends batches through a sink; returns only once every event is accepted or parked.

    ``wait(seconds)`` is how it pauses between attempts: the pipeline's wait keeps the
    replication stream alive and raises when the operator asked to stop.
    """

    def __init__(self, sink: Sink, breaker: Breaker, wait: Callable[[float], None], *,
                 on_reject: OnReject = OnReject.HALT, dead_letters: DeadLetterFile | None = None,
                 metrics: Metrics | None = None, max_events: int = 1, resends: Resends | None = None) -> None:
        self.sink = sink
        self.breaker = breaker
        self.wait = wait
        self.on_reject = on_reject
        self.dead_letters = dead_letters
        self.delivered = 0
        self.dead_lettered = 0
        self.skipped = 0
        self.metrics = metrics or Metrics()
        self.resends = resends or Resends(self.metrics)
        self.size_limit = SizeLimit(max_events)

    def deliver(self, batch: Batch) -> None:
        """Send the events of ``batch`` in order, in requests of at most the size the receiver takes."""
        events = batch.events
        start = 0
        while start < len(events):
            size = self.size_limit.size(len(events) - start)
            part = batch if size == len(events) else Batch(events[start:start + size])
            try:
                self._deliver_part(part)
            except PayloadTooLarge as e:
                if size == 1:
                    self.reject(events[start], str(e), e.status, e.body, e)
                    start += 1
                    continue
                limit = self.size_limit.too_large(size)
                logger.warning("receiver answered 413 (payload too large) to %d events (%s): sending at most "
                               "%d per request from now on", size, part.batch_id, limit)
                continue
            start += size
            grown = self.size_limit.accepted(size)
            if grown is not None:
                logger.info("receiver took %d events per request for a while: trying %s", size,
                            f"up to {grown}" if self.size_limit.ceiling else "whole batches again")

    def _deliver_part(self, batch: Batch) -> None:
        try:
            self._send_until_accepted(batch)
        except PayloadTooLarge:
            raise  # a matter of size, not of these events: deliver() sends fewer
        except RejectedError as e:
            if len(batch.events) == 1:
                self.reject(batch.events[0], str(e), e.status, e.body, e)
                return
            # One refused event must not take the others with it: find it by sending singly.
            logger.warning("receiver rejected batch %s (%s); sending its %d events one at a time",
                           batch.batch_id, e.status, len(batch.events))
            for event in batch.events:
                try:
                    self._send_until_accepted(Batch.of(event))
                except RejectedError as single:  # a single event answered 413 too
                    self.reject(event, str(single), single.status, single.body, single)
                else:
                    self.delivered += 1
            return
        self.delivered += len(batch.events)

    def reject(self, event: Event, reason: str, status: int | None, response: str,
               error: RejectedError | None = None) -> None:
        """Apply the reject policy to one event the receiver (or a size limit) refused."""
        if self.on_reject == OnReject.HALT:
            raise error or RejectedError(reason, status=status, event_id=event.id, body=response)
        fields = correlation(Batch.of(event), None, status, None)
        if self.on_reject == OnReject.DEAD_LETTER:
            assert self.dead_letters is not None
            self._park(event, reason, status, response)
            self.dead_lettered += 1
            self.metrics.rejected(event, True, reason)
            logger.warning("dead-lettered %s to %s: %s", event.id, self.dead_letters.path, reason, extra=fields)
        else:
            self.skipped += 1
            self.metrics.rejected(event, False, reason)
            logger.warning("skipped %s (--on-reject skip): %s", event.id, reason, extra=fields)

    def _park(self, event: Event, reason: str, status: int | None, response: str) -> None:
        """Write a dead letter; while the disk is full, wait (PostgreSQL hears from us) and try again."""
        dead_letters = self.dead_letters
        assert dead_letters is not None
        failures = write_until_done(
            lambda: dead_letters.append(event, reason, status, response), self.wait,
            f"trying again every {DISK_RETRY_MAX_S:.0f} s at most, nothing past it is confirmed meanwhile")
        if failures:
            logger.info("wrote dead letter %s to %s after %d failed attempts", event.id, dead_letters.path, failures)

    def _send_until_accepted(self, batch: Batch) -> None:
        breaker, metrics, resends = self.breaker, self.metrics, self.resends
        attempt = 0
        failing_since = 0.0
        failed: TransientDeliveryError | None = None
        while True:
            attempt += 1
            breaker.before_attempt()
            metrics.set_breaker(breaker.state)
            resends.request_started()
            if failed is not None and failed.resend_reason:  # the failed try may have reached the receiver
                resends.resent(ResendReason(failed.resend_reason), len(batch.events), batch.batch_id, str(failed))
            started = time.perf_counter()
            try:
                status = self.sink.send(batch)
            except TransientDeliveryError as e:
                failed = e
                took = time.perf_counter() - started
                metrics.request("failure", took)
                was = breaker.state
                delay = breaker.failure(e.retry_after)
                metrics.set_breaker(breaker.state)
                fields = correlation(batch, attempt, e.status, took)
                if attempt == 1 and was == BreakerState.CLOSED:
                    failing_since = time.monotonic()
                    logger.warning("delivery of %s failed: %s; retrying until it succeeds", batch.batch_id, e,
                                   extra=fields)
                elif was == BreakerState.HALF_OPEN:
                    logger.warning("probe failed: circuit breaker open again for %.0f s (%s)", delay, e,
                                   extra=fields)
                elif breaker.state == BreakerState.OPEN:
                    logger.warning("circuit breaker open after %d failed attempts: no requests for %.0f s "
                                   "(last error: %s)", breaker.consecutive_failures, delay, e, extra=fields)
                else:
                    logger.debug("delivery of %s failed again (attempt %d): %s", batch.batch_id, attempt, e,
                                 extra=fields)
                self.wait(delay)
                continue
            except DeliveryError as e:
                took = time.perf_counter() - started
                metrics.request("rejected" if isinstance(e, RejectedError) else "error", took)
                logger.debug("%s refused %s: %s", "receiver" if e.status else "sink", batch.batch_id, e,
                             extra=correlation(batch, attempt, e.status, took))
                raise
            took = time.perf_counter() - started
            metrics.request("success", took)
            metrics.delivered(batch.events, time.time_ns() // 1000)
            if attempt > 1 or breaker.state != BreakerState.CLOSED:
                logger.info("delivery recovered: %s accepted after %d attempts in %.1f s; circuit breaker closed",
                            batch.batch_id, attempt, time.monotonic() - failing_since,
                            extra=correlation(batch, attempt, status, took))
            elif logger.isEnabledFor(logging.DEBUG):
                logger.debug("delivered %s (%d events)", batch.batch_id, len(batch.events),
                             extra=correlation(batch, attempt, status, took))
            breaker.success()
            metrics.set_breaker(breaker.state)
            resends.accepted(attempt)
            return


def correlation(batch: Batch, attempt: int | None, status: int | None, seconds: float | None) -> dict[str, Any]:
    """The fields that tie a log record to a request: the ``webhook-id`` sent, and where it came from."""
    first = batch.events[0]
    return {
        "event_id" if len(batch.events) == 1 else "batch_id": batch.batch_id,
        "xid": first.xid,
        "commit_lsn": format_lsn(first.commit_lsn) if first.commit_lsn else None,
        "attempt": attempt,
        "status": status,
        "duration_ms": None if seconds is None else round(seconds * 1000, 1),
    }
