"""The checks ``run`` and ``slot create`` make at start, and ``check-config`` shows, as data."""

from __future__ import annotations

import os

from wal2http.checklist import Check, CheckName, failed, ident, ok, warning
from wal2http.config.hook0 import Hook0Config, Hook0Mode
from wal2http.config.sections import SinkKind, SourceConfig
from wal2http.config.settings import Config
from wal2http.errors import ExitStatus
from wal2http.hook0 import checks as hook0_checks
from wal2http.lsn import format_lsn
from wal2http.ops.routing_checks import routing_checks
from wal2http.pg import backfill as backfill_sql
from wal2http.pg import privileges
from wal2http.pg import publication as publication_sql
from wal2http.pg.backfill_model import REQUESTS_SCHEMA
from wal2http.pg.connection import Connection
from wal2http.pg.slot import Slot, consumer, find_slot

OLDEST_SUPPORTED = 140000  # messages (backfill watermarks); the test suite runs on 14 to 18
FAILOVER_VERSION = 170000

# -- database --------------------------------------------------------------------------------------


def server_checks(facts: publication_sql.ServerFacts, messages: bool = False) -> list[Check]:
    """What the server and the role must allow before any slot can be used."""
    checks = []
    name = "server version"
    if facts.version_num < 100000:
        checks.append(failed(name, f"PostgreSQL {facts.version} has no pgoutput",
                             "use PostgreSQL 14 or later (wal2http is tested with 14 to 18)", ExitStatus.DATABASE))
    elif facts.version_num < OLDEST_SUPPORTED:
        # run always asks pgoutput for messages: they carry the backfill watermarks.
        checks.append(failed(name, f"PostgreSQL {facts.version} cannot send messages",
                             "wal2http needs PostgreSQL 14 or later (messages carry backfill watermarks "
                             "and --messages)", ExitStatus.DATABASE))
    else:
        checks.append(ok(name, f"PostgreSQL {facts.version}"))
    if facts.wal_level != "logical":
        checks.append(failed("wal_level",
                             f"wal_level is {facts.wal_level!r}; logical decoding needs 'logical'",
                             _wal_level_fix(facts), ExitStatus.DATABASE))
    else:
        checks.append(ok("wal_level", "logical"))
    checks.append(privilege_check(facts))
    return checks


def _wal_level_fix(facts: publication_sql.ServerFacts) -> str:
    """The switch to turn: a managed service's own parameter where the server shows one."""
    for parameter, value in facts.provider_switches:
        if parameter == "rds.logical_replication":
            return (f"set rds.logical_replication = 1 (now {value}) in the DB parameter group (RDS) or DB "
                    "cluster parameter group (Aurora), then reboot the instance")
        if parameter == "cloudsql.logical_decoding":
            return f"set the database flag cloudsql.logical_decoding to on (now {value}); Cloud SQL restarts"
    return "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"


def privilege_check(facts: publication_sql.ServerFacts) -> Check:
    """May the role use replication slots? Managed services grant it through roles of their own."""
    name, role = "replication privilege", facts.user
    if facts.superuser:
        return ok(name, f"role {role} is a superuser")
    if facts.can_replicate:
        return ok(name, f"role {role} has REPLICATION")
    granting = [r for r in facts.member_of if r in publication_sql.REPLICATION_ROLES]
    if granting:
        return ok(name, f"role {role} is a member of {granting[0]} (Amazon RDS / Aurora)")
    admin = [r for r in facts.member_of if r in publication_sql.ADMIN_ROLES]
    if admin:
        return warning(name, f"role {role} has neither REPLICATION nor superuser but is a member of "
                             f"{admin[0]}, whose powers the catalogue does not show: the server decides when "
                             "the slot is used",
                       f"if streaming is refused: ALTER ROLE {ident(role)} REPLICATION; or the service's own "
                       "grant (see README, Managed PostgreSQL)")
    return failed(name, f"role {role!r} may not use replication slots (neither REPLICATION nor superuser, "
                        f"nor a member of {', '.join(publication_sql.REPLICATION_ROLES)})",
                  f"ALTER ROLE {ident(role)} REPLICATION;", ExitStatus.DATABASE)


def failover_check(facts: publication_sql.ServerFacts, slot: Slot | None, wanted: bool) -> Check | None:
    """Failover slots (17+): refused below 17; on the primary, is a standby's slot named to wait for?"""
    name = "failover slot"
    has_failover = bool(slot is not None and slot.failover)
    if not wanted and not has_failover:
        return None
    if facts.version_num < FAILOVER_VERSION:
        return failed(name, f"PostgreSQL {facts.version} has no failover slots (they came with 17)",
                      "leave out --failover; after a failover to a standby, recreate the slot and backfill",
                      ExitStatus.DATABASE)
    if wanted and slot is not None and not slot.failover:
        return warning(name, f"replication slot {slot.name!r} exists without failover: --failover applies only "
                             "when the slot is created",
                       f"wal2http slot drop --slot {slot.name}, then create it with --failover "
                       "(changes in between are not streamed)")
    standby_slots = (facts.synchronized_standby_slots or "").strip()
    if not standby_slots:
        return warning(name, "synchronized_standby_slots is empty: a standby's copy of the slot may lag behind "
                             "what wal2http was sent, and after a promotion changes could be skipped",
                       "on the primary: ALTER SYSTEM SET synchronized_standby_slots = '<the standby's physical "
                       "slot>'; SELECT pg_reload_conf();")
    return ok(name, f"the slot is kept on standbys; the primary waits for {standby_slots} "
                    "(synchronized_standby_slots)")


