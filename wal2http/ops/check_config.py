"""``check-config``: the whole checklist of what ``run`` would meet, offline and online; creates nothing."""

from __future__ import annotations

import contextlib
import os
import ssl
from urllib.parse import urlsplit

from wal2http.checklist import Check, CheckName, Status, failed, ok, warning
from wal2http.config.cloudevents import EventFormat
from wal2http.config.dsn import redact_dsn
from wal2http.config.hook0 import Hook0Config, Hook0Mode
from wal2http.config.outcomes import Action
from wal2http.config.rules import problems
from wal2http.config.sections import HttpConfig, OnReject, SinkKind, SourceConfig
from wal2http.config.settings import Config
from wal2http.config.validation import public_url
from wal2http.delivery.deliverer import GiveUpLimits
from wal2http.errors import ConfigError, DatabaseError, ExitStatus, Wal2HttpError
from wal2http.hook0 import checks as hook0_checks
from wal2http.hook0.checks import Published
from wal2http.ops.checks import database_checks, file_checks
from wal2http.ops.probe import probe
from wal2http.pg import publication as publication_sql
from wal2http.pg.connection import connection_params, source_connection
from wal2http.sinks.http import tls_context

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
    routes = config.routing.routes
    if routes:
        sink_detail = f"http to {len(routes)} route{'s' if len(routes) > 1 else ''} of {config.routing.routes_file}"
    elif http is not None:
        sink_detail = (f"{sink.kind} to {public_url(http.url)}, at most {http.timeout_s:g} s per request "
                       f"in all{_protection(http)}")
        if sink.kind == SinkKind.HTTP and http.format != EventFormat.JSON:
            ce = http.cloudevents
            sink_detail += (f", --format {http.format} (source {ce.source or f'/wal2http/DATABASE/{src.slot}'}, "
                            f"type {ce.type_prefix}.SCHEMA.TABLE.OP)")
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
        *([check("routes", "routes", _routes_detail(config))] if routes or "routes" in found else []),
        check("batch limits", "batch", f"--batch-size {batch.max_events}, --batch-bytes {batch.max_bytes}, "
                                       f"--batch-wait-ms {batch.max_wait_ms}"),
        check("delivery settings", "delivery", _delivery_detail(config)),
        ok("answers", _answers_detail(config)),
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


def _routes_detail(config: Config) -> str:
    """Each route: where it sends, what it takes, and what a refusal does; no secret."""
    parts = []
    for route in config.routing.routes:
        takes = f"filter {route.filter.text!r}" if route.filter is not None else "every event"
        policy = f"on_reject {route.on_reject}" + (f" to {route.dead_letter_path}" if route.dead_letter_path else "")
        parts.append(f"{route.name} to {public_url(route.http.url)} ({takes}, format {route.http.format}, {policy}"
                     f"{_protection(route.http)})")
    return "; ".join(parts)


def _delivery_detail(config: Config) -> str:
    d = config.delivery
    policy = f"--on-reject {d.on_reject}"
    if d.on_reject == OnReject.DEAD_LETTER:
        policy += f" to {d.dead_letter_path}"
    give_up = GiveUpLimits.of(d)
    if give_up is not None:
        policy += f", give up after {give_up.describe()} to {d.dead_letter_path}"
    if d.max_dead_letters is not None:
        policy += f", --max-dead-letters {d.max_dead_letters}"
    return (f"{policy}, --max-event-bytes {d.max_event_bytes}, breaker after {d.breaker_failures} failures "
            f"({d.breaker_cooldown_s:g} s first pause), --shutdown-timeout {d.shutdown_timeout_s:g} s")


def _answers_detail(config: Config) -> str:
    """The effective status table of the http sink: what each answer leads to."""
    d = config.delivery
    give_up = GiveUpLimits.of(d)
    actions = {
        Action.ACCEPTED: "accepted",
        Action.RETRY: f"retry, then dead-letter ({give_up.describe()})" if give_up else "retry until accepted",
        Action.REJECT: f"reject (--on-reject {d.on_reject})",
        Action.SMALLER: "fewer events per request, a single event to --on-reject",
        Action.HALT: "halt (exit 4)",
    }
    grouped: dict[Action, list[str]] = {}
    for statuses, action in d.statuses.table():
        grouped.setdefault(action, []).append(statuses)
    return "; ".join(f"{', '.join(grouped[action])}: {actions[action]}" for action in Action if action in grouped)


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


# -- check-config ----------------------------------------------------------------------------------


def online_checks(config: Config, hook0: Hook0Config | None = None) -> tuple[list[Check], Published | None]:
    """The database as ``run`` would meet it, and the Hook0 outbox table; nothing is created.

    Also returns, in Hook0 changes mode, what the publication streams (for the event types check).
    """
    checks: list[Check] = []
    src = config.source
    changes = None
    with contextlib.ExitStack() as opened:
        try:
            conn = opened.enter_context(source_connection(src))
        except Wal2HttpError as e:
            checks.append(failed("database", str(e), "check the DSN, the network and pg_hba.conf",
                                 ExitStatus.DATABASE))
            return checks, changes
        try:
            facts = publication_sql.server_facts(conn)
            checks.append(connection_check(facts))
            checks.extend(database_checks(conn, config, facts, hook0))
            checks.append(wal_keep_check(facts))
            http = _endpoint(config)
            if http is not None:
                checks.append(http_timeout_check(http.timeout_s, facts.wal_sender_timeout_ms))
            if hook0 is not None and hook0.mode == Hook0Mode.CHANGES:
                changes = hook0_checks.published(conn, src, facts.database)
        except DatabaseError as e:
            checks.append(failed("database", str(e), None, ExitStatus.DATABASE))
    return checks, changes


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


def sink_checks(config: Config) -> list[Check]:
    """The receivers accept connections (``run`` waits for one that does not): the sink's, or each route's."""
    if config.routing.routes:
        return [_reachable(f"route {r.name}", r.http, f"route {r.name}'s url") for r in config.routing.routes]
    http = _endpoint(config)
    if http is None:
        return [ok("sink", "standard output")] if config.sink.kind == SinkKind.STDOUT else []
    return [_reachable("sink", http, "--hook0-api-url" if config.sink.kind == SinkKind.HOOK0 else "--http-url")]


def _reachable(name: str, http: HttpConfig, option: str) -> Check:
    """A TCP connection (and TLS handshake, trusting what ``run`` trusts) to the host ``http.url`` names."""
    if "{" in urlsplit(http.url).netloc:
        return warning(name, f"{public_url(http.url)}: its host depends on the event, so it is not checked here",
                       f"check that each host {option} can name accepts connections")
    try:
        tls = tls_context(http) if http.url.startswith("https:") else None
    except (OSError, ssl.SSLError) as e:
        return failed(name, f"cannot load the CAs to verify the receiver with, or the client certificate: {e}",
                      "check REQUESTS_CA_BUNDLE, --ca-file, --client-cert and --client-key")
    try:
        return ok(name, probe(http.url, http.timeout_s, tls))
    except ConfigError as e:
        return failed(name, str(e), f"check {option} and that the receiver is running")


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
        checks.extend(file_checks(config))  # run's start list ends with them too
        sinks = sink_checks(config)
        checks.extend(sinks)
        if hook0 is not None and sinks and sinks[0].status is Status.OK:
            checks.extend(hook0_checks.api_checks(hook0, changes))
    return checks
