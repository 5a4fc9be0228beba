"""The checks behind ``check-config``, ``slot create`` and the start of ``run``, as data."""

from __future__ import annotations

import os
from typing import Any

from wal2http.checklist import Check, CheckName, Status, failed, ident, ok, warning
from wal2http.config.dsn import redact_dsn
from wal2http.config.hook0 import Hook0Config, Hook0Mode
from wal2http.config.rules import problems
from wal2http.config.sections import HttpConfig, OnReject, SinkKind, SourceConfig
from wal2http.config.settings import Config
from wal2http.config.validation import public_url
from wal2http.errors import ConfigError, DatabaseError, ExitStatus, Wal2HttpError
from wal2http.hook0 import checks as hook0_checks
from wal2http.hook0.checks import Published
from wal2http.lsn import format_lsn
from wal2http.ops.probe import probe
from wal2http.pg import backfill as backfill_sql
from wal2http.pg import publication as publication_sql
from wal2http.pg.connection import connect_source, connection_params
from wal2http.pg.slot import Slot, consumer, find_slot

OLDEST_SUPPORTED = 140000  # messages (backfill watermarks); the test suite runs on 14 to 18
FAILOVER_VERSION = 170000


# -- offline ---------------------------------------------------------------------------------------


def offline_checks(config: Config) -> list[Check]:
    """Every setting, without connecting anywhere."""
    found: dict[str, list[str]] = {}
    for p in problems(config):
        found.setdefault(p.setting, []).append(p.message)

    def check(name: str, setting: str, detail: str) -> Check:
        messages = found.get(setting)
        return failed(name, "; ".join(messages)) if messages else ok(name, detail)

    src, sink, batch = config.source, config.sink, config.batch
    http = _endpoint(config)
    if http is not None:
        sink_detail = (f"{sink.kind} to {public_url(http.url)}, at most {http.timeout_s:g} s per request "
                       f"in all{_protection(http)}")
        if sink.hook0 is not None:
            sink_detail += (f", application {sink.hook0.application_id}, --hook0-mode {sink.hook0.mode}, "
                            "API token given (hidden)")
    elif sink.kind == SinkKind.FILE:
        sink_detail = f"JSON lines appended to {sink.file_path}"
    else:
        sink_detail = "JSON lines on standard output"
    return [
        _dsn_check(src, found.get("dsn")),
        check("slot name", "slot", src.slot),
        check("publication name", "publication", src.publication),
        check(CheckName.SINK_SETTINGS, "sink", sink_detail),
        check("batch limits", "batch", f"--batch-size {batch.max_events}, --batch-bytes {batch.max_bytes}, "
                                       f"--batch-wait-ms {batch.max_wait_ms}"),
        check("delivery settings", "delivery", _delivery_detail(config)),
    ]


def _protection(http: HttpConfig) -> str:
    """How requests are authenticated and TLS set up, naming no secret."""
    parts = []
    if http.bearer_token is not None:
        parts.append("bearer token given (hidden)")
    if http.signing_secrets:
        n = len(http.signing_secrets)
        parts.append(f"signed with {n} secret{'s' if n > 1 else ''} (hidden)")
    if http.headers:
        parts.append("headers " + ", ".join(h.name for h in http.headers))
    if http.ca_file:
        parts.append(f"CAs of {http.ca_file}")
    if http.client_cert:
        parts.append(f"client certificate {http.client_cert}")
    return "".join(f", {p}" for p in parts)


def _delivery_detail(config: Config) -> str:
    d = config.delivery
    policy = f"--on-reject {d.on_reject}"
    if d.on_reject == OnReject.DEAD_LETTER:
        policy += f" to {d.dead_letter_path}"
    return (f"{policy}, --max-event-bytes {d.max_event_bytes}, breaker after {d.breaker_failures} failures "
            f"({d.breaker_cooldown_s:g} s first pause), --shutdown-timeout {d.shutdown_timeout_s:g} s")


