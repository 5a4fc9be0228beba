"""The run loop: read the slot, build events, deliver batches, confirm, reconnect, stop cleanly."""

from __future__ import annotations

import contextlib
import logging
import random
import select
import signal
import socket
import time
from collections.abc import Iterable, Sequence
from types import FrameType

from wal2http.backfill.driver import Backfill
from wal2http.config.sections import OnReject
from wal2http.config.settings import Config
from wal2http.deadline import limit_all
from wal2http.decode import pgoutput
from wal2http.decode.events import Event, EventBuilder
from wal2http.delivery.ack import AckTracker
from wal2http.delivery.batch import Batch, Batcher
from wal2http.delivery.deadletter import DeadLetterFile
from wal2http.delivery.resends import Resends
from wal2http.delivery.sink import Sink
from wal2http.delivery.until import Until
from wal2http.errors import (
    DatabaseError,
    Interrupted,
    OrderViolation,
    ReplicationLost,
    SlotInUse,
    SlotLost,
    SlotMissing,
    StopRequested,
    Wal2HttpError,
)
from wal2http.lsn import format_lsn
from wal2http.observe.observer import Observer
from wal2http.pg.backfill_model import REQUESTS_SCHEMA, REQUESTS_TABLE, WATERMARK_PREFIX
from wal2http.pg.catalog import Catalog
from wal2http.pg.pending import UNTIL_PREFIX
from wal2http.pg.stream import ReplicationStream
from wal2http.routing.destination import Unroutable, destination_of
from wal2http.routing.routes import RouteSink, deliverers
from wal2http.routing.selection import Selection
from wal2http.runtime import RunState

logger = logging.getLogger(__name__)

IDLE_WAIT_S = 1.0
KEEPALIVE_EVERY_S = 1.0
IDLE_CONFIRM_EVERY_S = 1.0
STANDBY_WAIT_S = 5.0
RECONNECT_BASE_S = 0.5


