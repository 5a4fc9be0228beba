"""The run loop: read the slot, build events, deliver batches, confirm, stop cleanly."""

from __future__ import annotations

import logging
import random
import select
import signal
import socket
import time
from types import FrameType

from wal2http.ack import AckTracker
from wal2http.batch import Batch, Batcher
from wal2http.config import Config
from wal2http.decode import pgoutput
from wal2http.errors import Interrupted, TransientDeliveryError
from wal2http.events import EventBuilder
from wal2http.lsn import format_lsn
from wal2http.pg.connection import connect_sql
from wal2http.pg.slot import prepare
from wal2http.pg.stream import ReplicationStream
from wal2http.sinks import Sink, make_sink

logger = logging.getLogger(__name__)

IDLE_WAIT_S = 1.0
KEEPALIVE_EVERY_S = 1.0
IDLE_CONFIRM_EVERY_S = 1.0


class StopRequested(Exception):
    """Raised inside a delivery wait when the operator asked to stop."""


class Pipeline:
    """Drives source → decode → events → batch → sink → ack, on one thread."""

    def __init__(self, config: Config, stream: ReplicationStream, sink: Sink) -> None:
        self.config = config
        self.stream = stream
        self.sink = sink
        self.builder = EventBuilder()
        self.ack = AckTracker()
        b = config.batch
        self.batcher = Batcher(b.max_events, b.max_bytes, b.max_wait_ms / 1000.0)
        self.stop_requested = False
        self.events_delivered = 0
        self._skipping = False
        self._last_idle_confirm = 0.0
        # Signals write to this socket so that waits end at once instead of at their timeout.
        self.wakeup, self._wakeup_writer = socket.socketpair()
        self.wakeup.setblocking(False)
        self._wakeup_writer.setblocking(False)

    def wakeup_fd(self) -> int:
        """The descriptor to pass to ``signal.set_wakeup_fd``."""
        return self._wakeup_writer.fileno()

    def close(self) -> None:
        self.wakeup.close()
        self._wakeup_writer.close()

    def _drain_wakeup(self) -> None:
        try:
            while self.wakeup.recv(512):
                pass
        except BlockingIOError:
            pass

    # -- signals ---------------------------------------------------------------

    def request_stop(self, signum: int, _frame: FrameType | None = None) -> None:
        if self.stop_requested:
            raise Interrupted(f"second {signal.Signals(signum).name}: stopping now; "
                              "unconfirmed changes will be sent again on the next run")
        self.stop_requested = True
        logger.info("%s received: stopping after the current transaction", signal.Signals(signum).name)

    # -- the loop --------------------------------------------------------------

    def run(self) -> None:
        """Stream until asked to stop; returns after the last commit was confirmed."""
        stream, batcher, builder = self.stream, self.batcher, self.builder
        parse = pgoutput.parse
        while True:
            if self.stop_requested and not builder.in_transaction:
                break
            msg = stream.read()
            if msg is None:
                self._on_quiet()
                continue
            lsn = msg.data_start
            decoded = parse(msg.payload, lsn)
            kind = type(decoded)
            if kind is pgoutput.Begin:
                builder.begin(decoded)  # type: ignore[arg-type]
                self._skipping = self.ack.already_delivered(decoded.final_lsn)  # type: ignore[union-attr]
            elif kind is pgoutput.Commit:
                builder.commit()
                if self._skipping:
                    self._skipping = False
                    continue
                batcher.mark_commit(decoded.end_lsn)  # type: ignore[union-attr]
                if self.stop_requested:
                    self._deliver(batcher.take())
            elif kind is pgoutput.Relation:
                builder.relation(decoded)  # type: ignore[arg-type]
            elif kind is pgoutput.Type:
                builder.type(decoded)  # type: ignore[arg-type]
            elif kind is pgoutput.Origin:
                pass
            elif not self._skipping:
                for event in builder.changes(decoded, lsn):  # type: ignore[arg-type]
                    if batcher.would_overflow(event):
                        self._deliver(batcher.take())
                    batcher.add(event)
                    if batcher.full:
                        self._deliver(batcher.take())
                if batcher.seconds_until_due(time.monotonic()) == 0.0:
                    self._deliver(batcher.take())
        self._finish()

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
            self.stream.confirm(self.ack.confirmed_lsn, force=force)
        self.stream.wait(IDLE_WAIT_S, self.wakeup)
        self._drain_wakeup()

    def _finish(self) -> None:
        if self.batcher.pending:
            self._deliver(self.batcher.take())
        if not self.builder.in_transaction:
            self.ack.idle(self.stream.wal_end)
        self.stream.confirm(self.ack.confirmed_lsn, force=True)
        logger.info("stopped: %d events delivered, confirmed %s",
                    self.events_delivered, format_lsn(self.ack.confirmed_lsn))

    # -- delivery --------------------------------------------------------------

    def _deliver(self, batch: Batch) -> None:
        """Send a batch until the receiver accepts it, then confirm what it completes."""
        if batch.events:
            self._send_until_accepted(batch)
            self.events_delivered += len(batch.events)
        if batch.ack_lsn is not None and self.ack.delivered(batch.ack_lsn):
            self.stream.confirm(self.ack.confirmed_lsn, force=True)

    def _send_until_accepted(self, batch: Batch) -> None:
        attempt = 0
        failing_since = 0.0
        while True:
            attempt += 1
            try:
                self.sink.send(batch)
            except TransientDeliveryError as e:
                if attempt == 1:
                    failing_since = time.monotonic()
                    logger.warning("delivery of %s failed: %s; retrying until it succeeds",
                                   batch.batch_id, e)
                else:
                    logger.debug("delivery of %s failed again (attempt %d): %s", batch.batch_id, attempt, e)
                self._wait_keeping_alive(self._retry_delay(attempt, e.retry_after))
                continue
            if attempt > 1:
                logger.info("delivered %s after %d attempts (%.1f s)", batch.batch_id, attempt,
                            time.monotonic() - failing_since)
            return

    def _retry_delay(self, attempt: int, retry_after: float | None) -> float:
        cap = self.config.sink.http.retry_max_wait_s if self.config.sink.http else 30.0
        if retry_after is not None:
            return min(retry_after, cap)
        # Exponential backoff with full jitter, so many instances do not retry in step.
        return random.uniform(0, min(cap, 0.5 * 2 ** min(attempt, 16)))

    def _wait_keeping_alive(self, seconds: float) -> None:
        """Sleep between attempts, telling PostgreSQL we are alive at least every second."""
        deadline = time.monotonic() + seconds
        while True:
            self.stream.keepalive()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self.stop_requested:
                raise StopRequested()
            select.select([self.wakeup], [], [], min(KEEPALIVE_EVERY_S, remaining))
            self._drain_wakeup()