def _dsn_check(src: SourceConfig, messages: list[str] | None) -> Check:
    if messages:
        return failed(CheckName.DSN, "; ".join(messages))
    dsn = src.dsn.reveal()
    try:
        params = connection_params(dsn, require_tls=src.require_tls)
    except ConfigError as e:
        return failed(CheckName.DSN, str(e))
    host = params.get("host") or params.get("hostaddr") or "local socket"
    where = [f"host {host}", f"port {params.get('port', '5432')}",
             f"database {params.get('dbname', '(default)')}", f"user {params.get('user', '(default)')}"]
    sslmode = params.get("sslmode") or os.environ.get("PGSSLMODE")
    if sslmode:
        where.append(f"sslmode {sslmode}")
    if src.require_tls:
        where.append("TLS required (--require-tls)")
    return ok(CheckName.DSN, f"{', '.join(where)}: {redact_dsn(dsn)}")


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


def stream_checks(conn: Any, source: SourceConfig, facts: publication_sql.ServerFacts) -> list[Check]:
    """Everything ``run`` needs on the database side, in the order ``run`` reports failures."""
    checks = server_checks(facts, source.messages)
    publication = publication_sql.find_publication(conn, source.publication)
    checks.append(publication_check(publication, source.publication, facts.database))
    if publication is not None:
        checks.append(replica_identity_check(conn, publication))
    slot = find_slot(conn, source.slot)
    checks.append(slot_check(conn, slot, source, facts.database))
    failover = failover_check(facts, slot, source.failover and source.create_slot)
    if failover is not None:
        checks.append(failover)
    checks.append(slot_capacity_check(facts, slot is None))
    free = facts.max_wal_senders - facts.used_wal_senders
    if free <= 0:
        checks.append(failed(CheckName.WAL_SENDERS, f"all {facts.max_wal_senders} wal senders are in use",
                             "stop an unused replication consumer, or raise max_wal_senders "
                             "(needs a restart)", ExitStatus.DATABASE))
    else:
        checks.append(ok(CheckName.WAL_SENDERS, f"{facts.used_wal_senders} of {facts.max_wal_senders} in use"))
    return checks


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


def replica_identity_check(conn: Any, publication: publication_sql.Publication) -> Check:
    name = CheckName.REPLICA_IDENTITY
    ops = [op for op in ("update", "delete") if op in publication.operations]
    if not ops:
        return ok(name, f"not needed: publication {publication.name} publishes no update or delete")
    missing = publication_sql.tables_without_replica_identity(conn, publication.name)
    if not missing:
        return ok(name, "every published table has one")
    statements = " and ".join(op.upper() for op in ops)
    return failed(
        name,
        f"{statements} statements fail on {', '.join(missing)}: no replica identity, and publication "
        f"{publication.name} publishes {' and '.join(ops)}",
        "add a primary key, or " + " ".join(f"ALTER TABLE {t} REPLICA IDENTITY FULL;" for t in missing),
        ExitStatus.DATABASE,
    )


def slot_check(conn: Any, slot: Slot | None, source: SourceConfig, database: str) -> Check:
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


# -- check-config ----------------------------------------------------------------------------------


def online_checks(config: Config, hook0: Hook0Config | None = None) -> tuple[list[Check], Published | None]:
    """The database as ``run`` would meet it, and the Hook0 outbox table; nothing is created.

    Also returns, in Hook0 changes mode, what the publication streams (for the event types check).
    """
    checks: list[Check] = []
    src = config.source
    changes = None
    try:
        conn = connect_source(src)
    except Wal2HttpError as e:
        checks.append(failed("database", str(e), "check the DSN, the network and pg_hba.conf",
                             ExitStatus.DATABASE))
    else:
        try:
            facts = publication_sql.server_facts(conn)
            checks.append(connection_check(facts))
            checks.extend(stream_checks(conn, src, facts))
            checks.append(wal_keep_check(facts))
            checks.append(backfill_check(conn, src))
            http = _endpoint(config)
            if http is not None:
                checks.append(http_timeout_check(http.timeout_s, facts.wal_sender_timeout_ms))
            if hook0 is not None and hook0.mode == Hook0Mode.OUTBOX:
                checks.extend(hook0_checks.outbox_checks(conn, hook0, src))
            elif hook0 is not None:
                changes = hook0_checks.published(conn, src, facts.database)
        except DatabaseError as e:
            checks.append(failed("database", str(e), None, ExitStatus.DATABASE))
        finally:
            conn.close()
    return checks, changes