def start_checks(conn: Connection, config: Config, facts: publication_sql.ServerFacts) -> list[Check]:
    """Every check ``run`` makes at start, in the order ``check-config`` shows them.

    A failed one stops ``run`` (all failures are reported together) and fails ``check-config``; a warning
    is logged by one and shown by the other. What is fatal is decided here, once, for both.
    """
    hook0 = config.sink.hook0 if config.sink.kind == SinkKind.HOOK0 else None
    return [*database_checks(conn, config, facts, hook0), *file_checks(config)]


def database_checks(conn: Connection, config: Config, facts: publication_sql.ServerFacts,
                    hook0: Hook0Config | None) -> list[Check]:
    """The server, the publication, the slot, what backfills need and the Hook0 outbox, as ``run`` meets them.

    ``hook0``: the Hook0 sink's settings (None for another sink, or settings that are not valid).
    """
    source = config.source
    checks = server_checks(facts, source.messages)
    publication = publication_sql.find_publication(conn, source.publication)
    checks.append(publication_check(publication, source.publication, facts.database))
    if publication is not None:
        checks.append(replica_identity_check(conn, publication))
        routing, http = config.routing, config.sink.http if config.sink.kind == SinkKind.HTTP else None
        if routing.selects or routing.routes or (http is not None and "{" in http.url):
            tables = publication_sql.published_table_facts(conn, publication.name)
            checks.extend(routing_checks(routing, http, tables, publication.name, facts.version_num))
    slot = find_slot(conn, source.slot)
    checks.append(slot_check(conn, slot, source, facts.database))
    failover = failover_check(facts, slot, source.failover and source.create_slot)
    if failover is not None:
        checks.append(failover)
    checks.append(slot_capacity_check(facts, slot is None))
    free = facts.max_wal_senders - facts.used_wal_senders
    if free <= 0:
        # The previous run's sender may still be exiting, and run retries connecting: not fatal.
        checks.append(warning(CheckName.WAL_SENDERS, f"all {facts.max_wal_senders} wal senders are in use; "
                                                     "run retries connecting until one is free",
                              "stop an unused replication consumer, or raise max_wal_senders (needs a restart)"))
    else:
        checks.append(ok(CheckName.WAL_SENDERS, f"{facts.used_wal_senders} of {facts.max_wal_senders} in use"))
    access = privileges.requests_access(conn)
    if publication is not None:
        checks.append(backfill_check(conn, source, access))
    # --create-slot --backfill queues the initial backfill right after creating the slot: it must be able to.
    checks.append(requests_check(access, needed=config.backfill.initial and slot is None and source.create_slot))
    if hook0 is not None and hook0.mode == Hook0Mode.OUTBOX:
        checks.extend(hook0_checks.outbox_checks(conn, hook0, source))
    return checks


def backfill_check(conn: Connection, source: SourceConfig, access: privileges.RequestsAccess) -> Check:
    """What a backfill of the published tables needs: SELECT on each (pgoutput messages carry the watermarks)."""
    name = "backfill"
    unreadable = backfill_sql.unreadable_tables(conn, source.publication)
    if unreadable:
        tables = ", ".join(unreadable)
        return warning(name, f"role {access.role} cannot SELECT {tables}: a backfill of these tables fails",
                       f"GRANT SELECT ON {tables} TO {ident(access.role)};")
    pending = ""
    if access.exists and access.read_refusal() is None:
        queued = [t for t in backfill_sql.tasks(conn, source.slot) if not t.state.finished]
        pending = f"; {len(queued)} table(s) queued or running for slot {source.slot}" if queued else ""
    return ok(name, f"every published table can be read (pgoutput messages carry the watermarks){pending}")


def requests_check(access: privileges.RequestsAccess, needed: bool = False) -> Check:
    """Where backfill requests are kept: streaming needs none of it, so a problem is a warning, unless
    this start is ``needed`` to queue one."""
    name = CheckName.BACKFILL_REQUESTS
    problem = access.migration() or access.read_refusal() or access.queue_refusal()
    if problem is not None:
        return failed(name, *problem, ExitStatus.DATABASE) if needed else warning(name, *problem)
    if access.exists:
        note = f"; {privileges.LEGACY_NAME} is no longer used" if access.legacy else ""
        return ok(name, f"kept in {privileges.REQUESTS_NAME}, which role {access.role} may read and write{note}")
    made = (f"{privileges.REQUESTS_NAME} is" if access.schema_exists
            else f"schema {REQUESTS_SCHEMA} and {privileges.REQUESTS_NAME} are")
    return ok(name, f"{made} created by the first backfill request (role {access.role} may create it)")