def run(config: Config) -> None:
    """``wal2http run``: prepare the slot, stream until stopped."""
    src = config.source
    conn = connect_sql(src.dsn.reveal(), src.connect_timeout_s)
    try:
        info = prepare(conn, src.slot, src.publication, src.create_slot)
    finally:
        conn.close()
    if info.confirmed_flush_lsn is not None:
        logger.info("slot %s confirmed up to %s", src.slot, format_lsn(info.confirmed_flush_lsn))
    sink = make_sink(config.sink, as_array=config.batch.max_events > 1)
    stream = ReplicationStream(src.dsn.reveal(), src.slot, src.publication, messages=src.messages,
                               status_interval_s=src.status_interval_s,
                               connect_timeout_s=src.connect_timeout_s)
    pipeline = Pipeline(config, stream, sink)
    if info.confirmed_flush_lsn is not None:
        pipeline.ack = AckTracker(info.confirmed_flush_lsn)
    previous = {s: signal.signal(s, pipeline.request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    previous_wakeup_fd = signal.set_wakeup_fd(pipeline.wakeup_fd(), warn_on_full_buffer=False)
    try:
        stream.open()
        pipeline.run()
    except StopRequested:
        logger.warning("stopped while a delivery was failing; %s and later changes are not confirmed "
                       "and will be sent again on the next run", format_lsn(pipeline.ack.confirmed_lsn))
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        signal.set_wakeup_fd(previous_wakeup_fd)
        pipeline.close()
        stream.close()
        sink.close()
