"""The start-up of ``run``: check the server, prepare the slot, choose the sink, then stream."""

from __future__ import annotations

import dataclasses
import logging
import signal
from dataclasses import dataclass

from wal2http.backfill import queue
from wal2http.backfill.driver import Backfill
from wal2http.backfill.queue import Requested, backfill_refusal
from wal2http.checklist import Check, Status, exit_status, failed
from wal2http.config.cloudevents import default_source
from wal2http.config.outcomes import StatusClasses
from wal2http.config.sections import SinkKind, SourceConfig
from wal2http.config.settings import Config, SinkConfig
from wal2http.delivery.deadletter import DeadLetterFile
from wal2http.delivery.resends import Resends
from wal2http.delivery.sink import Sink, SourceInfo
from wal2http.delivery.until import Until
from wal2http.errors import DatabaseError, Interrupted, RejectedError, StopRequested, Wal2HttpError
from wal2http.lsn import format_lsn, parse_lsn
from wal2http.observe.observer import Observer
from wal2http.ops.checks import start_checks
from wal2http.ops.slot import take_back_slot
from wal2http.pg import backfill as backfill_sql
from wal2http.pg import publication as publication_sql
from wal2http.pg.catalog import Catalog
from wal2http.pg.connection import LazyConnection, source_connection
from wal2http.pg.pending import mark_now
from wal2http.pg.slot import Slot, create_slot, find_slot
from wal2http.pg.stream import ReplicationStream
from wal2http.pipeline import Pipeline
from wal2http.routing.routes import RouteSink
from wal2http.runtime import tune_for_streaming

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """What ``run`` learns at start: the slot, and what the publication streams from which database."""

    slot: Slot
    database: str
    tables: tuple[tuple[str, str], ...]  # (schema, table)
    backfill: Requested | None = None  # queued with the slot this start created (--create-slot --backfill)


def prepare_stream(config: Config) -> Prepared:
    """``run`` at start: the checks ``check-config`` makes, all reported, then the slot created if asked and
    missing, with its initial backfill (--backfill): checked in full before the slot exists, and the slot
    dropped again if queueing fails, so that the next start creates both (never a slot without its backfill)."""
    source = config.source
    with source_connection(source) as conn:
        facts = publication_sql.server_facts(conn)
        checks = start_checks(conn, config, facts)
        for check in checks:
            if check.status is Status.WARNING:
                logger.warning("%s: %s", check.name, check.message)
        refuse(checks)
        tables = tuple(publication_sql.published_tables(conn, source.publication))
        info = find_slot(conn, source.slot)
        if info is not None:
            return Prepared(info, facts.database, tables)
        prepared = queue.prepare(conn, source, (), None) if config.backfill.initial else None
        requests_table = prepared is not None and prepared.created_table

        def take_back_requests_table() -> list[str]:
            return [backfill_sql.drop_requests_table(conn)] if requests_table else []

        try:
            create_slot(conn, source.slot, failover=source.failover)
        except DatabaseError:
            take_back_requests_table()  # a retry starts clean
            raise
        requested = None
        if prepared is not None:
            try:  # a new slot starts a new history: nothing is resumed
                requested = queue.enqueue(conn, source, prepared, slot_active=False)
            except Wal2HttpError as e:
                undone = take_back_slot(conn, source.slot, take_back_requests_table,
                                        "wal2http run --create-slot --backfill")
                e.args = (f"{e}; {undone}",)
                raise
        info = find_slot(conn, source.slot)
        assert info is not None
        return Prepared(info, facts.database, tables, backfill=requested)


def refuse(checks: list[Check]) -> None:
    """Stop on the failed checks, every one reported (as check-config lists them), with the exit status
    check-config would give."""
    failures = [c for c in checks if c.status is Status.FAILED]
    if len(failures) == 1:
        raise failures[0].error()
    if failures:
        for check in failures:
            logger.error("%s: %s", check.name, check.message)
        names = ", ".join(c.name for c in failures)
        raise failed("start", f"{len(failures)} start checks failed ({names}), each logged above",
                     exit_status=exit_status(checks)).error()


def run_until(source: SourceConfig, connection: LazyConnection) -> Until:
    """Where ``run --until`` ends. ``now``: at a marker written into the WAL now, once the backfills of the
    slot unfinished now are done too; an LSN: there. ``connection`` (the run's) reads the backfills' states."""
    with source_connection(source) as conn:
        # The marker also moves the stream past an LSN that is already behind the server's position.
        marker = mark_now(conn, source.slot)
        backfills = frozenset(t.id for t in backfill_sql.tasks(conn, source.slot)
                              if not t.state.finished) if source.until == "now" else frozenset()
    lsn = marker if source.until == "now" else parse_lsn(source.until or "")

    def unfinished(ids: frozenset[int]) -> frozenset[int]:
        try:
            tasks = backfill_sql.tasks(connection.get(), source.slot)
        except DatabaseError as e:  # asked again a second later
            connection.close()
            logger.debug("cannot read the backfills' states: %s", e)
            return ids
        return frozenset(t.id for t in tasks if t.id in ids and not t.state.finished)

    logger.info("running until %s%s, then exiting", format_lsn(lsn),
                f" and the end of {len(backfills)} backfill table(s) queued before the start" if backfills else "")
    return Until(lsn, backfills, unfinished)


