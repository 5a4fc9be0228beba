"""The backfill work of ``run``: pick up requests, read chunks between watermarks, record confirmed progress."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from wal2http.backfill.chunk import Chunk
from wal2http.decode.events import Event, EventBuilder, RelationFacts
from wal2http.decode.pgoutput import Relation
from wal2http.errors import ConfigError, DatabaseError, ReplicationLost
from wal2http.lsn import format_lsn
from wal2http.observe.metrics import Metrics
from wal2http.pg import backfill as store
from wal2http.pg.backfill_model import (
    Mark,
    State,
    TableSpec,
    Task,
    Watermark,
    new_token,
)
from wal2http.pg.connection import LazyConnection
from wal2http.pg.snapshot import STREAMED_XIDS, Snapshot

logger = logging.getLogger(__name__)

POLL_S = 2.0  # how often the requests table is read while no backfill runs
RETRY_S = 5.0  # pause after a database error
MAX_FAILURES = 5  # consecutive errors on one table before it is given up
# The next chunk waits for a quiet stream (changes first), but never longer than this.
MAX_DEFER_S = 0.5
VISIBILITY_RETRY_S = 0.2  # a chunk that missed a streamed transaction is selected again this much later
VISIBILITY_WARN_S = 10.0
STATEMENT_TIMEOUT_MS = 10_000


@dataclass
class _Active:
    """The table being backfilled, as described when it started (a change of shape ends it)."""

    task: Task
    spec: TableSpec
    facts: RelationFacts
    relation: Relation  # what its read events are built with
    chunks: int
    rows_sent: int
    failures: int = 0


@dataclass
class _Released:
    """A chunk whose read events are in the stream, waiting for its high mark's commit to be confirmed."""

    commit_lsn: int
    last_key: tuple[str | None, ...] | None
    complete: bool
    sent: int = 0


