"""``slot status``, ``slot create`` and ``slot drop``: the slot as an object the operator manages."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wal2http.backfill import queue
from wal2http.backfill.queue import Requested
from wal2http.checklist import Status, require
from wal2http.config.sections import SourceConfig
from wal2http.errors import ConfigError, DatabaseError, SlotInUse, Wal2HttpError
from wal2http.hook0.outbox import Outbox, existing_outbox, outbox_into, outbox_report
from wal2http.lsn import format_lsn
from wal2http.ops.checks import (
    failover_check,
    publication_check,
    replica_identity_check,
    server_checks,
    slot_capacity_check,
    slot_check,
)
from wal2http.ops.slot_report import Report, Thresholds, evaluate
from wal2http.pg import backfill as backfill_sql
from wal2http.pg import outbox as outbox_sql
from wal2http.pg import privileges
from wal2http.pg import publication as publication_sql
from wal2http.pg.backfill_model import Task
from wal2http.pg.connection import Connection, source_connection
from wal2http.pg.slot import (
    Consumer,
    Slot,
    consumer,
    create_slot,
    drop_slot,
    find_slot,
    in_use,
    read_slots,
    terminate,
)

DROP_TIMEOUT_S = 10.0
SCHEMA_PUBLICATION_VERSION = 150000  # CREATE PUBLICATION ... FOR TABLES IN SCHEMA


def status(source: SourceConfig, thresholds: Thresholds, all_slots: bool) -> Report:
    """``slot status``: the configured slot (or every logical slot of the database), judged."""
    with source_connection(source) as conn:
        database = conn.get_dsn_parameters().get("dbname", "")
        found = read_slots(conn, None if all_slots else source.slot)
    return evaluate(found, thresholds, None if all_slots else source.slot, database)


# -- slot create -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublicationRequest:
    """What ``slot create`` publishes when the publication does not exist yet."""

    tables: tuple[str, ...] = ()
    schemas: tuple[str, ...] = ()
    all_tables: bool = False
    operations: tuple[str, ...] = publication_sql.OPERATIONS
    outbox: tuple[str, str] | None = None  # (schema, table) of --hook0-outbox

    @property
    def listed(self) -> bool:
        """Tables asked for besides the outbox."""
        return bool(self.tables or self.schemas or self.all_tables)

    @property
    def wanted(self) -> bool:
        return self.listed or self.outbox is not None

    def describe(self, tables: list[str]) -> str:
        if self.all_tables:
            what = "all tables"
        else:
            what = ", ".join([*tables, *(f"tables in schema {s}" for s in self.schemas)])
        return f"{', '.join(self.operations)} for {what}"


def parse_operations(text: str | None, outbox_only: bool = False) -> tuple[str, ...]:
    """``"insert,update"`` → ``("insert", "update")``, in PostgreSQL's order; ConfigError otherwise.

    None is the default: every operation, but only inserts for a publication of the Hook0 outbox
    alone (the sink reads nothing else, and deleting delivered rows then streams nothing).
    """
    if text is None:
        return ("insert",) if outbox_only else publication_sql.OPERATIONS
    chosen = {part.strip().lower() for part in text.split(",") if part.strip()}
    unknown = chosen - set(publication_sql.OPERATIONS)
    if unknown or not chosen:
        raise ConfigError(f"--publish takes a comma-separated list of {', '.join(publication_sql.OPERATIONS)}")
    return tuple(op for op in publication_sql.OPERATIONS if op in chosen)


@dataclass(frozen=True)
class Created:
    slot: Slot
    slot_created: bool
    consistent_lsn: int | None
    publication: publication_sql.Publication
    publication_created: bool
    warnings: tuple[str, ...]
    outbox: Outbox | None = None
    backfill: Requested | None = None  # queued by --backfill
    backfill_note: str | None = None  # why --backfill queued nothing

    def lines(self) -> list[str]:
        p, s, o = self.publication, self.slot, self.outbox
        pub = "created" if self.publication_created else "already exists"
        if self.slot_created and self.consistent_lsn is not None:
            lsn = format_lsn(self.consistent_lsn)
            slot = f"created: plugin {s.plugin}, database {s.database}, consistent LSN {lsn}"
        else:
            confirmed = "nothing" if s.confirmed_flush_lsn is None else format_lsn(s.confirmed_flush_lsn)
            slot = f"already exists: plugin {s.plugin}, database {s.database}, confirmed up to {confirmed}"
        lines = []
        if o is not None:
            lines.append(f"outbox table {o.table} {'created' if o.created else 'already exists'}")
        lines.append(f"publication {p.name} {pub}: {p.describe()}")
        if o is not None and o.added_to_publication:
            lines.append(f"outbox table {o.table} added to publication {p.name}, which did not publish it")
        lines.append(f"slot {s.name} {slot}")
        if self.backfill is not None:
            lines.extend(self.backfill.lines())
        if self.backfill_note is not None:
            lines.append(self.backfill_note)
        return lines

    def as_json(self) -> dict[str, Any]:
        p, s = self.publication, self.slot
        def lsn(value: int | None) -> str | None:
            return None if value is None else format_lsn(value)

        return {
            "slot": {"name": s.name, "plugin": s.plugin, "database": s.database, "created": self.slot_created,
                     "consistent_lsn": lsn(self.consistent_lsn),
                     "confirmed_flush_lsn": lsn(s.confirmed_flush_lsn)},
            "publication": {"name": p.name, "created": self.publication_created, "all_tables": p.all_tables,
                            "operations": list(p.operations), "schemas": list(p.schemas),
                            "tables": list(p.tables)},
            "outbox": None if self.outbox is None else self.outbox.as_json(),
            "backfill": None if self.backfill is None else self.backfill.as_json(),
            "backfill_note": self.backfill_note,
            "warnings": list(self.warnings),
        }


def create(source: SourceConfig, request: PublicationRequest, if_not_exists: bool, backfill: bool = False) -> Created:
    """Create the publication when missing and asked for, then the slot, then queue the backfill if asked.

    Everything that can be checked is checked before the slot exists; a step that fails after it takes
    back what this call created (or the error says what exists and the command that finishes the job).
    """
    if request.all_tables and (request.tables or request.schemas):
        raise ConfigError("--all-tables cannot be combined with --table or --schema")
    with source_connection(source) as conn:
        return _create(conn, source, request, if_not_exists, backfill)


def _create(conn: Connection, source: SourceConfig, request: PublicationRequest, if_not_exists: bool,
            backfill: bool) -> Created:
    facts = publication_sql.server_facts(conn)
    warnings = require(server_checks(facts, source.messages))
    if request.schemas and facts.version_num < SCHEMA_PUBLICATION_VERSION:
        raise DatabaseError(f"--schema needs PostgreSQL 15 or later (FOR TABLES IN SCHEMA); on PostgreSQL "
                            f"{facts.version} name the tables with --table instead")
    slot = find_slot(conn, source.slot)
    failover = failover_check(facts, slot, source.failover)
    if failover is not None:
        warnings.extend(require([failover]))
    if slot is not None:
        if not if_not_exists:
            raise ConfigError(f"replication slot {source.slot!r} already exists (plugin {slot.plugin}, "
                              f"database {slot.database}); pass --if-not-exists to accept an existing slot")
        require([slot_check(conn, slot, source, facts.database)])
    else:
        require([slot_capacity_check(facts, creating=True)])
    existing = existing_outbox(conn, source, request.outbox, facts, if_not_exists, warnings)
    done = _publish(conn, source, request, existing, slot is not None, facts.database, warnings)
    publication = publication_sql.find_publication(conn, source.publication)
    assert publication is not None
    outbox = None
    if request.outbox is not None:
        outbox = outbox_report(conn, source, publication, request.outbox, done.outbox_created,
                               done.outbox_added, warnings)
    identity = replica_identity_check(conn, publication)
    if identity.status is not Status.OK:
        warnings.append(identity.message)
    prepared, note = None, None
    if backfill:
        pending = queue.pending_request(conn, source.slot) if slot is not None else None
        if pending is not None:
            note = (f"no backfill queued: request {pending} of slot {source.slot} is not finished yet; "
                    "'wal2http backfill --all-tables' queues another")
        else:
            try:
                prepared = queue.prepare(conn, source, (), None)
            except Wal2HttpError as e:
                done.undo(conn, source.publication, request.outbox)
                e.args = (f"{e}; nothing was created",)
                raise
            done.requests_table_created = prepared.created_table
            warnings.extend(prepared.warnings())
    consistent_lsn = None
    if slot is None:
        try:
            consistent_lsn = create_slot(conn, source.slot, failover=source.failover)
        except DatabaseError:
            done.undo(conn, source.publication, request.outbox)  # a retry starts clean
            raise
        slot = find_slot(conn, source.slot)
        assert slot is not None
    requested = None
    if prepared is not None:
        try:
            requested = queue.enqueue(conn, source, prepared, slot.active_pid is not None)
        except Wal2HttpError as e:
            undone = (take_back_slot(conn, source.slot, lambda: done.undo(conn, source.publication, request.outbox),
                                     "wal2http slot create --backfill") if consistent_lsn is not None
                      else f"slot {source.slot} already existed and is unchanged; no backfill was queued")
            e.args = (f"{e}; {undone}",)
            raise
    return Created(slot, consistent_lsn is not None, consistent_lsn, publication, done.publication_created,
                   tuple(warnings), outbox, requested, note)


def take_back_slot(conn: Connection, slot: str, undo_before: Callable[[], list[str]], command: str) -> str:
    """Drop the slot a command just created because queueing its backfill failed, then what the command
    made before it (``undo_before``, which names what it dropped); what the operator reads about it."""
    try:
        drop_slot(conn, slot)
    except Wal2HttpError as e:
        return (f"slot {slot} was created but could not be dropped again ({e}), and no backfill is "
                f"queued: 'wal2http backfill --all-tables' queues it")
    try:
        undone = undo_before()
    except Wal2HttpError as e:
        return (f"dropped slot {slot} again, but not what this command created before it ({e}): "
                f"'{command}' goes on from what exists")
    return f"dropped {' and '.join([f'slot {slot}', *undone])} again: nothing was created"


@dataclass
class _Done:
    """What ``slot create`` changed before creating the slot, to take back if that fails."""

    publication_created: bool = False
    outbox_created: bool = False
    outbox_added: bool = False  # to an existing publication
    requests_table_created: bool = False  # by --backfill

    def undo(self, conn: Connection, publication: str, outbox: tuple[str, str] | None) -> list[str]:
        """Take it all back; what was undone, for the operator."""
        undone = []
        if self.publication_created:
            publication_sql.drop_publication(conn, publication)
            undone.append(f"publication {publication}")
        if outbox is not None and (self.outbox_created or self.outbox_added):
            outbox_sql.undo(conn, *outbox, created=self.outbox_created,
                            publication=publication if self.outbox_added else None)
            undone.append(f"outbox table {'.'.join(outbox)}")
        if self.requests_table_created:
            undone.append(backfill_sql.drop_requests_table(conn))
        return undone


def _publish(conn: Connection, source: SourceConfig, request: PublicationRequest, existing: outbox_sql.Table | None,
             slot_exists: bool, database: str, warnings: list[str]) -> _Done:
    """Create the publication when missing (with the outbox table when asked), or add the outbox to it."""
    done = _Done()
    publication = publication_sql.find_publication(conn, source.publication)
    if publication is not None:
        if request.listed:
            tables = publication_sql.resolve_tables(conn, list(request.tables))
            if _differs(publication, request, tables):
                warnings.append(
                    f"publication {source.publication} already exists and was not changed: it "
                    f"{publication.describe()}; requested {request.describe(tables)}; change it with "
                    "ALTER PUBLICATION if needed")
        if request.outbox is not None:
            done.outbox_created, done.outbox_added = outbox_into(conn, publication, request.outbox, existing)
        return done
    if not request.wanted:
        # A slot made before its publication cannot decode what was written in between (PG 15).
        raise publication_check(None, source.publication, database).error()
    refusal = privileges.publish_access(conn, publication_sql.resolve_tables(conn, list(request.tables))).refusal(
        source.publication, list(request.tables), _everything(request))
    if refusal is not None:  # said before anything is created, with the statements that allow it
        raise DatabaseError(refusal)
    listed, before = list(request.tables), None
    if request.outbox is not None:
        schema, table = request.outbox
        if not request.all_tables and schema not in request.schemas:
            listed.append(f"{schema}.{table}")
        if existing is None:
            before, done.outbox_created = outbox_sql.create_statement(schema, table), True
    publication_sql.create_publication(conn, source.publication, tables=listed, schemas=list(request.schemas),
                             all_tables=request.all_tables, operations=list(request.operations), before=before)
    done.publication_created = True
    if slot_exists:
        warnings.append(
            f"slot {source.slot} is older than publication {source.publication}: if anything was "
            "written in between, run fails with 'publication does not exist'; then drop and create "
            "the slot again")
    return done


def _everything(request: PublicationRequest) -> str | None:
    """The target only a superuser may publish: all tables, or every table of a schema."""
    if request.all_tables:
        return "all tables"
    if request.schemas:
        return "tables in schema " + ", ".join(request.schemas)
    return None


def _differs(publication: publication_sql.Publication, request: PublicationRequest, tables: list[str]) -> bool:
    if set(request.operations) != set(publication.operations) or request.all_tables != publication.all_tables:
        return True
    if request.all_tables:
        return False
    if set(request.schemas) != set(publication.schemas):
        return True
    published = set(publication.tables)
    return not set(tables) <= published if request.schemas else set(tables) != published


# -- slot drop -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dropped:
    """What ``slot drop`` did, part by part; ``problem`` is the part that failed after others were done."""

    slot: str
    slot_dropped: bool
    terminated: tuple[Consumer, ...]
    publication: str | None  # when asked to drop it
    publication_dropped: bool
    cancelled: tuple[Task, ...] = ()  # the slot's unfinished backfills, cancelled first
    problem: Wal2HttpError | None = None
    slot_existed: bool = True

    def lines(self) -> list[str]:
        lines = [f"cancelled the backfill of {t.name} (request {t.request}, {t.rows_sent} rows sent): it needs "
                 "the slot" for t in self.cancelled]
        lines.extend(f"terminated {c.describe()}" for c in self.terminated)
        if self.slot_dropped or not self.slot_existed:
            lines.append(f"slot {self.slot} dropped" if self.slot_dropped else f"slot {self.slot} does not exist")
        if self.publication is not None and self.problem is None:
            state = "dropped" if self.publication_dropped else "does not exist"
            lines.append(f"publication {self.publication} {state}")
        return lines


def drop(source: SourceConfig, *, force: bool, if_exists: bool, with_publication: bool,
         confirm: Callable[[str], None]) -> Dropped:
    """Drop the slot (terminating its consumer when ``force``), and the publication if asked.

    ``confirm`` gets the question to ask and raises to refuse; it is called only when there is
    something to drop.
    """
    with source_connection(source) as conn:
        return _drop(conn, source, force, if_exists, with_publication, confirm)


def _drop(conn: Connection, source: SourceConfig, force: bool, if_exists: bool, with_publication: bool,
          confirm: Callable[[str], None]) -> Dropped:
    name = source.slot
    database = conn.get_dsn_parameters().get("dbname", "")
    info = find_slot(conn, name)
    if info is None and not if_exists:
        raise ConfigError(f"replication slot {name!r} does not exist; pass --if-exists to accept that")
    if info is not None and info.database != database:
        raise ConfigError(f"replication slot {name!r} belongs to database {info.database!r}, "
                          f"but the DSN connects to {database!r}; connect to that database to drop it")
    holder = consumer(conn, info.active_pid) if info is not None and info.active_pid else None
    if holder is not None and not force:
        raise in_use(name, holder)
    publication = source.publication if with_publication else None
    has_publication = publication is not None and publication_sql.find_publication(conn, publication) is not None
    targets = []
    if info is not None:
        stop = f" after terminating its consumer, {holder.describe()}" if holder else ""
        targets.append(f"replication slot {name} (database {database}, plugin {info.plugin}){stop}")
    if has_publication:
        targets.append(f"publication {publication}")
    if targets:
        confirm("Drop " + " and ".join(targets) + "? Changes the slot has not delivered are lost, and its "
                "unfinished backfills are cancelled.")
    # The backfills first: a slot dropped with requests still queued would leave them to a slot that is gone.
    cancelled = tuple(queue.abandon(conn, name)) if info is not None else ()
    terminated: list[Consumer] = []
    if info is not None:
        try:
            terminated = _drop_slot(conn, name, force)
        except Wal2HttpError as e:
            if cancelled:
                e.args = (f"{e}; its unfinished backfills were cancelled (listed above): queue them again with "
                          "'wal2http backfill' if the slot stays",)
            return Dropped(name, False, (), publication, False, cancelled, e)
    slot_state = f"slot {name} dropped" if info is not None else f"slot {name} does not exist"
    try:
        dropped_publication = publication_sql.drop_publication(conn, publication) if publication else False
    except Wal2HttpError as e:
        problem = DatabaseError(f"{slot_state}, but {e}; to finish, its owner (or a superuser) runs: "
                                f"DROP PUBLICATION {publication};")
        return Dropped(name, info is not None, tuple(terminated), publication, False, cancelled, problem,
                       info is not None)
    return Dropped(name, info is not None, tuple(terminated), publication, dropped_publication, cancelled,
                   slot_existed=info is not None)


def _drop_slot(conn: Connection, name: str, force: bool) -> list[Consumer]:
    """Drop, terminating consumers when ``force``; a consumer restarted by its supervisor is ended again."""
    terminated: list[Consumer] = []
    deadline = time.monotonic() + DROP_TIMEOUT_S
    while True:
        info = find_slot(conn, name)
        if info is None:
            return terminated
        if info.active_pid and force:
            if not terminated or terminated[-1].pid != info.active_pid:
                terminated.append(consumer(conn, info.active_pid))
                terminate(conn, info.active_pid)
        else:
            try:
                drop_slot(conn, name)
                return terminated
            except SlotInUse:
                if not force:
                    raise
        if time.monotonic() > deadline:
            raise DatabaseError(f"replication slot {name!r} is still in use after {DROP_TIMEOUT_S:g} s of "
                                "terminating its consumers; stop the service that restarts them, then retry")
        time.sleep(0.1)