def make_sink(config: SinkConfig, as_array: bool, source: SourceInfo | None = None,
              resends: Resends | None = None, statuses: StatusClasses | None = None) -> Sink:
    """Build the configured sink; ``as_array`` sends JSON arrays (batch size above 1); ``resends`` counts
    the requests an HTTP sink sends again by itself; ``statuses`` (--reject-status, --retry-status) classify
    the answers of the http sink."""
    if config.kind == SinkKind.HOOK0:
        from wal2http.hook0.sink import Hook0Sink

        assert config.hook0 is not None
        sink = Hook0Sink(config.hook0, source or SourceInfo())
        sink.prepare()
        return sink
    if config.kind == SinkKind.HTTP:
        from wal2http.sinks.http import HttpSink

        assert config.http is not None
        return HttpSink(config.http, as_array, resends, statuses)
    from wal2http.sinks.jsonlines import JsonLinesSink

    if config.kind == SinkKind.FILE:
        assert config.file_path is not None
        return JsonLinesSink.to_file(config.file_path)
    return JsonLinesSink.to_stdout()


def with_ce_source(config: SinkConfig, database: str, slot: str) -> SinkConfig:
    """The sink settings with the default CloudEvents source, /wal2http/DATABASE/SLOT, where none was given."""
    http = config.http
    if http is None or http.cloudevents.source is not None:
        return config
    settings = dataclasses.replace(http.cloudevents, source=default_source(database, slot))
    return dataclasses.replace(config, http=dataclasses.replace(http, cloudevents=settings))


def route_sinks(config: Config, resends: Resends, database: str) -> list[RouteSink]:
    """An http sink, and its dead-letter file, for each route of --routes."""
    from wal2http.sinks.http import HttpSink

    as_array = config.batch.max_events > 1
    routes = []
    for route in config.routing.routes:
        sink_config = with_ce_source(SinkConfig(SinkKind.HTTP, http=route.http), database, config.source.slot)
        assert sink_config.http is not None
        routes.append(RouteSink(route, HttpSink(sink_config.http, as_array, resends, config.delivery.statuses),
                                DeadLetterFile(route.dead_letter_path) if route.dead_letter_path else None))
    return routes


ON_REJECT_HINT = ("to go on past refused events, run with --on-reject dead-letter --dead-letter-path PATH "
                  "(replay them later) or --on-reject skip")


def run(config: Config, run_id: str = "") -> None:
    """``wal2http run``: prepare the slot, stream until stopped; the operator hears of any error stop."""
    observer = Observer(config, run_id=run_id)
    try:
        observer.start_admin()
        _run(config, observer)
    except (StopRequested, Interrupted, KeyboardInterrupt):
        raise
    except RejectedError as e:
        # The halt is the default policy: the refusal names the two that go on past it.
        halted = RejectedError(f"{e}; {ON_REJECT_HINT}", status=e.status, event_id=e.event_id, body=e.body)
        observer.halted(halted)
        raise halted from None
    except BaseException as e:
        observer.halted(e)
        raise
    finally:
        observer.close()


def _run(config: Config, observer: Observer) -> None:
    src = config.source
    prepared = prepare_stream(config)
    info = prepared.slot
    source = SourceInfo(prepared.database, prepared.tables)
    start_lsn = info.confirmed_flush_lsn or 0
    logger.info("slot %s confirmed up to %s", src.slot, format_lsn(start_lsn))
    d = config.delivery
    dead_letters = DeadLetterFile(d.dead_letter_path) if d.dead_letter_path else None
    resends = Resends(observer.metrics)
    sink = make_sink(with_ce_source(config.sink, prepared.database, src.slot),
                     as_array=config.batch.max_events > 1, source=source, resends=resends,
                     statuses=d.statuses) if not config.routing.routes else None
    routes = route_sinks(config, resends, prepared.database) if config.routing.routes else None
    # Messages are always asked for: backfill watermarks travel as messages (the operator's own are
    # delivered only with --messages).
    stream = ReplicationStream(src.dsn.reveal(), src.slot, src.publication, messages=True,
                               status_interval_s=src.status_interval_s,
                               connect_timeout_s=src.connect_timeout_s, require_tls=src.require_tls)
    connection = LazyConnection(src.dsn.reveal(), require_tls=src.require_tls)
    backfill = Backfill(connection, src.slot, src.publication, config.backfill.chunk_size, observer.metrics,
                        chunk_bytes=config.backfill.chunk_bytes, reselect_toast=config.backfill.reselect_toast,
                        refuse=backfill_refusal(config))
    if prepared.backfill is not None:
        for text in prepared.backfill.warnings:
            logger.warning("%s", text)
        for line in prepared.backfill.lines():
            logger.info("%s", line)
    until = run_until(src, connection) if src.until else None
    pipeline = Pipeline(config, stream, sink, observer, start_lsn=start_lsn, dead_letters=dead_letters,
                        backfill=backfill, catalog=Catalog(connection), resends=resends, until=until, routes=routes)
    previous = {s: signal.signal(s, pipeline.request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    if config.log.file:  # logrotate without copytruncate: move the file, then SIGHUP
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, observer.request_log_reopen)
    previous_wakeup_fd = signal.set_wakeup_fd(pipeline.wakeup_fd(), warn_on_full_buffer=False)
    tune_for_streaming()
    try:
        pipeline.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        signal.set_wakeup_fd(previous_wakeup_fd)
        pipeline.close()
        for opened in ([sink] if sink is not None else []) + [r.sink for r in routes or ()]:
            opened.close()
        for letters in [dead_letters] + [r.dead_letters for r in routes or ()]:
            if letters is not None:
                letters.close()