class Pipeline:
    """Drives source → decode → events → batch → sink → ack, on one thread."""

    def __init__(self, config: Config, stream: ReplicationStream, sink: Sink | None, observer: Observer, *,
                 start_lsn: int = 0, dead_letters: DeadLetterFile | None = None, backfill: Backfill | None = None,
                 catalog: Catalog | None = None, resends: Resends | None = None, until: Until | None = None,
                 routes: Sequence[RouteSink] | None = None) -> None:
        self.config = config
        self.observer = observer
        self.metrics = observer.metrics
        self.stream = stream
        # Retries pause in self.wait, which keeps the stream alive and honours a stop.
        self.deliverer = deliverers(config, sink, routes, self.wait, dead_letters=dead_letters,
                                    metrics=self.metrics, resends=resends)
        # wal2http's own backfill table is never an event source, even under FOR ALL TABLES.
        self.builder = EventBuilder(catalog, hidden=[(REQUESTS_SCHEMA, REQUESTS_TABLE)])
        self.backfill = backfill
        if backfill is not None:
            # Waiting for the SQL connection, the stream is kept alive and watched for silence.
            backfill.connection.on_wait = self._while_sql_waits
        self.messages = config.source.messages  # deliver pg_logical_emit_message() messages
        self.ack = AckTracker(start_lsn)
        b = config.batch
        self.batcher = Batcher(b.max_events, b.max_bytes, b.max_wait_ms / 1000.0)
        self.max_event_bytes = config.delivery.max_event_bytes
        self.select = Selection(config.routing).apply if config.routing.selects else None
        self.destination = destination_of(config.sink) if routes is None else None
        self.stop_requested = False
        self.stop_deadline = float("inf")
        self.reconnects = 0
        self._duplicate = False
        self._delivered_through_seq = 0
        self._read = 0  # events taken from the stream (and backfills) for delivery
        self._streamed = False  # the slot was opened once: a stop has a position to report
        self.until = until  # run --until: where the run ends by itself
        self._read_past_until = False  # a message past --until was taken from the stream, not used
        self._last_commit_end_lsn = start_lsn
        self._last_idle_confirm = 0.0
        # Signals write to this socket so that waits end at once instead of at their timeout.
        self.wakeup, self._wakeup_writer = socket.socketpair()
        self.wakeup.setblocking(False)
        self._wakeup_writer.setblocking(False)

    # -- signals and waiting ----------------------------------------------------

    def wakeup_fd(self) -> int:
        """The descriptor to pass to ``signal.set_wakeup_fd``."""
        return self._wakeup_writer.fileno()

    def request_stop(self, signum: int, _frame: FrameType | None = None) -> None:
        name = signal.Signals(signum).name
        if self.stop_requested:
            raise Interrupted(f"second {name}: stopping now; "
                              "unconfirmed changes will be sent again on the next run")
        self.stop_requested = True
        self.stop_deadline = time.monotonic() + self.config.delivery.shutdown_timeout_s
        # A request hanging now (or started later) ends by then: the stop never waits on a receiver.
        limit_all(self.stop_deadline)
        self.metrics.set_state(RunState.STOPPING, self.stream.connected)
        logger.info("%s received: stopping after the current transaction (at most %.0f s)",
                    name, self.config.delivery.shutdown_timeout_s)

    def wait(self, seconds: float) -> None:
        """Pause, telling PostgreSQL every second that we are alive (when connected).

        Raises StopRequested as soon as a stop is requested: whoever waits (a retry after a failed
        delivery, a reconnection, a stand-by) has nothing deliverable in flight, and waiting out
        --shutdown-timeout for a receiver that is failing would only delay the stop.
        """
        deadline = time.monotonic() + seconds
        while True:
            if self.stream.connected:
                self.stream.keepalive()
            self._tick()
            now = time.monotonic()
            if self.stop_requested:
                raise StopRequested("the stop came while waiting to try again")
            remaining = deadline - now
            if remaining <= 0:
                return
            select.select([self.wakeup], [], [], min(KEEPALIVE_EVERY_S, remaining))
            self._drain_wakeup()

    def _while_sql_waits(self) -> None:
        """What a wait for the backfill's SQL connection must not hold up: the replication stream."""
        stream = self.stream
        if stream.connected:
            stream.wait(0)  # data waiting counts as a sign of life (it is read once the SQL is done)
            stream.keepalive()
            stream.check_alive(self.config.source.replication_timeout_s)
        self._tick()

    def _drain_wakeup(self) -> None:
        try:
            while self.wakeup.recv(512):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        self.stream.close()
        if self.backfill is not None:
            self.backfill.close()
        self.wakeup.close()
        self._wakeup_writer.close()

    # -- connection supervision -------------------------------------------------

    def run(self) -> None:
        """Stream until stopped, reconnecting whenever the replication connection is lost; log a summary,
        also before an error that halts (the error stays the last line), except for a lost slot, whose
        error says what its loss means."""
        try:
            self._supervise()
        except SlotLost:
            raise
        except StopRequested as e:
            # Nothing more can be delivered in this run: what was read and not delivered is not
            # confirmed, and the server sends it again to the next run.
            logger.warning("stopped before the pending changes could be delivered (%s)", e)
            if self.stream.connected:
                with contextlib.suppress(ReplicationLost):
                    self.stream.confirm(self._confirmable(), force=True)
            self._summary()
        except Interrupted:
            self._summary()
            raise
        except Wal2HttpError:  # an error that halts: the stop has a position to report once streaming began
            if self._streamed:
                self._summary()
            raise

    def _supervise(self) -> None:
        failures = 0
        lost_since: float | None = None
        standby = False
        while True:
            try:
                self.stream.open()
            except SlotInUse as e:
                self.metrics.set_state(RunState.STANDBY, connected=False)
                if not standby:
                    logger.warning("%s: standing by until it is free", e)
                    standby = True
                self.wait(random.uniform(0.5, 1.0) * STANDBY_WAIT_S)
                continue
            except SlotMissing as e:
                if self._streamed:
                    raise self._slot_lost(e) from None
                raise DatabaseError(f"{e}: create it with 'wal2http slot create' or --create-slot") from None
            except ReplicationLost as e:
                failures += 1
                self.metrics.replication_lost()
                if lost_since is None:
                    lost_since = time.monotonic()
                    logger.warning("cannot connect for replication: %s; retrying", e)
                self.wait(self._reconnect_delay(failures))
                continue
            if standby:
                logger.info("slot %s is free: taking over", self.stream.slot)
                standby = False
            if lost_since is not None:
                logger.info("replication reconnected after %.1f s (%d attempts)",
                            time.monotonic() - lost_since, failures)
            failures, lost_since, self._streamed = 0, None, True
            self.metrics.set_state(RunState.STOPPING if self.stop_requested else RunState.STREAMING, connected=True)
            try:
                self._stream()
                return
            except ReplicationLost as e:
                self.stream.close()
                self._forget_unconfirmed()
                self.reconnects += 1
                self.metrics.reconnects += 1
                self.metrics.replication_lost()
                failures, lost_since = 1, time.monotonic()
                logger.warning("%s; reconnecting (confirmed up to %s)", e, format_lsn(self.ack.confirmed_lsn))
                self.wait(self._reconnect_delay(failures))

    def _reconnect_delay(self, failures: int) -> float:
        # Exponential backoff with full jitter, so many instances do not reconnect in step.
        cap = self.config.source.reconnect_max_wait_s
        return random.uniform(0, min(cap, RECONNECT_BASE_S * 2 ** min(failures, 16)))

    def _forget_unconfirmed(self) -> None:
        """After a lost connection the server resends from the confirmed position: drop our copy."""
        self.batcher.take()
        self.builder.commit()
        self._duplicate = False
        self._read = self._handled()  # what was read and not handled is read again
        # Commits read but not delivered come again: the order check starts from what was delivered.
        self._last_commit_end_lsn = max(self.ack.delivered_commit_end_lsn, self.ack.confirmed_lsn)
        if self.backfill is not None:
            self.backfill.reset()

    def _slot_lost(self, cause: SlotMissing) -> SlotLost:
        return SlotLost(
            f"{cause} while wal2http was streaming from it (dropped, invalidated after it retained more "
            "than max_slot_wal_keep_size, or lost in a failover to a server that did not have it). Changes "
            f"committed after the last confirmed position {format_lsn(self.ack.confirmed_lsn)} may never "
            "reach the receiver. To recover: drop it if it still exists, create it again with the existing "
            "rows queued for sending ('wal2http slot create --backfill', or 'wal2http backfill --all-tables' "
            "once it exists), then run again: the receiver gets every current row as a 'read' event."
        )

    # -- the stream -------------------------------------------------------------

    def _stream(self) -> None:
        """Read, decode and deliver until a stop; finishes the open transaction first."""
        stream, batcher, builder = self.stream, self.batcher, self.builder
        parse = pgoutput.parse
        # Local names: looked up for every message, and most messages are changes tested last.
        Begin, Commit, Relation, Type, Origin, Message = (
            pgoutput.Begin, pgoutput.Commit, pgoutput.Relation, pgoutput.Type, pgoutput.Origin, pgoutput.Message)
        backfill, until = self.backfill, self.until
        while True:
            if self.stop_requested and (not builder.in_transaction or time.monotonic() >= self.stop_deadline):
                break
            if until is not None and not builder.in_transaction and until.reached():
                break
            msg = stream.read()
            if msg is None:
                if until is not None and not builder.in_transaction and stream.connected:
                    until.beyond(stream.wal_end)  # the server has sent everything up to it
                self._on_quiet()
                continue
            lsn = msg.data_start
            decoded = parse(msg.payload, lsn)
            kind = type(decoded)
            if kind is Begin:
                if until is not None and until.beyond(decoded.commit_lsn) and until.reached():  # type: ignore[union-attr]
                    self._read_past_until = True  # this transaction is for the next run
                    break
                self._begin(decoded)  # type: ignore[arg-type]
            elif kind is Commit:
                self._commit(decoded)  # type: ignore[arg-type]
                if until is not None:
                    until.beyond(decoded.commit_end_lsn)  # type: ignore[union-attr]
            elif kind is Relation:
                builder.relation(decoded)  # type: ignore[arg-type]
                if backfill is not None:
                    backfill.relation_changed(decoded.oid)  # type: ignore[union-attr]
            elif kind is Type:
                builder.type(decoded)  # type: ignore[arg-type]
            elif kind is Origin or self._duplicate:
                pass
            elif kind is Message:
                if until is not None and not builder.in_transaction and until.beyond(lsn) and until.reached():
                    self._read_past_until = True
                    break
                self._message(decoded, lsn)  # type: ignore[arg-type]
                if until is not None and not builder.in_transaction:
                    until.beyond(lsn + 1)  # a message at the position itself: everything before it was sent
            else:
                events = builder.changes(decoded, lsn)  # type: ignore[arg-type]
                if backfill is not None and backfill.watching:
                    backfill.observe(events, decoded)  # type: ignore[arg-type]
                self._enqueue(events)
                if batcher.seconds_until_due(time.monotonic()) == 0.0:
                    self._deliver(batcher.take())
        self._finish()

    def _enqueue(self, events: Iterable[Event]) -> None:
        """Put events into the batch, delivering whenever it fills."""
        batcher = self.batcher
        for event in events:
            if event.seq <= self._delivered_through_seq:
                continue  # delivered before the connection was lost
            selected = event if self.select is None else self.select(event)
            if selected is None:
                continue  # filtered out: its commit is confirmed like any other
            event = selected
            self._read += 1
            if len(event.body) > self.max_event_bytes:
                reason = f"event is {len(event.body)} bytes, over --max-event-bytes {self.max_event_bytes}"
                if event.op == "read" and self.backfill is not None:
                    reason += self.backfill.too_large(event, halts=self.deliverer.on_reject == OnReject.HALT)
                self._refuse(event, reason)
                continue
            where = None
            if self.destination is not None:
                try:
                    where = self.destination.of(event.record)
                except Unroutable as e:
                    self._refuse(event, str(e))
                    continue
            if batcher.would_overflow(event) or batcher.goes_elsewhere(where):
                self._deliver(batcher.take())
            batcher.add(event, where)
            if batcher.full:
                self._deliver(batcher.take())

    def _refuse(self, event: Event, reason: str) -> None:
        """An event that cannot be sent: delivered what came before it, then --on-reject decides."""
        self._deliver(self.batcher.take())
        self.deliverer.reject(event, reason, None, "")
        self.ack.events_delivered(event.commit_lsn, event.seq)

    def _message(self, msg: pgoutput.Message, lsn: int) -> None:
        """A pg_logical_emit_message(): a backfill watermark, or the operator's (sent with --messages)."""
        if msg.prefix == WATERMARK_PREFIX:
            if self.backfill is not None and msg.transactional:
                self._enqueue(self.backfill.watermark(msg.content, self.builder, lsn))
            return
        if msg.prefix == UNTIL_PREFIX:  # a run --until marking where "now" was
            return
        if self.messages:
            self._enqueue(self.builder.changes(msg, lsn))

    def _begin(self, msg: pgoutput.Begin) -> None:
        self.builder.begin(msg)
        if self.backfill is not None:
            self.backfill.saw_transaction(msg.xid)
        self._duplicate = self.ack.already_delivered(msg.commit_lsn)
        self._delivered_through_seq = self.ack.partial_seq(msg.commit_lsn)
        if self._duplicate:
            logger.debug("skipping transaction %s: delivered before the reconnect", format_lsn(msg.commit_lsn))

    def _commit(self, msg: pgoutput.Commit) -> None:
        self.builder.commit()
        if self._duplicate:
            self._duplicate = False
            return
        if msg.commit_end_lsn <= self._last_commit_end_lsn:
            raise OrderViolation(f"commit order violated: commit ending at {format_lsn(msg.commit_end_lsn)} "
                                 f"arrived after one ending at {format_lsn(self._last_commit_end_lsn)}")
        self._last_commit_end_lsn = msg.commit_end_lsn
        self.batcher.mark_commit(msg.commit_end_lsn)
        if self.stop_requested:
            self._deliver(self.batcher.take())

    def _on_quiet(self) -> None:
        """Nothing buffered from the server: send what we hold, confirm, then wait."""
        if self.batcher.pending:
            self._deliver(self.batcher.take())
            return
        if not self.builder.in_transaction and self.ack.idle(self.stream.wal_end):
            # Tell the server soon (not at the next status interval) so an idle slot frees WAL,
            # but at most once a second: keepalives can come in bursts.
            now = time.monotonic()
            force = now - self._last_idle_confirm >= IDLE_CONFIRM_EVERY_S
            if force:
                self._last_idle_confirm = now
            self.stream.confirm(self._confirmable(), force=force)
        # Between transactions: the rows a transaction queued to be read again are read in one window.
        if self.backfill is not None and not self.stop_requested and not self.builder.in_transaction:
            self.backfill.step(self.ack.confirmed_lsn)
        self._tick()
        self.stream.check_alive(self.config.source.replication_timeout_s)
        self.stream.wait(IDLE_WAIT_S, self.wakeup)
        self._drain_wakeup()

    def _finish(self) -> None:
        if self.builder.in_transaction:
            logger.warning("shutdown timeout: stopping inside a transaction; it will be sent again "
                           "on the next run")
            self.batcher.take()
        elif self.batcher.pending:
            self._deliver(self.batcher.take())
        if not self.builder.in_transaction:
            # Nothing is pending: confirm the server's position, or --until's when a transaction past it
            # was read (the server's position may be past that transaction's commit).
            self.ack.idle(self.until.lsn if self.until is not None and self._read_past_until else self.stream.wal_end)
        self.stream.confirm(self._confirmable(), force=True)
        self._tick()
        if self.until is not None and self.until.reached() and not self.stop_requested:
            logger.info("reached --until %s: every transaction committed up to it is delivered%s",
                        format_lsn(self.until.lsn), ", and the backfills queued before the start are done"
                        if self.config.source.until == "now" else "")
        self._summary()

    def _handled(self) -> int:
        """Events delivered, dead-lettered or skipped so far."""
        d = self.deliverer
        return d.delivered + d.dead_lettered + d.skipped

    def _summary(self) -> None:
        """The last line of every stop: what was delivered, what is confirmed, what is left."""
        d, confirmed = self.deliverer, format_lsn(self._confirmable())
        left = self._read - self._handled()
        logger.info(
            "stopped: %d events delivered, %d dead-lettered, %d skipped, %d resent transactions skipped after "
            "reconnects; confirmed %s; %s", d.delivered, d.dead_lettered, d.skipped, self.ack.duplicate_transactions,
            confirmed,
            f"left undelivered: {left} event{'s' if left != 1 else ''} read and not delivered; everything after "
            f"{confirmed} will be sent again on the next run" if left > 0 else
            f"nothing left undelivered of what was read; the next run starts after {confirmed}",
            extra={"events_delivered": d.delivered, "dead_lettered": d.dead_lettered, "skipped": d.skipped,
                   "confirmed_lsn": confirmed, "undelivered_events": max(0, left)})

    def _deliver(self, batch: Batch) -> None:
        """Deliver a batch, then confirm the commit it completes."""
        if batch.events:
            self.deliverer.deliver(batch)
            last = batch.events[-1]
            self.ack.events_delivered(last.commit_lsn, last.seq)
        if batch.commit_end_lsn is not None and self.ack.delivered(batch.commit_end_lsn):
            self.stream.confirm(self._confirmable(), force=True)
            if self.backfill is not None and not self.stop_requested:
                self.backfill.step(self.ack.confirmed_lsn, quiet=False)
        self._tick()

    def _confirmable(self) -> int:
        """What the server may forget: what was delivered, but never an update whose row waits to be read
        again (a restart streams it again, and it queues the row again)."""
        held = self.backfill.hold_lsn() if self.backfill is not None else None
        return self.ack.confirmed_lsn if held is None else min(self.ack.confirmed_lsn, held)

    def _tick(self) -> None:
        """Publish positions for /metrics, then let the observer do what is due (cheap when nothing is)."""
        stream, ack = self.stream, self.ack
        self.metrics.set_positions(stream.wal_end if stream.connected else None, ack.confirmed_lsn,
                                   ack.duplicate_transactions)
        self.observer.tick()
