"""The backfill work of ``run``: pick up requests, read chunks between watermarks, record confirmed progress.

Rows whose streamed update lacked a large (TOASTed) value are read again by key in a later window
(``rereads``): those a chunk dropped for such a change, and with ``--reselect-toast`` those of every
such update.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from wal2http.backfill.chunk import Chunk, is_key_change, key_positions, lacks_toast
from wal2http.backfill.rereads import Queued, Rereads, Taken
from wal2http.decode.events import Event, EventBuilder, RelationFacts
from wal2http.decode.pgoutput import Delete, Insert, Relation, Truncate, Update
from wal2http.errors import ConfigError, DatabaseError, LockUnavailable, ReplicationLost
from wal2http.lsn import format_lsn
from wal2http.observe.metrics import Metrics
from wal2http.pg import backfill as store
from wal2http.pg import backfill_chunks as chunk_sql
from wal2http.pg import backfill_tables as table_sql
from wal2http.pg.backfill_model import (
    Mark,
    State,
    TableSpec,
    Task,
    Watermark,
    display_name,
    new_token,
)
from wal2http.pg.connection import LazyConnection
from wal2http.pg.snapshot import STREAMED_XIDS, Snapshot

logger = logging.getLogger(__name__)

POLL_S = 2.0  # how often the requests table is read while no backfill runs
RETRY_S = 5.0  # pause after a database error
MAX_FAILURES = 5  # consecutive errors on one table before it is given up (waiting for a lock is none)
LOCK_RETRY_S = 1.0  # first pause after a chunk gave up waiting for the table's lock; doubles each time
LOCK_RETRY_MAX_S = 15.0
# The next chunk waits for a quiet stream (changes first), but never longer than this.
MAX_DEFER_S = 0.5
VISIBILITY_RETRY_S = 0.2  # a chunk that missed a streamed transaction is selected again this much later
VISIBILITY_WARN_S = 10.0
STATEMENT_TIMEOUT_MS = 10_000
REREAD_KEYS = 1000  # rows read again by key in one window at most
DEFAULT_CHUNK_BYTES = 32 << 20  # --backfill-chunk-bytes


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
    lock_waits: int = 0  # chunks in a row that gave up waiting for the table's lock
    waiting_since: float | None = None
    keyset_done: bool = False  # the chunks reached the table's end; rows to read again may remain
    # Rows its chunks dropped for an update lacking a TOASTed value, not read again yet: only a chunk
    # knows them, so the progress stored stays before the first such chunk (a restart reads it again).
    dropped: set[bytes] = field(default_factory=set)
    durable_key: tuple[str | None, ...] | None = None  # the last key stored as progress


@dataclass
class _Table:
    """A table rows are read again from outside a backfill of it (--reselect-toast)."""

    spec: TableSpec
    facts: RelationFacts
    relation: Relation


@dataclass
class _Released:
    """A chunk whose read events are in the stream, waiting for its high mark's commit to be confirmed."""

    commit_lsn: int
    last_key: tuple[str | None, ...] | None
    complete: bool
    sent: int = 0
    backfill: bool = True  # a chunk of the table being backfilled (False: rows read again only)
    # The rows it read again, as they were queued: queued again if the stream restarts before it is confirmed.
    taken: list[Taken] = field(default_factory=list)