def file_checks(config: Config) -> list[Check]:
    """The files ``run`` appends to: the file sink's, the dead letters'."""
    checks = []
    sink = config.sink
    if sink.kind == SinkKind.FILE and sink.file_path:
        checks.append(file_check("sink", sink.file_path, "--file-path"))
    if config.delivery.dead_letter_path:
        checks.append(file_check("dead letters", config.delivery.dead_letter_path, "--dead-letter-path"))
    return checks


def file_check(name: str, path: str, option: str) -> Check:
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.exists(path):
        if not os.path.isfile(path) or not os.access(path, os.W_OK):
            return failed(name, f"{path} is not a writable file", f"fix its permissions or choose another {option}")
        return ok(name, f"{path} exists and is writable")
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
        return failed(name, f"cannot create {path}: {directory} is not a writable directory",
                      f"create the directory or choose another {option}")
    return ok(name, f"{path} can be created")


def publication_check(publication: publication_sql.Publication | None, name: str, database: str) -> Check:
    if publication is None:
        return failed(
            "publication", f"publication {name!r} does not exist in database {database!r}",
            f"create it: wal2http slot create --publication {name} --table TABLE "
            f"(or --schema, --all-tables), or CREATE PUBLICATION {ident(name)} FOR TABLE ...;",
        )
    if not publication.all_tables and not publication.schemas and not publication.tables:
        return warning("publication", f"publication {name!r} publishes no table",
                       f"ALTER PUBLICATION {ident(name)} ADD TABLE ...;")
    return ok("publication", f"{name} {publication.describe()}")


def replica_identity_check(conn: Connection, publication: publication_sql.Publication) -> Check:
    name = CheckName.REPLICA_IDENTITY
    ops = [op for op in ("update", "delete") if op in publication.operations]
    if not ops:
        return ok(name, f"not needed: publication {publication.name} publishes no update or delete")
    missing = publication_sql.tables_without_replica_identity(conn, publication.name)
    if not missing:
        return ok(name, "every published table has one")
    statements = " and ".join(op.upper() for op in ops)
    # The primary refuses those statements; the stream is unharmed and an insert-only table works: a warning.
    return warning(
        name,
        f"{statements} statements fail on {', '.join(missing)}: no replica identity, and publication "
        f"{publication.name} publishes {' and '.join(ops)}",
        "add a primary key, or " + " ".join(f"ALTER TABLE {t} REPLICA IDENTITY FULL;" for t in missing),
    )


def slot_check(conn: Connection, slot: Slot | None, source: SourceConfig, database: str) -> Check:
    name, s = "slot", source.slot
    if slot is None:
        if source.create_slot:
            return ok(name, f"replication slot {s!r} does not exist; --create-slot creates it")
        return failed(name, f"replication slot {s!r} does not exist",
                      "pass --create-slot, or run 'wal2http slot create'")
    if slot.plugin != "pgoutput":
        return failed(name, f"replication slot {s!r} uses plugin {slot.plugin!r}; wal2http needs pgoutput",
                      "choose another --slot, or drop this one if nothing uses it: "
                      f"wal2http slot drop --slot {s}")
    if slot.database != database:
        return failed(name, f"replication slot {s!r} belongs to database {slot.database!r}, "
                            f"but the DSN connects to {database!r}",
                      f"connect to database {slot.database!r}, or choose another --slot")
    if slot.invalidated:
        return failed(name, f"replication slot {s!r} is lost: {slot.why_invalidated()}",
                      "drop it and create it again (wal2http slot drop, wal2http slot create); "
                      "changes in between are not streamed", ExitStatus.DATABASE)
    confirmed = format_lsn(slot.confirmed_flush_lsn) if slot.confirmed_flush_lsn is not None else "nothing"
    if slot.active_pid:
        holder = consumer(conn, slot.active_pid).describe()
        return warning(name, f"replication slot {s!r} is in use by {holder}; run stands by until it "
                             "is free")
    return ok(name, f"{s} (pgoutput, database {slot.database}), confirmed up to {confirmed}")


def slot_capacity_check(facts: publication_sql.ServerFacts, creating: bool) -> Check:
    name = "replication slots"
    used, most = facts.used_replication_slots, facts.max_replication_slots
    if creating and used >= most:
        return failed(name, f"all {most} replication slots are in use (max_replication_slots)",
                      "drop an unused slot (wal2http slot status --all lists them), or raise "
                      "max_replication_slots (needs a restart)", ExitStatus.DATABASE)
    return ok(name, f"{used} of {most} in use")