def backfill_check(conn: Any, source: SourceConfig) -> Check:
    """What a backfill needs: SELECT on every published table (the requests table is made on request)."""
    name = "backfill"
    unreadable = backfill_sql.unreadable_tables(conn, source.publication)
    if unreadable:
        tables = ", ".join(unreadable)
        return warning(name, f"role {conn.info.user} cannot SELECT {tables}: a backfill of these tables fails",
                       f"GRANT SELECT ON {tables} TO {ident(conn.info.user)};")
    queued = [t for t in backfill_sql.tasks(conn, source.slot) if not t.state.finished]
    pending = f"; {len(queued)} table(s) queued or running for slot {source.slot}" if queued else ""
    return ok(name, f"every published table can be read (pgoutput messages carry the watermarks){pending}")


def connection_check(facts: publication_sql.ServerFacts) -> Check:
    where = f"{facts.host}:{facts.port}, database {facts.database}, role {facts.user}"
    if facts.tls.in_use:
        return ok("database", f"connected to {where}, {facts.tls}")
    if facts.local:
        return ok("database", f"connected to {where}, without TLS (local connection)")
    return warning("database", f"connected to {where} without TLS",
                   "add sslmode=verify-full and sslrootcert=... to the DSN, or pass --require-tls")


def wal_keep_check(facts: publication_sql.ServerFacts) -> Check:
    name = "max_slot_wal_keep_size"
    if facts.max_slot_wal_keep_size_mb < 0:
        return warning(name, "unlimited: a stopped or failing consumer makes the slot keep WAL until "
                             "the disk is full",
                       "ALTER SYSTEM SET max_slot_wal_keep_size = '50GB'; SELECT pg_reload_conf();")
    return ok(name, f"{facts.max_slot_wal_keep_size_mb} MB")


def http_timeout_check(timeout_s: float, wal_sender_timeout_ms: int) -> Check:
    name = "http timeout"
    if wal_sender_timeout_ms > 0 and timeout_s * 1000 >= wal_sender_timeout_ms / 2:
        return warning(name, f"--http-timeout {timeout_s:g} s is not below half of the server's "
                             f"wal_sender_timeout ({wal_sender_timeout_ms / 1000:g} s): one slow request "
                             "can make the server end the stream",
                       f"use --http-timeout {max(0.1, wal_sender_timeout_ms / 4000):g}, "
                       "or raise wal_sender_timeout")
    return ok(name, f"{timeout_s:g} s, below half of wal_sender_timeout")


def _endpoint(config: Config) -> HttpConfig | None:
    """Where the http or hook0 sink sends requests; None for the other sinks."""
    sink = config.sink
    if sink.kind == SinkKind.HTTP:
        return sink.http
    if sink.kind == SinkKind.HOOK0 and sink.hook0 is not None:
        return sink.hook0.http
    return None


def sink_check(config: Config) -> Check:
    """The receiver accepts connections, or the file can be written; the settings must be valid."""
    sink = config.sink
    http = _endpoint(config)
    if http is not None:
        option = "--hook0-api-url" if sink.kind == SinkKind.HOOK0 else "--http-url"
        try:
            return ok("sink", probe(http.url, http.timeout_s))
        except ConfigError as e:
            return failed("sink", str(e), f"check {option} and that the receiver is running")
    if sink.kind == SinkKind.FILE and sink.file_path:
        return _file_check(sink.file_path)
    return ok("sink", "standard output")


def _file_check(path: str) -> Check:
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.exists(path):
        if not os.path.isfile(path) or not os.access(path, os.W_OK):
            return failed("sink", f"{path} is not a writable file",
                          "fix its permissions or choose another --file-path")
        return ok("sink", f"{path} exists and is writable")
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
        return failed("sink", f"cannot create {path}: {directory} is not a writable directory",
                      "create the directory or choose another --file-path")
    return ok("sink", f"{path} can be created")


def check_config(config: Config, offline: bool) -> list[Check]:
    """The whole checklist: offline always, then the database and the sink unless ``offline``."""
    checks = offline_checks(config)
    if offline:
        return checks
    valid = {c.name for c in checks if c.status is Status.OK}
    hook0 = config.sink.hook0 if config.sink.kind == SinkKind.HOOK0 and CheckName.SINK_SETTINGS in valid else None
    changes = None
    if CheckName.DSN in valid:
        online, changes = online_checks(config, hook0)
        checks.extend(online)
    if CheckName.SINK_SETTINGS in valid:
        sink = sink_check(config)
        checks.append(sink)
        if hook0 is not None and sink.status is Status.OK:
            checks.extend(hook0_checks.api_checks(hook0, changes))
    return checks