class Backfill:
    """One table at a time, one chunk at a time: memory is one chunk of at most ``chunk_bytes`` (plus the
    batch being delivered); rows to read again (their keys) wait in memory, and hold the confirmation.

    The pipeline calls ``step`` when it passes by (when the stream is quiet between transactions,
    and after a delivery), ``saw_transaction`` for each transaction read, ``observe`` for the
    changes read while ``watching``, ``relation_changed`` for each Relation message, ``hold_lsn``
    before it confirms, and ``watermark`` for each message carrying the watermark prefix. Nothing
    here blocks writers or pauses the stream for longer than one chunk select (bounded by a
    statement timeout).
    """

    def __init__(self, connection: LazyConnection, slot: str, publication: str, chunk_size: int,
                 metrics: Metrics, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES, reselect_toast: bool = False,
                 refuse: str | None = None, poll_s: float = POLL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.connection = connection
        self.slot = slot
        self.publication = publication
        self.chunk_size = chunk_size
        self.chunk_bytes = chunk_bytes
        self.reselect_toast = reselect_toast  # every update lacking a TOASTed value is followed by a read
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
        self._again = Rereads()
        self._tables: dict[int, _Table] = {}  # described for --reselect-toast windows
        self._reading: _Table | None = None  # what the chunk in flight is read with, outside a backfill
        self._windows = 0  # numbers the windows of rows read again only

    # -- called by the pipeline -----------------------------------------------------------------

    def saw_transaction(self, xid: int) -> None:
        """A transaction was read from the stream (the next chunk select must see it committed)."""
        self._streamed_xids.append(xid)

    @property
    def watching(self) -> bool:
        """Whether ``observe`` needs the changes read from the stream now."""
        return self.chunk is not None or self._active is not None or self.reselect_toast

    def observe(self, events: Iterable[Event], change: Insert | Update | Delete | Truncate | None = None) -> None:
        """Changes read from the stream: those of a chunk's table while it waits for its high mark drop
        rows from it; an update lacking a TOASTed value queues its row to be read again, with
        --reselect-toast, or as a key change of the table being backfilled (its old row may never
        have been sent)."""
        chunk = self.chunk
        active = self._active
        new = change.new if isinstance(change, Update) else None
        for event in events:
            record = event.record
            if chunk is not None and record["table"] == chunk.spec.table and record["schema"] == chunk.spec.schema:
                if event.op == "truncate":
                    chunk.truncate()
                else:
                    chunk.observe(record, new)
            if new is None or not lacks_toast(record):
                continue
            assert isinstance(change, Update)
            if self.reselect_toast or (active is not None and active.spec.oid == change.relation_oid
                                       and is_key_change(record)):
                self._again.add(change.relation_oid, record["key"], Queued(new, event.commit_lsn))

    def relation_changed(self, oid: int) -> None:
        """A Relation message: the table is described again before its rows are read again."""
        self._tables.pop(oid, None)

    def hold_lsn(self) -> int | None:
        """The oldest commit of an update whose row is not read again and confirmed yet: the stream must
        not be confirmed past it, so that a restart streams that update again and queues its row again."""
        return self._again.hold_lsn()

    def watermark(self, content: bytes, builder: EventBuilder, lsn: int) -> Iterator[Event]:
        """The read events a high watermark releases (none for a low mark or another process's mark)."""
        mark = Watermark.parse(content)
        chunk = self.chunk
        if mark is None or chunk is None or mark.token != chunk.token or mark.mark is not Mark.HIGH:
            return iter(())
        self.chunk = None
        if chunk.task is not None:
            active = self._active
            assert active is not None
            relation, facts = active.relation, active.facts
        else:
            assert self._reading is not None
            relation, facts = self._reading.relation, self._reading.facts
        self._reading = None
        released = _Released(builder.commit_lsn, chunk.last_key, chunk.complete, backfill=chunk.task is not None)
        self._released = released
        oid = chunk.spec.oid
        released.taken = self._again.take(oid, chunk.taken)
        dropped = self._active.dropped if self._active is not None and self._active.spec.oid == oid else None
        if dropped:
            dropped.difference_update(chunk.taken)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s %s: window %d at %s: %d rows selected, %d read again, %d keys changed meanwhile%s",
                         "backfill of" if chunk.task is not None else "reading again from", chunk.spec.name,
                         chunk.number, format_lsn(builder.commit_lsn), len(chunk.rows), len(chunk.rereads),
                         chunk.changed, ", table truncated" if chunk.truncated else "")

        def keep(key: dict[str, Any]) -> bool:
            if chunk.keep(key):
                released.sent += 1
                return True
            again = chunk.to_read_again(key)
            if again is not None:  # the receiver has no whole copy of this row
                ident = self._again.add(oid, again[0], Queued(again[1], builder.commit_lsn))
                if dropped is not None:
                    dropped.add(ident)
            return False

        rows = chunk.rows + chunk.rereads if chunk.rereads else chunk.rows
        return builder.reads(relation, facts, chunk.spec.type_names, rows, lsn, keep)

    def too_large(self, event: Event, *, halts: bool) -> str:
        """For a read event over --max-event-bytes: whose row it is and, when that halts ``run``, the ways on."""
        record = event.record
        row = f": the read of {display_name(record['schema'], record['table'])} key {json.dumps(record['key'])}"
        active = self._active
        if active is None:
            return f"{row} by a backfill"
        number = active.task.request
        if not halts:
            return f"{row} by backfill request {number}"
        return (f"{row} by backfill request {number}; to go on without that row: wal2http backfill cancel {number}, "
                "then start run again (the rest of the request is not sent either), or raise --max-event-bytes, or "
                "set --on-reject dead-letter (or skip) to set such events aside")

    def reset(self) -> None:
        """The stream restarts from the confirmed position: what is in flight is read again later."""
        released = self._released
        if released is not None:  # its reads may be lost: their rows wait to be read again
            self._again.put_back(released.taken)
        self.chunk = None
        self._reading = None
        self._released = None
        self._active = None  # rows waiting to be read again stay queued: the stream does not repeat them
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
            if self._active is None and now >= self._next_poll:
                self._next_poll = now + self.poll_s
                self._active = self._start_next()
            active = self._active
            # Rows to read again of other tables go first: they complete rows the receiver holds already.
            other = self._again.next_table(besides=active.spec.oid if active is not None else None)
            if other is not None:
                self._reread(other)
            elif active is not None:
                self._next_chunk(active)
        except ReplicationLost:
            # Raised while waiting for PostgreSQL (the replication stream went silent): the
            # pipeline reconnects, and this backfill starts again from its recorded progress.
            self.connection.close()
            self.chunk = None
            self._reading = None
            raise
        except DatabaseError as e:
            self._database_failed(e)

    # -- the work ----------------------------------------------------------------------------------

    def _start_next(self) -> _Active | None:
        conn = self.connection.get()
        task = store.next_task(conn, self.slot)
        if task is None:
            # Idle: forget the transactions that are visible by now, so the list stays short.
            self._forget_seen(chunk_sql.current_snapshot(conn))
            return None
        if self.refuse:
            self._fail(task, self.refuse)
            return None
        try:
            spec = table_sql.describe(conn, self.publication, task.schema, task.table)
            if task.where:
                table_sql.plan_where(conn, spec, task.where)
        except ConfigError as e:
            self._fail(task, str(e))
            return None
        facts = RelationFacts(key=spec.key, base_types=table_sql.domain_bases(conn, spec))
        started = store.start_task(conn, task.id, table_sql.estimate_rows(conn, spec.oid) if task.state is State.QUEUED
                                   else None, spec.signature())
        if started is None:
            return None  # cancelled meanwhile
        if task.last_key is not None and started.last_key is None:
            logger.warning("backfill of %s: the table was altered since its last confirmed chunk (its key order or "
                           "columns): read again from the start", spec.name)
        resumed = started.chunks > 0
        logger.info("backfill of %s %s (request %d%s, about %s rows%s)", spec.name,
                    "resumed" if resumed else "started", task.request,
                    f", where {task.where}" if task.where else "",
                    "?" if started.rows_estimated is None else started.rows_estimated,
                    f", {started.rows_sent} sent before" if resumed else "",
                    extra={"backfill_table": spec.name, "backfill_request": task.request})
        self.metrics.set_backfill(spec.name, started.rows_sent)
        return _Active(started, spec, facts, spec.relation(), started.chunks, started.rows_sent,
                       durable_key=started.last_key)

    def _next_chunk(self, active: _Active) -> None:
        conn = self.connection.get()
        task = active.task
        spec = active.spec
        try:
            opened = self._open(spec, task, 0 if active.keyset_done else self.chunk_size, active.chunks + 1)
        except LockUnavailable:
            self._wait_for_lock(active)
            return
        except DatabaseError as e:
            active.failures += 1
            if active.failures >= MAX_FAILURES:
                self._fail(task, f"{e} ({active.failures} times in a row)")
                return
            raise
        if active.waiting_since is not None:
            logger.info("backfill of %s got its lock after %.0f s", spec.name, self.clock() - active.waiting_since)
            store.note_wait(conn, task.id, None)
            active.waiting_since, active.lock_waits = None, 0
        if opened is None:
            self._altered(active)
        elif opened:
            active.failures = 0

    def _wait_for_lock(self, active: _Active) -> None:
        """DDL holds the table (VACUUM FULL, CLUSTER, ALTER TABLE): normal operation, tried again with backoff."""
        now = self.clock()
        active.lock_waits += 1
        delay = min(LOCK_RETRY_MAX_S, LOCK_RETRY_S * 2 ** (active.lock_waits - 1))
        self._resume_at = now + delay
        spec = active.spec
        if active.waiting_since is not None:
            logger.debug("backfill of %s still waits for a lock on it (%.0f s); trying again in %.0f s", spec.name,
                         now - active.waiting_since, delay)
            return
        active.waiting_since = now
        conn = self.connection.get()
        holders = store.lock_holders(conn, spec.oid)
        held = f" ({holders})" if holders else ""
        logger.warning("backfill of %s waits for a lock on %s%s: trying again, every %.0f s at most, until it gets "
                       "it; streaming goes on", spec.name, spec.name, held, LOCK_RETRY_MAX_S,
                       extra={"backfill_table": spec.name, "backfill_request": active.task.request})
        store.note_wait(conn, active.task.id, f"waiting for a lock on {spec.name}{held} since "
                                              f"{time.strftime('%H:%M:%S', time.gmtime())} UTC; trying again")

    def _altered(self, active: _Active) -> None:
        """The table changed under the backfill: read it again from the start, or fail it with what happened."""
        conn = self.connection.get()
        task, spec = active.task, active.spec
        try:
            now = table_sql.describe_oid(conn, self.publication, spec.oid)
        except ConfigError as e:
            self._fail(task, f"{e}; the backfill of {spec.name} stopped")
            return
        if (now.schema, now.table) != (spec.schema, spec.table):
            self._fail(task, f"table {spec.name} was renamed to {now.name} during the backfill: its rows so far "
                             f"were sent as {spec.name}, its changes now stream as {now.name}; request a backfill "
                             f"of {now.name}")
            return
        if not spec.same_but_key_order(now):
            self._fail(task, f"table {spec.name} was altered during the backfill (columns, key, row filter or "
                             "column list changed); request it again")
            return
        # In the new order, the rows after the last key are not the rows still to send.
        logger.warning("backfill of %s: the key order of %s changed (its key index, a collation or an operator "
                       "class): read again from the start", spec.name, spec.name)
        if store.restart_task(conn, task.id, now.signature()):
            active.spec, active.relation = now, now.relation()
            active.task = replace(task, last_key=None)
            active.durable_key, active.keyset_done = None, False
        else:  # cancelled meanwhile
            self._end()

    def _reread(self, oid: int) -> None:
        """A window of rows read again only, of a table not being backfilled (--reselect-toast)."""
        table = self._tables.get(oid)
        if table is None:
            conn = self.connection.get()
            try:
                spec = table_sql.describe_oid(conn, self.publication, oid)
            except ConfigError as e:
                logger.warning("cannot read %d row(s) again for their large values: %s", self._again.drop(oid), e)
                return
            table = _Table(spec, RelationFacts(key=spec.key, base_types=table_sql.domain_bases(conn, spec)),
                           spec.relation())
            self._tables[oid] = table
        self._windows += 1
        self._reading = table
        opened = self._open(table.spec, None, 0, self._windows)
        if not opened:
            self._reading = None
        if opened is None:  # the table changed: described again for the next window
            del self._tables[oid]

    def _open(self, spec: TableSpec, task: Task | None, limit: int, number: int) -> bool | None:
        """Select the next ``limit`` rows of a backfill, and the rows of ``spec`` to read again, between
        watermarks; False when the select must be done again (see _all_visible), None when the table no
        longer has the shape of ``spec``."""
        conn = self.connection.get()
        ids, keys, unreadable = self._again.keys(spec, REREAD_KEYS)
        active = self._active
        for ident in unreadable:
            if active is not None and active.spec.oid == spec.oid:
                active.dropped.discard(ident)  # the table must still end
            logger.warning("%s: a row updated without its large values cannot be read again by key "
                           "(a binary or TOASTed key value, or the table changed)", spec.name)
        token = new_token()
        task_id = task.id if task is not None else 0
        # Tracking starts now (see Chunk): nothing is read from the stream until this returns.
        chunk_sql.emit_watermark(conn, Watermark(Mark.LOW, token, task_id, number).payload())
        selected = chunk_sql.select_chunk(conn, self.publication, spec, task.where if task is not None else None,
                                      task.last_key if task is not None else None, limit, self.chunk_bytes, keys,
                                      STATEMENT_TIMEOUT_MS, Watermark(Mark.HIGH, token, task_id, number).payload())
        if selected is None:
            return None
        if not self._all_visible(selected.snapshot):
            return False  # selected again shortly; the marks written are ignored (no chunk holds their token)
        if selected.rereads_complete:
            taken = ids
        else:  # the byte budget ended the rows read again: the keys not read stay queued
            positions = key_positions(spec)
            found = {tuple(row[i] for i in positions) for row in selected.rereads}
            taken = [ident for ident, key in zip(ids, keys, strict=True) if key in found]
        self.chunk = Chunk(task, spec, number, token, selected.rows, selected.complete, selected.rereads, taken)
        return True

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
        self._again.confirmed(released.taken)
        if not released.backfill:
            self._released = None  # rows read again only: nothing to store
            return
        active = self._active
        assert active is not None
        conn = self.connection.get()
        if not active.dropped:
            active.durable_key = released.last_key
        # Other rows of the table to read again (--reselect-toast, key changes) are read after its end.
        done = released.complete and not active.dropped
        running = store.record_progress(conn, active.task.id, active.durable_key, released.sent, done)
        self._released = None
        active.keyset_done = released.complete
        active.chunks += 1
        active.rows_sent += released.sent
        active.task = replace(active.task, last_key=released.last_key)
        self.metrics.backfill_rows_sent(active.spec.name, released.sent)
        if not running:
            logger.info("backfill of %s cancelled after %d rows (request %d)", active.spec.name,
                        active.rows_sent, active.task.request)
            self._end()
        elif done:
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
        active = self._active
        if active is not None and not self.reselect_toast:
            self._again.drop(active.spec.oid)  # its rows were never all sent
        self.chunk = None
        self._end()

    def _database_failed(self, error: DatabaseError) -> None:
        logger.warning("backfill paused: %s; retrying in %.0f s", error, RETRY_S)
        self.connection.close()
        self.chunk = None
        self._reading = None
        self._resume_at = self.clock() + RETRY_S
