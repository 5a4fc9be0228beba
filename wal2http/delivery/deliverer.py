"""Deliver a batch until the receiver accepts it: retries, the circuit breaker, the reject policy."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wal2http.config.sections import DeliveryConfig, OnReject
from wal2http.decode.events import Event
from wal2http.delivery.batch import Batch
from wal2http.delivery.breaker import Breaker
from wal2http.delivery.deadletter import DeadLetterFile
from wal2http.delivery.lines import DISK_RETRY_MAX_S, write_until_done
from wal2http.delivery.parking import PARKED_ROWS_MAX, record_of, rows_of, rows_text
from wal2http.delivery.resends import Resends
from wal2http.delivery.sink import Sink
from wal2http.errors import (
    DeliveryError,
    DiversionLimit,
    GaveUp,
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


@dataclass(frozen=True)
class GiveUpLimits:
    """When an event that keeps failing (transient) goes to the dead-letter file; pure."""

    after_s: float | None = None
    attempts: int | None = None

    @classmethod
    def of(cls, delivery: DeliveryConfig) -> GiveUpLimits | None:
        if not delivery.gives_up:
            return None
        return cls(delivery.give_up_after_s, delivery.give_up_attempts)

    def reached(self, attempts: int, failing_s: float) -> bool:
        """Whether ``attempts`` failed attempts over ``failing_s`` seconds are enough to give up."""
        return ((self.attempts is not None and attempts >= self.attempts)
                or (self.after_s is not None and failing_s >= self.after_s))

    def wait(self, delay: float, failing_s: float) -> float:
        """The wait before the next attempt: ``delay``, cut so that the last attempt is made at the limit."""
        return delay if self.after_s is None else max(0.0, min(delay, self.after_s - failing_s))

    def describe(self) -> str:
        parts = []
        if self.after_s is not None:
            parts.append(f"--give-up-after {self.after_s:g}")
        if self.attempts is not None:
            parts.append(f"--give-up-attempts {self.attempts}")
        return ", ".join(parts)


class Deliverer:
    """Sends batches through a sink; returns only once every event is accepted or dead-lettered.

    ``wait(seconds)`` is how it pauses between attempts: the pipeline's wait keeps the
    replication stream alive and raises when the operator asked to stop.
    """

    def __init__(self, sink: Sink, breaker: Breaker, wait: Callable[[float], None], *,
                 on_reject: OnReject = OnReject.HALT, dead_letters: DeadLetterFile | None = None,
                 metrics: Metrics | None = None, max_events: int = 1, resends: Resends | None = None,
                 give_up: GiveUpLimits | None = None, max_dead_letters: int | None = None) -> None:
        self.sink = sink
        self.give_up = give_up
        self.max_dead_letters = max_dead_letters
        self.given_up = 0
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
        if dead_letters is not None:
            self.metrics.parked_rows = len(dead_letters.parked)
            if dead_letters.parked:
                logger.warning("%s parked behind dead letters in %s: their changes go to that file until "
                               "it is replayed ('wal2http replay')", rows_text(len(dead_letters.parked)),
                               dead_letters.path)

    def deliver(self, batch: Batch) -> None:
        """Send the events of ``batch`` in order, in requests of at most the size the receiver takes.

        Events of parked rows go to the dead-letter file behind their row's earlier events.
        """
        events = batch.events
        if self.dead_letters is not None and self.dead_letters.parked:  # else no event need be looked at
            events = [event for event in events if not self._park_if_parked(event)]
            if len(events) < len(batch.events):
                batch = Batch(events, sum(len(e.body) for e in events))
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
        except (RejectedError, GaveUp) as e:
            if len(batch.events) == 1:
                self._refused(batch.events[0], e)
                return
            # One failing event must not take the others with it: find it by sending singly.
            what = "kept failing past the give-up limit" if isinstance(e, GaveUp) else f"was rejected ({e.status})"
            logger.warning("batch %s %s; sending its %d events one at a time", batch.batch_id, what,
                           len(batch.events))
            for event in batch.events:
                if self._park_if_parked(event):  # an earlier event of its row was just dead-lettered
                    continue
                try:
                    self._send_until_accepted(Batch.of(event))
                except (RejectedError, GaveUp) as single:  # a single event answered 413 too
                    self._refused(event, single)
                else:
                    self.delivered += 1
            return
        self.delivered += len(batch.events)

    def _refused(self, event: Event, error: RejectedError | GaveUp) -> None:
        if isinstance(error, GaveUp):
            self._give_up(event, error)
        else:
            self.reject(event, str(error), error.status, error.body, error)

    def _give_up(self, event: Event, error: GaveUp) -> None:
        """The event kept failing past the limit: into the dead-letter file, its row parked behind it."""
        assert self.dead_letters is not None  # --give-up-after requires --dead-letter-path
        self._dead_letter(event, str(error), error.status, error.last.body)
        self.dead_lettered += 1
        self.given_up += 1
        self.metrics.rejected(event, True, str(error))
        logger.warning("%s; dead-lettered to %s, later changes of its row follow it there (%s parked)", error,
                       self.dead_letters.path, rows_text(len(self.dead_letters.parked)),
                       extra=correlation(Batch.of(event), None, error.status, None))

    def _park_if_parked(self, event: Event) -> bool:
        """Write ``event`` to the dead-letter file if an earlier event of its row is there; whether it was."""
        dead_letters = self.dead_letters
        if dead_letters is None or not dead_letters.parked:
            return False
        record = event.record
        if not dead_letters.parked.touches((record.get("schema"), record.get("table"))):  # type: ignore[arg-type]
            return False
        rows = rows_of(record_of(event))
        if rows is None or not dead_letters.parked.holds(rows):
            return False
        self._dead_letter(event, "parked: an earlier change of its row is in this file", None, "")
        self.dead_lettered += 1
        self.metrics.parked(event)
        logger.info("parked %s behind an earlier change of its row in %s", event.id, dead_letters.path,
                    extra=correlation(Batch.of(event), None, None, None))
        return True

    def reject(self, event: Event, reason: str, status: int | None, response: str,
               error: RejectedError | None = None) -> None:
        """Apply the reject policy to one event the receiver (or a size limit) refused."""
        if self._park_if_parked(event):  # one over --max-event-bytes, of a parked row: it waits in line
            return
        if self.on_reject == OnReject.HALT:
            raise error or RejectedError(reason, status=status, event_id=event.id, body=response)
        fields = correlation(Batch.of(event), None, status, None)
        if self.on_reject == OnReject.DEAD_LETTER:
            assert self.dead_letters is not None
            self._dead_letter(event, reason, status, response)
            self.dead_lettered += 1
            self.metrics.rejected(event, True, reason)
            logger.warning("dead-lettered %s to %s: %s", event.id, self.dead_letters.path, reason, extra=fields)
        else:
            self.skipped += 1
            self.metrics.rejected(event, False, reason)
            logger.warning("skipped %s (--on-reject skip): %s", event.id, reason, extra=fields)

    def _dead_letter(self, event: Event, reason: str, status: int | None, response: str) -> None:
        """Write a dead letter and park its row; while the disk is full, wait (PostgreSQL hears from us) and
        try again. Past --max-dead-letters, or PARKED_ROWS_MAX parked rows, halt instead (DiversionLimit)."""
        dead_letters = self.dead_letters
        assert dead_letters is not None
        parked = dead_letters.parked
        if event.id in parked.ids:  # sent again after a restart: its line is in the file already
            logger.info("%s is in %s already: not written again", event.id, dead_letters.path)
            return
        if self.max_dead_letters is not None and parked.lines >= self.max_dead_letters:
            raise DiversionLimit(
                f"{parked.lines} events are in the dead-letter file {dead_letters.path} (--max-dead-letters "
                f"{self.max_dead_letters}): stopping rather than diverting the stream to disk; {event.id} "
                f"and what follows are not confirmed. See why with 'wal2http replay --dry-run "
                f"{dead_letters.path}', fix the receiver, replay the file, then start again")
        rows = rows_of(record_of(event))
        if rows is not None and len(parked) + parked.new_rows(rows) > PARKED_ROWS_MAX:
            raise DiversionLimit(
                f"{rows_text(len(parked))} parked behind dead letters in {dead_letters.path}, the most "
                f"wal2http keeps: stopping; {event.id} and what follows are not confirmed. Replay the "
                "file ('wal2http replay') once the receiver takes its events, then start again")
        failures = write_until_done(
            lambda: dead_letters.append(event, reason, status, response), self.wait,
            f"trying again every {DISK_RETRY_MAX_S:.0f} s at most, nothing past it is confirmed meanwhile")
        if failures:
            logger.info("wrote dead letter %s to %s after %d failed attempts", event.id, dead_letters.path, failures)
        self.metrics.parked_rows = len(parked)

    def _send_until_accepted(self, batch: Batch) -> None:
        breaker, metrics, resends = self.breaker, self.metrics, self.resends
        attempt = 0
        failed: TransientDeliveryError | None = None
        # After an event given up the breaker may still be open: this batch's success closes it.
        failing_since = 0.0 if breaker.state == BreakerState.CLOSED else time.monotonic()
        first_failure = 0.0  # when this batch first failed, for --give-up-after
        while True:
            attempt += 1
            breaker.before_attempt()
            metrics.set_breaker(breaker.state)
            resends.request_started()
            if failed is not None and failed.resend_reason:  # the failed try may have reached the receiver
                request_id, events = failed.request or (batch.batch_id, len(batch.events))
                resends.resent(ResendReason(failed.resend_reason), events, request_id, str(failed))
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
                if attempt == 1:
                    first_failure = time.monotonic()
                if self.give_up is not None:
                    failing_s = time.monotonic() - first_failure
                    if self.give_up.reached(attempt, failing_s):
                        raise GaveUp(f"gave up on {batch.batch_id} after {attempt} attempts in {failing_s:.1f} s "
                                     f"({self.give_up.describe()}): {e}", e) from None
                    delay = self.give_up.wait(delay, failing_s)
                fields = correlation(batch, attempt, e.status, took)
                if attempt == 1 and was == BreakerState.CLOSED:
                    failing_since = time.monotonic()
                    logger.warning("delivery of %s failed: %s; retrying %s", batch.batch_id, e,
                                   f"until {self.give_up.describe()}" if self.give_up else "until it succeeds",
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