class Backfill:
    """One table at a time, one chunk at a time: memory is one chunk (plus the batch being delivered).

    The pipeline calls ``step`` when it passes by (when the stream is quiet, and after a
    delivery), ``saw_transaction`` for each transaction read, ``observe`` for the changes read
    while ``chunk`` waits for its high mark, and ``watermark`` for each message carrying the
    watermark prefix. Nothing here blocks writers or pauses the stream for longer than one chunk
    select (bounded by a statement timeout).
    """

    def __init__(self, connection: LazyConnection, slot: str, publication: str, chunk_size: int,
                 metrics: Metrics, *, refuse: str | None = None, poll_s: float = POLL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.connection = connection
        self.slot = slot
        self.publication = publication
        self.chunk_size = chunk_size
        self.metrics = metrics
        self.refuse = refuse  # why this run cannot backfill (a sink that cannot take reads)
        self.poll_s = poll_s
        self.clock = clock
        self.chunk: Chunk | None = None  # selected, waiting for its high mark
        # xids of transactions read from the stream that no chunk select has seen committed yet.
        self._streamed_xids: deque[int] = deque(maxlen=STREAMED_XIDS)
        self._waiting_since: float | None = None
        self._active: _Active | None = None
        self._released: _Released | None = None
        self._next_poll = 0.0
        self._resume_at = 0.0
        self._stepped_at = 0.0

    # -- called by the pipeline -----------------------------------------------------------------

    def saw_transaction(self, xid: int) -> None:
        """A transaction was read from the stream (the next chunk select must see it committed)."""
        self._streamed_xids.append(xid)

    def observe(self, events: Iterable[Event]) -> None:
        """Changes read from the stream while a chunk waits for its high mark; those of its table count."""
        chunk = self.chunk
        if chunk is None:
            return
        schema, table = chunk.spec.schema, chunk.spec.table
        for event in events:
            record = event.record
            if record["table"] != table or record["schema"] != schema:
                continue
            if event.op == "truncate":
                chunk.truncate()
            else:
                chunk.observe(record)

    def watermark(self, content: bytes, builder: EventBuilder, lsn: int) -> Iterator[Event]:
        """The read events a high watermark releases (none for a low mark or another process's mark)."""
        mark = Watermark.parse(content)
        chunk = self.chunk
        if mark is None or chunk is None or mark.token != chunk.token or mark.mark is not Mark.HIGH:
            return iter(())
        active = self._active
        assert active is not None
        self.chunk = None
        released = _Released(builder.commit_lsn, chunk.last_key, chunk.complete)
        self._released = released
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("backfill of %s: chunk %d at %s: %d rows selected, %d keys changed meanwhile%s",
                         active.spec.name, chunk.number, format_lsn(builder.commit_lsn), len(chunk.rows),
                         chunk.changed, ", table truncated" if chunk.truncated else "")

        def keep(key: dict[str, Any]) -> bool:
            if chunk.keep(key):
                released.sent += 1
                return True
            return False

        return builder.reads(active.relation, active.facts, active.spec.type_names, chunk.rows, lsn, keep)

    def reset(self) -> None:
        """The stream restarts from the confirmed position: what is in flight is read again later."""
        self.chunk = None
        self._released = None
        self._active = None
        self._next_poll = 0.0
        self.metrics.set_backfill(None, 0)

    def close(self) -> None:
        self.connection.close()

    def step(self, confirmed_lsn: int, *, quiet: bool = True) -> None:
        """Do what is due: record a confirmed chunk, pick up a request, select the next chunk.

        The pipeline calls it with ``quiet`` when the stream has nothing buffered and nothing waits
        for delivery, so live changes go first; otherwise it acts only once ``MAX_DEFER_S`` passed
        since it last did, so a stream that is never quiet does not starve a backfill.
        """
        if self.chunk is not None:
            return
        now = self.clock()
        if now < self._resume_at or (not quiet and now - self._stepped_at < MAX_DEFER_S):
            return
        self._stepped_at = now
        released = self._released
        if released is not None and confirmed_lsn <= released.commit_lsn:
            return
        try:
            if released is not None:
                self._record(released)
            if self._active is None:
                if now < self._next_poll:
                    return
                self._next_poll = now + self.poll_s
                self._active = self._start_next()
            if self._active is not None:
                self._next_chunk(self._active)
        except ReplicationLost:
            # Raised while waiting for PostgreSQL (the replication stream went silent): the
            # pipeline reconnects, and this backfill starts again from its recorded progress.
            self.connection.close()
            self.chunk = None
            raise
        except DatabaseError as e:
            self._database_failed(e)

    # -- the work ----------------------------------------------------------------------------------

    def _start_next(self) -> _Active | None:
        conn = self.connection.get()
        task = store.next_task(conn, self.slot)
        if task is None:
            # Idle: forget the transactions that are visible by now, so the list stays short.
            self._forget_seen(store.current_snapshot(conn))
            return None
        if self.refuse:
            self._fail(task, self.refuse)
            return None
        try:
            spec = store.describe(conn, self.publication, task.name)
            if task.where:
                store.plan_where(conn, spec, task.where)
        except ConfigError as e:
            self._fail(task, str(e))
            return None
        facts = RelationFacts(key=spec.key, base_types=store.domain_bases(conn, spec))
        started = store.start_task(conn, task.id, store.estimate_rows(conn, spec.oid) if task.state is State.QUEUED
                                   else None)
        if started is None:
            return None  # cancelled meanwhile
        resumed = started.chunks > 0
        logger.info("backfill of %s %s (request %d%s, about %s rows%s)", spec.name,
                    "resumed" if resumed else "started", task.request,
                    f", where {task.where}" if task.where else "",
                    "?" if started.rows_estimated is None else started.rows_estimated,
                    f", {started.rows_sent} sent before" if resumed else "",
                    extra={"backfill_table": spec.name, "backfill_request": task.request})
        self.metrics.set_backfill(spec.name, started.rows_sent)
        return _Active(started, spec, facts, spec.relation(), started.chunks, started.rows_sent)

    def _next_chunk(self, active: _Active) -> None:
        conn = self.connection.get()
        task = active.task
        spec = active.spec
        if store.shape_of(conn, self.publication, spec.oid) != spec.shape():
            try:  # for the precise reason
                store.describe_oid(conn, self.publication, spec.oid)
            except ConfigError as e:
                self._fail(task, f"{e}; the backfill of {spec.name} stopped")
                return
            self._fail(task, f"table {spec.name} was altered during the backfill (columns, key, row "
                             "filter or column list changed); request it again")
            return
        number = active.chunks + 1
        token = new_token()
        # Tracking starts now (see Chunk): nothing is read from the stream until this returns.
        store.emit_watermark(conn, Watermark(Mark.LOW, token, task.id, number).payload())
        try:
            rows, snapshot = store.select_chunk(conn, spec, task.where, task.last_key, self.chunk_size,
                                                STATEMENT_TIMEOUT_MS,
                                                Watermark(Mark.HIGH, token, task.id, number).payload())
        except DatabaseError as e:
            active.failures += 1
            if active.failures >= MAX_FAILURES:
                self._fail(task, f"{e} ({active.failures} times in a row)")
                return
            raise
        if not self._all_visible(snapshot):
            return  # selected again shortly; the marks written are ignored (no chunk holds their token)
        active.failures = 0
        self.chunk = Chunk(task, spec, number, token, rows, complete=len(rows) < self.chunk_size)

    def _all_visible(self, snapshot: Snapshot) -> bool:
        """Whether the select saw every transaction already read from the stream.

        A transaction is decoded once its commit record is flushed, and becomes visible to other
        sessions a moment later (with synchronous replication: once a standby confirmed). A change
        read before the low mark is not tracked; if the select missed it, the chunk would send the
        row's older value after it. Such a chunk is not used: it is selected again shortly.
        """
        unseen = self._forget_seen(snapshot)
        if not unseen:
            self._waiting_since = None
            return True
        now = self.clock()
        if self._waiting_since is None:
            self._waiting_since = now
        elif now - self._waiting_since >= VISIBILITY_WARN_S:
            logger.warning("backfill waits for %d transaction(s) already streamed to become visible (xid %s; "
                           "a commit waiting for a synchronous standby?)", len(unseen), unseen[0])
            self._waiting_since = now
        self._resume_at = now + VISIBILITY_RETRY_S
        return False

    def _forget_seen(self, snapshot: Snapshot) -> list[int]:
        """Drop the streamed xids this snapshot sees (seen once, seen for good); the others."""
        unseen = [xid for xid in self._streamed_xids if not snapshot.sees(xid)]
        self._streamed_xids = deque(unseen, maxlen=STREAMED_XIDS)
        return unseen

    def _record(self, released: _Released) -> None:
        active = self._active
        assert active is not None
        conn = self.connection.get()
        running = store.record_progress(conn, active.task.id, released.last_key, released.sent, released.complete)
        self._released = None
        active.chunks += 1
        active.rows_sent += released.sent
        active.task = replace(active.task, last_key=released.last_key)
        self.metrics.backfill_rows_sent(active.spec.name, released.sent)
        if not running:
            logger.info("backfill of %s cancelled after %d rows (request %d)", active.spec.name,
                        active.rows_sent, active.task.request)
            self._end()
        elif released.complete:
            logger.info("backfill of %s finished: %d rows in %d chunks (request %d)", active.spec.name,
                        active.rows_sent, active.chunks, active.task.request,
                        extra={"backfill_table": active.spec.name, "backfill_rows": active.rows_sent})
            self._end()

    def _end(self) -> None:
        self._active = None
        self._next_poll = 0.0  # the next table of the request at once
        self.metrics.set_backfill(None, 0)

    def _fail(self, task: Task, reason: str) -> None:
        logger.warning("backfill of %s failed (request %d): %s", task.name, task.request, reason)
        store.finish_task(self.connection.get(), task.id, State.FAILED, reason)
        self.chunk = None
        self._end()

    def _database_failed(self, error: DatabaseError) -> None:
        logger.warning("backfill paused: %s; retrying in %.0f s", error, RETRY_S)
        self.connection.close()
        self.chunk = None
        self._resume_at = self.clock() + RETRY_S
