"""What a run counts: plain numbers the main thread updates, exposed in Prometheus format on request."""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from wal2http import __version__
from wal2http.runtime import BreakerState, ResendReason, RunState

if TYPE_CHECKING:
    from wal2http.decode.events import Event

OPS = ("insert", "update", "delete", "truncate", "message", "read")
# One request to the sink: accepted, failed and retried, refused for good, or a configuration error (stop).
OUTCOMES = ("success", "failure", "rejected", "error")
ERROR_KINDS = ("replication", "delivery", "rejection", "slot_poll", "notification", "fatal")
BREAKER_GAUGE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
WAL_STATUSES = ("reserved", "extended", "unreserved", "lost")

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 100000)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class Histogram:
    """A cumulative-bucket histogram written by one thread and read by another, without locks.

    A reader may see one observation half-recorded (counted, not yet summed): harmless for
    monitoring, and the bucket counts it reports are always consistent with each other.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float, n: int = 1) -> None:
        """Record ``n`` observations of ``value`` (Prometheus buckets are ``<=`` their bound)."""
        self.counts[bisect_left(self.bounds, value)] += n
        self.sum += value * n

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> tuple[list[tuple[str, float]], float]:
        """``(le, cumulative count)`` pairs ending with ``+Inf``, and the sum."""
        counts, total = list(self.counts), self.sum
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip((*self.bounds, math.inf), counts, strict=True):
            running += n
            buckets.append(("+Inf" if bound == math.inf else repr(bound), running))
        return buckets, total


class Metrics:
    """Every number and state a run reports; one writer (the main thread), any number of readers.

    It always counts, with or without ``--metrics-addr``: the progress line and the
    notifications read it too. Plain attributes and pre-filled dicts keep the hot path to
    integer additions; nothing is looked up by label per event.
    """

    def __init__(self, table_labels: bool = False) -> None:
        self.table_labels = table_labels
        self.events = dict.fromkeys(OPS, 0)
        self.table_events: dict[tuple[str, str, str], int] = {}
        self.events_delivered = 0
        self.deliveries = dict.fromkeys(OUTCOMES, 0)
        self.resent_requests = dict.fromkeys(ResendReason, 0)
        self.resent_events = dict.fromkeys(ResendReason, 0)
        self.delivery_duration = Histogram(DURATION_BUCKETS)
        self.batch_events = Histogram(BATCH_BUCKETS)
        self.commit_to_delivery = Histogram(LATENCY_BUCKETS)
        self.received_lsn = 0
        self.confirmed_lsn = 0
        self.slot_lag_bytes: float | None = None
        self.slot_retained_bytes: float | None = None
        self.slot_safe_wal_size_bytes: float | None = None
        self.slot_wal_status: str | None = None
        self.replication_connected = False
        self.reconnects = 0
        self.breaker_state = BreakerState.CLOSED
        self.breaker_open_since: float | None = None
        self.dead_letters = 0
        self.parked_rows = 0  # rows whose changes go to the dead-letter file behind an earlier one
        self.rejected_skipped = 0
        self.last_rejection = ""
        self.duplicate_transactions = 0
        self.errors = dict.fromkeys(ERROR_KINDS, 0)
        self.backfill_rows: dict[str, int] = {}  # rows sent (confirmed) by table
        self.backfill_table: str | None = None  # the table being backfilled now
        self.backfill_table_rows = 0
        self.state = RunState.STARTING
        self.started_at = time.monotonic()
        # When the main loop last made progress or waited on purpose (time.monotonic()).
        self.heartbeat = self.started_at

    # -- delivery (called by the Deliverer) ----------------------------------------

    def request(self, outcome: str, seconds: float) -> None:
        """One request to the sink finished with ``outcome`` after ``seconds``."""
        self.deliveries[outcome] += 1
        self.delivery_duration.observe(seconds)
        if outcome == "failure":
            self.errors["delivery"] += 1

    def delivered(self, events: Sequence[Event], accepted_at_us: int) -> None:
        """The receiver accepted these events (one request) at ``accepted_at_us`` (Unix microseconds)."""
        n = len(events)
        self.events_delivered += n
        self.batch_events.observe(n)
        self._count(events)
        # Events of one transaction share a commit time: one histogram update per run of them.
        latency, previous, run = self.commit_to_delivery, -1, 0
        for event in events:
            commit_time = event.commit_time_us
            if commit_time != previous:
                if run and previous > 0:
                    latency.observe(max(0.0, (accepted_at_us - previous) / 1e6), run)
                previous, run = commit_time, 0
            run += 1
        if run and previous > 0:
            latency.observe(max(0.0, (accepted_at_us - previous) / 1e6), run)

    def resent(self, reason: ResendReason, events: int) -> None:
        """A request carrying ``events`` events goes to the receiver again, for ``reason``."""
        self.resent_requests[reason] += 1
        self.resent_events[reason] += events

    def rejected(self, event: Event, dead_lettered: bool, reason: str) -> None:
        """An event was refused for good and parked (dead letter) or skipped by the reject policy."""
        self._count((event,))
        self.errors["rejection"] += 1
        if dead_lettered:
            self.dead_letters += 1
        else:
            self.rejected_skipped += 1
        self.last_rejection = f"{event.id}: {reason}"

    def parked(self, event: Event) -> None:
        """An event went to the dead-letter file behind an earlier event of its row (no failure of its own)."""
        self._count((event,))
        self.dead_letters += 1

    def set_breaker(self, state: BreakerState) -> None:
        if state == self.breaker_state:
            return
        if state == BreakerState.CLOSED:
            self.breaker_open_since = None
        elif self.breaker_open_since is None:
            self.breaker_open_since = time.monotonic()
        self.breaker_state = state

    def _count(self, events: Iterable[Event]) -> None:
        counts = self.events
        if not self.table_labels:
            for event in events:
                counts[event.op] += 1
            return
        tables = self.table_events
        for event in events:
            counts[event.op] += 1
            key = (event.op, str(event.record.get("schema") or ""), str(event.record.get("table") or ""))
            tables[key] = tables.get(key, 0) + 1

    # -- the run (called by the pipeline) -------------------------------------------

    def set_state(self, state: RunState, connected: bool) -> None:
        self.state = state
        self.replication_connected = connected

    def replication_lost(self) -> None:
        self.errors["replication"] += 1
        self.set_state(RunState.RECONNECTING, connected=False)

    def set_positions(self, received_lsn: int | None, confirmed_lsn: int, duplicate_transactions: int) -> None:
        if received_lsn is not None and received_lsn > self.received_lsn:
            self.received_lsn = received_lsn
        self.confirmed_lsn = confirmed_lsn
        self.duplicate_transactions = duplicate_transactions

    def set_slot(self, lag: int | None, retained: int | None, safe_wal_size: int | None,
                 wal_status: str | None) -> None:
        self.slot_lag_bytes = None if lag is None else float(lag)
        self.slot_retained_bytes = None if retained is None else float(retained)
        self.slot_safe_wal_size_bytes = None if safe_wal_size is None else float(safe_wal_size)
        self.slot_wal_status = wal_status

    def set_backfill(self, table: str | None, rows_sent: int) -> None:
        """The table being backfilled now (None: none) and its rows sent so far."""
        self.backfill_table = table
        self.backfill_table_rows = rows_sent

    def backfill_rows_sent(self, table: str, n: int) -> None:
        """A backfill chunk of ``table`` was delivered and recorded."""
        self.backfill_rows[table] = self.backfill_rows.get(table, 0) + n
        self.backfill_table_rows += n

    # -- exposition -----------------------------------------------------------------

    def registry(self) -> CollectorRegistry:
        """A registry of its own (not prometheus_client's global one) with the process metrics."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        return registry


class _Collector(Collector):
    """Turns a Metrics object into metric families at scrape time (on the admin thread)."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.m
        info = GaugeMetricFamily("wal2http_build_info", "wal2http version; always 1.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield self._events()
        yield _counter("wal2http_events_delivered", "Events the receiver accepted.", m.events_delivered)
        deliveries = CounterMetricFamily("wal2http_deliveries", "Requests to the sink, by outcome: success, "
                                         "failure (retried), rejected (refused for good), error (stopped).",
                                         labels=["outcome"])
        for outcome, n in list(m.deliveries.items()):
            deliveries.add_metric([outcome], n)
        yield deliveries
        for name, doc, counts in (
                ("wal2http_resent_requests", "Requests sent to the receiver again with the same webhook-id, by "
                 "reason: status, timeout, connection, malformed-answer, interim.", m.resent_requests),
                ("wal2http_resent_events", "Events carried by resent requests, by reason.", m.resent_events)):
            family = CounterMetricFamily(name, doc, labels=["reason"])
            for reason, n in list(counts.items()):
                family.add_metric([reason.value], n)
            yield family
        yield _histogram("wal2http_delivery_duration_seconds", "Duration of each request to the sink.",
                         m.delivery_duration)
        yield _histogram("wal2http_batch_events", "Events per accepted request.", m.batch_events)
        yield _histogram("wal2http_commit_to_delivery_seconds",
                         "Receiver acceptance time minus the commit time of each delivered event.",
                         m.commit_to_delivery)
        yield _gauge("wal2http_received_lsn", "Last WAL position received from PostgreSQL, in bytes.",
                     m.received_lsn)
        yield _gauge("wal2http_confirmed_lsn", "Last WAL position confirmed to PostgreSQL, in bytes.",
                     m.confirmed_lsn)
        yield _gauge("wal2http_slot_lag_bytes", "WAL between the server's position and the slot's "
                     "confirmed_flush_lsn (NaN until polled).", m.slot_lag_bytes)
        yield _gauge("wal2http_slot_retained_bytes", "WAL the slot keeps on the server's disk, from its "
                     "restart_lsn (NaN until polled).", m.slot_retained_bytes)
        yield _gauge("wal2http_slot_safe_wal_size_bytes", "WAL that can still be written before the slot is "
                     "in danger of losing WAL (NaN when max_slot_wal_keep_size is unlimited).",
                     m.slot_safe_wal_size_bytes)
        status = GaugeMetricFamily("wal2http_slot_wal_status", "The slot's wal_status: 1 for the current one.",
                                   labels=["status"])
        current = m.slot_wal_status
        for name in WAL_STATUSES:
            status.add_metric([name], 1 if name == current else 0)
        yield status
        yield _gauge("wal2http_main_loop_idle_seconds", "Seconds since the main loop last made progress or "
                     "waited on purpose (/healthz fails past --health-stall-seconds).",
                     max(0.0, time.monotonic() - m.heartbeat))
        yield _gauge("wal2http_replication_connected", "1 while the replication connection is streaming.",
                     1 if m.replication_connected else 0)
        yield _counter("wal2http_reconnects", "Replication connections lost and opened again.", m.reconnects)
        yield _gauge("wal2http_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open.",
                     BREAKER_GAUGE[m.breaker_state])
        yield _counter("wal2http_dead_letters", "Events refused by the receiver and written to the dead-letter "
                       "file.", m.dead_letters)
        yield _gauge("wal2http_parked_rows", "Rows (a truncated table counting as one) whose changes go to the "
                     "dead-letter file behind an earlier one until it is replayed.", m.parked_rows)
        yield _counter("wal2http_duplicates_skipped", "Transactions resent by PostgreSQL after a reconnect and "
                       "skipped because they were delivered already.", m.duplicate_transactions)
        backfill = CounterMetricFamily("wal2http_backfill_rows", "Rows sent as read events by backfills, "
                                       "counted once their chunk is confirmed.", labels=["table"])
        for table, n in list(m.backfill_rows.items()):
            backfill.add_metric([table], n)
        yield backfill
        yield _gauge("wal2http_backfill_active", "1 while a table is being backfilled.",
                     1 if m.backfill_table is not None else 0)
        errors = CounterMetricFamily("wal2http_errors", "Errors by kind.", labels=["kind"])
        for kind, n in list(m.errors.items()):
            errors.add_metric([kind], n)
        yield errors

    def _events(self) -> CounterMetricFamily:
        m = self.m
        doc = "Change events delivered, dead-lettered or skipped, by operation."
        if not m.table_labels:
            family = CounterMetricFamily("wal2http_events", doc, labels=["op"])
            for op, n in list(m.events.items()):
                family.add_metric([op], n)
            return family
        family = CounterMetricFamily("wal2http_events", doc, labels=["op", "schema", "table"])
        for (op, schema, table), n in list(m.table_events.items()):
            family.add_metric([op, schema, table], n)
        return family


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=math.nan if value is None else value)


def _histogram(name: str, doc: str, histogram: Histogram) -> HistogramMetricFamily:
    buckets, total = histogram.cumulative()
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=total)
