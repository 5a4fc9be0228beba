"""The deliverer: 413 means fewer events per request, never a refused event; what counts as resent."""

from __future__ import annotations

import pytest

from tests.support.events import event
from wal2http.config.cloudevents import CloudEventsConfig, EventFormat
from wal2http.config.sections import OnReject
from wal2http.delivery.batch import Batch
from wal2http.delivery.breaker import Breaker
from wal2http.delivery.deliverer import GROW_AFTER, Deliverer, SizeLimit
from wal2http.delivery.resends import Resends
from wal2http.errors import PayloadTooLarge, RejectedError, TransientDeliveryError
from wal2http.observe.metrics import Metrics
from wal2http.runtime import ResendReason
from wal2http.sinks.cloudevents import Formatter, Parts, Request


class LimitedReceiver:
    """Answers 413 to more than ``limit`` events per request, else accepts; records every request."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.requests: list[int] = []
        self.accepted: list[str] = []

    def send(self, batch: Batch) -> int:
        self.requests.append(len(batch.events))
        if len(batch.events) > self.limit:
            raise PayloadTooLarge("413", status=413)
        self.accepted.extend(e.id for e in batch.events)
        return 200

    def close(self) -> None:
        pass


def deliverer(sink: LimitedReceiver, max_events: int, on_reject: OnReject = OnReject.HALT) -> Deliverer:
    return Deliverer(sink, Breaker(5, 1, 1), lambda _s: None, on_reject=on_reject, max_events=max_events)


def test_413_halves_until_it_fits_and_keeps_that_size() -> None:
    sink = LimitedReceiver(limit=30)
    d = deliverer(sink, max_events=100)
    events = [event(n) for n in range(1, 301)]
    for start in range(0, 300, 100):
        d.deliver(Batch(events[start:start + 100]))
    assert sink.accepted == [e.id for e in events]  # in order, once
    assert sink.requests[:3] == [100, 50, 25]  # halved twice, then kept
    assert sink.requests.count(100) == 1 and sink.requests.count(50) == 1
    assert d.size_limit.ceiling == 25
    assert d.delivered == 300 and d.skipped == 0


def test_a_single_event_answered_413_goes_to_the_reject_policy() -> None:
    sink = LimitedReceiver(limit=0)
    d = deliverer(sink, max_events=8, on_reject=OnReject.SKIP)
    d.deliver(Batch([event(n) for n in range(1, 9)]))
    assert d.skipped == 8
    assert sink.requests[:4] == [8, 4, 2, 1]
    with pytest.raises(RejectedError):
        deliverer(LimitedReceiver(limit=0), max_events=2).deliver(Batch([event(1), event(2)]))


def test_the_size_grows_back_gradually_and_returns_to_what_passed() -> None:
    limit = SizeLimit(max_events=100)
    assert limit.too_large(100) == 50
    for _ in range(GROW_AFTER - 1):
        assert limit.accepted(50) is None
    assert limit.accepted(50) == 62  # a quarter more
    assert limit.too_large(62) == 50  # back to the size that passed, not half of 62
    for _ in range(2 * GROW_AFTER - 1):  # a failed try doubles the wait before the next one
        assert limit.accepted(50) is None
    assert limit.accepted(50) == 62


def test_whole_batches_again_once_grown_to_the_batch_size() -> None:
    limit = SizeLimit(max_events=10)
    assert limit.too_large(10) == 5
    grown = [limit.accepted(5) for _ in range(GROW_AFTER)][-1]
    assert grown == 6 and limit.ceiling == 6
    while limit.ceiling is not None:
        limit.accepted(limit.ceiling)
    assert limit.size(10) == 10


def test_smaller_batches_do_not_count_toward_growth() -> None:
    limit = SizeLimit(max_events=100)
    limit.too_large(100)
    for _ in range(10 * GROW_AFTER):
        assert limit.accepted(3) is None
    assert limit.ceiling == 50


class BinaryReceiver:
    """cloudevents-binary as the http sink sends it (one request per event, Parts); answers 503 once to the
    request of ``failing``."""

    def __init__(self, failing: str) -> None:
        self.failing: str | None = failing
        self.posted: list[str] = []
        self._formatter = Formatter(EventFormat.CLOUDEVENTS_BINARY, CloudEventsConfig(source="/test"), False)
        self._parts = Parts()

    def send(self, batch: Batch) -> int | None:
        return self._parts.send(self._formatter.requests(batch), self._post)

    def _post(self, request: Request) -> int:
        (sent,) = request.batch.events
        self.posted.append(sent.id)
        if sent.id == self.failing:
            self.failing = None
            raise TransientDeliveryError("503", status=503, resend_reason=ResendReason.STATUS)
        return 200

    def close(self) -> None:
        pass


def test_a_batch_sent_again_in_binary_mode_counts_only_the_failed_request_as_resent() -> None:
    events = [event(n) for n in range(1, 6)]
    sink = BinaryReceiver(failing=events[2].id)
    metrics = Metrics()
    d = Deliverer(sink, Breaker(5, 0, 0), lambda _s: None, metrics=metrics, max_events=5, resends=Resends(metrics))
    d.deliver(Batch(events))
    ids = [e.id for e in events]
    assert sink.posted == [*ids[:3], *ids[2:]]  # the two accepted before the failure are not sent again
    assert metrics.resent_requests[ResendReason.STATUS] == 1
    assert metrics.resent_events[ResendReason.STATUS] == 1
