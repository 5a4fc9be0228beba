"""The options shared by commands, and the configuration built from them."""

from __future__ import annotations

import os
from typing import Any

import click
from click.core import ParameterSource

from wal2http.cli.app import Lines, env, fail, options, secret_file_option
from wal2http.config.cloudevents import DEFAULT_TYPE_PREFIX, CloudEventsConfig, EventFormat
from wal2http.config.durations import parse_duration
from wal2http.config.headers import parse_headers
from wal2http.config.hook0 import Hook0Config, Hook0Mode
from wal2http.config.outcomes import status_classes
from wal2http.config.routes_file import load_routes
from wal2http.config.routing import RoutingConfig, compile_expression, parse_columns
from wal2http.config.rules import parse_listen_address, split_signing_secrets, validate
from wal2http.config.secrets import (
    ADMIN_TOKEN,
    DSN,
    HOOK0_API_TOKEN,
    HTTP_BEARER_TOKEN,
    SIGNING_SECRET,
    SMTP_PASSWORD,
    Secret,
    load_dsn,
)
from wal2http.config.sections import (
    RANGES,
    BackfillConfig,
    BatchConfig,
    DeliveryConfig,
    HttpConfig,
    LogConfig,
    MetricsConfig,
    NotifyConfig,
    OnReject,
    SinkKind,
    SourceConfig,
)
from wal2http.config.settings import Config, SinkConfig
from wal2http.errors import ConfigError, ExitStatus, Wal2HttpError


def _int(option: str) -> click.IntRange:
    low, high = RANGES[option]
    return click.IntRange(int(low), int(high))


class Duration(click.FloatRange):
    """Seconds, as a plain number or with units (``15s``, ``2m``, ``1h``), within the option's range."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str):
            try:
                value = parse_duration(value)
            except ValueError as e:
                self.fail(str(e), param, ctx)
        return super().convert(value, param, ctx)


def _float(option: str) -> click.FloatRange:
    """The type of an option taking seconds (every float option does)."""
    return Duration(*RANGES[option])


failover_option = click.option(
    "--failover", is_flag=True, envvar=env("FAILOVER"),
    help="Create the slot as a failover slot (PostgreSQL 17+): standbys with sync_replication_slots "
         "keep it, so streaming goes on after a promotion.")

messages_option = click.option(
    "--messages", is_flag=True, envvar=env("MESSAGES"),
    help="Also deliver pg_logical_emit_message() messages as 'message' events.")

source_options = options(
    "Database",
    click.option("--dsn", envvar=env("DSN", "DATABASE_URL"), metavar="DSN",
                 help="PostgreSQL connection string (URL or key=value) without a password; a DSN "
                      "with a password goes in WAL2HTTP_DSN or --dsn-file."),
    secret_file_option(DSN, "File holding the PostgreSQL connection string."),
    click.option("--require-tls", is_flag=True, envvar=env("REQUIRE_TLS"),
                 help="Refuse database connections that do not use TLS (exit 3)."),
    click.option("--slot", envvar=env("SLOT", "SLOT_NAME"), default=SourceConfig.slot, metavar="NAME",
                 help="Logical replication slot (pgoutput)."),
    click.option("--publication", envvar=env("PUBLICATION", "PUB_NAME"), default=SourceConfig.publication,
                 metavar="NAME",
                 help="Publication whose changes are streamed."),
)

hook0_options = options(
    "Hook0",
    click.option("--hook0-api-url", envvar=env("HOOK0_API_URL", "HOOK0_API_URL"), metavar="URL",
                 help="Hook0 API base URL for --sink hook0, e.g. https://app.hook0.com/api/v1."),
    click.option("--hook0-application-id", envvar=env("HOOK0_APPLICATION_ID", "HOOK0_APPLICATION_ID"),
                 metavar="UUID", help="Hook0 application that receives the events."),
    secret_file_option(HOOK0_API_TOKEN, "File holding the Hook0 API token."),
    click.option("--hook0-mode", type=click.Choice([m.value for m in Hook0Mode]), envvar=env("HOOK0_MODE"),
                 default=Hook0Config.mode.value,
                 help="outbox: rows inserted into the outbox table (and hook0 messages) are the "
                      "events; changes: every row change is an event."),
    click.option("--hook0-outbox-table", envvar=env("HOOK0_OUTBOX_TABLE"), default=Hook0Config.outbox_table,
                 metavar="[SCHEMA.]TABLE", help="Outbox table of --hook0-mode outbox."),
    click.option("--hook0-message-prefix", envvar=env("HOOK0_MESSAGE_PREFIX"), default=Hook0Config.message_prefix,
                 metavar="PREFIX",
                 help="pg_logical_emit_message() prefix of outbox messages (with --messages)."),
    click.option("--hook0-service", envvar=env("HOOK0_SERVICE"), metavar="NAME",
                 help="Service part of changes-mode event types <service>.<table>.<verb> "
                      "[default: the database name, sanitised]."),
    click.option("--hook0-label", "hook0_labels", multiple=True, envvar=env("HOOK0_LABEL"),
                 metavar="NAME=COLUMN",
                 help="Changes mode: a label taken from a row column (repeatable)."),
    click.option("--hook0-ensure-event-types", is_flag=True, envvar=env("HOOK0_ENSURE_EVENT_TYPES"),
                 help="Create missing Hook0 event types: at start for the published tables (changes "
                      "mode), and before the first event of any other type."),
)

sink_options = options(
    "Sink",
    click.option("--sink", type=click.Choice([k.value for k in SinkKind]),
                 envvar=env("SINK", "EVENT_SINK"), default=SinkConfig.kind.value, help="Where events go."),
    click.option("--http-url", envvar=env("HTTP_URL", "HTTP_ENDPOINT_URL"), metavar="URL",
                 help="Receiver URL for --sink http."),
    click.option("--http-timeout", type=_float("http_timeout"), envvar=env("HTTP_TIMEOUT"),
                 default=HttpConfig.timeout_s,
                 metavar="SECONDS", help="Total time one request may take (connect, TLS, send, answer); "
                                         "keep it below wal_sender_timeout/2."),
    secret_file_option(HTTP_BEARER_TOKEN, "File holding the token sent as 'Authorization: Bearer'."),
    secret_file_option(SIGNING_SECRET, "File holding the Standard Webhooks signing secret(s), whsec_..., "
                                       "separated by white space to sign with several during a rotation."),
    click.option("--header", "headers", multiple=True, type=Lines(), envvar=env("HEADER"),
                 metavar="'NAME: VALUE'",
                 help="Add a header to every request (repeatable). A secret value is read from the "
                      "environment with 'NAME: env:VARIABLE' or from a file with 'NAME: file:PATH'."),
    click.option("--ca-file", envvar=env("CA_FILE"), metavar="PATH",
                 help="PEM file of the CAs trusted for the receiver, instead of the default bundle."),
    click.option("--client-cert", envvar=env("CLIENT_CERT"), metavar="PATH",
                 help="PEM client certificate for mutual TLS with the receiver."),
    click.option("--client-key", envvar=env("CLIENT_KEY"), metavar="PATH",
                 help="Unencrypted PEM private key of the client certificate, if not in the same file."),
    click.option("--file-path", envvar=env("FILE_PATH"), metavar="PATH",
                 help="File that --sink file appends JSON lines to."),
    click.option("--format", "event_format", type=click.Choice([f.value for f in EventFormat]),
                 envvar=env("FORMAT"), default=HttpConfig.format.value,
                 help="Shape of the http sink's requests: the event JSON, or CloudEvents 1.0.2 in structured "
                      "mode (several events: a batch array) or binary mode (one event per request)."),
    click.option("--ce-source", envvar=env("CE_SOURCE"), metavar="URI-REFERENCE",
                 help="CloudEvents 'source' attribute [default: /wal2http/DATABASE/SLOT]; replay needs it."),
    click.option("--ce-type-prefix", envvar=env("CE_TYPE_PREFIX"), default=DEFAULT_TYPE_PREFIX, metavar="PREFIX",
                 help="CloudEvents 'type' is PREFIX.SCHEMA.TABLE.OP (PREFIX.message for a logical decoding message)."),
    hook0_options,
    options(
        "Delivery",
        click.option("--batch-size", type=_int("batch_size"), envvar=env("BATCH_SIZE"),
                     default=BatchConfig.max_events, metavar="N",
                     help="Events per request at most; above 1 the body is a JSON array."),
        click.option("--batch-bytes", "--max-batch-bytes", "batch_bytes", type=_int("batch_bytes"),
                     envvar=env("BATCH_BYTES", "WAL2HTTP_MAX_BATCH_BYTES"),
                     default=BatchConfig.max_bytes, metavar="BYTES",
                     help="Body bytes per request at most (a larger single event is sent alone)."),
    ),
)

breaker_options = options(
    "Delivery",
    click.option("--breaker-failures", type=_int("breaker_failures"), envvar=env("BREAKER_FAILURES"),
                 default=DeliveryConfig.breaker_failures,
                 metavar="N",
                 help="Consecutive failed attempts that open the circuit breaker."),
    click.option("--breaker-cooldown", type=_float("breaker_cooldown"), envvar=env("BREAKER_COOLDOWN"),
                 default=DeliveryConfig.breaker_cooldown_s, metavar="SECONDS",
                 help="First pause of an open breaker; doubles after each failed probe, up to 300 s."),
    click.option("--reject-status", envvar=env("REJECT_STATUS"), metavar="STATUSES",
                 help="Answers that refuse an event for good (to --on-reject), e.g. 400,422 or 409,450-499; "
                      "over the defaults (other 3xx and 4xx)."),
    click.option("--retry-status", envvar=env("RETRY_STATUS"), metavar="STATUSES",
                 help="Answers retried like an outage, e.g. 409,429; over the defaults (408, 425, 429, 5xx). "
                      "401, 403, 404 and 410 always stop; 413 always sends fewer events per request."),
)

log_options = options(
    "Logging",
    click.option("--log-format", type=click.Choice(["text", "json"]), envvar=env("LOG_FORMAT"),
                 default=LogConfig.format,
                 help="Log record format on standard error."),
    click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
                 envvar=env("LOG_LEVEL"), default=LogConfig.level.lower(), help="Least severe level logged."),
    click.option("--log-file", envvar=env("LOG_FILE"), metavar="PATH",
                 help="Write log records to this file instead of standard error."),
    click.option("--log-max-bytes", type=click.IntRange(0), envvar=env("LOG_MAX_BYTES"), default=LogConfig.max_bytes,
                 metavar="BYTES", help="Rotate --log-file at this size; 0: never (rotate it with logrotate, "
                                       "then send SIGHUP to reopen it)."),
    click.option("--log-backups", type=_int("log_backups"), envvar=env("LOG_BACKUPS"), default=LogConfig.backups,
                 help="Rotated log files kept (PATH.1 ... PATH.N)."),
)

observability_options = options(
    "Monitoring",
    click.option("--progress-seconds", type=_float("progress_seconds"), envvar=env("PROGRESS_SECONDS"),
                 default=LogConfig.progress_s, metavar="SECONDS", help="Log a progress line this often; 0: never."),
    click.option("--metrics-addr", envvar=env("METRICS_ADDR"), metavar="HOST:PORT",
                 help="Serve /metrics, /healthz and /readyz here (a port alone binds 127.0.0.1). Off by "
                      "default. Set WAL2HTTP_ADMIN_TOKEN to require a bearer token."),
    secret_file_option(ADMIN_TOKEN, "File holding the bearer token every admin path then requires."),
    click.option("--health-stall-seconds", type=_float("health_stall_seconds"), envvar=env("HEALTH_STALL_SECONDS"),
                 default=MetricsConfig.health_stall_s, metavar="SECONDS",
                 help="/healthz fails when the main loop made no progress for this long."),
    click.option("--slot-poll-seconds", type=_float("slot_poll_seconds"), envvar=env("SLOT_POLL_SECONDS"),
                 default=MetricsConfig.slot_poll_s, metavar="SECONDS",
                 help="How often the slot's lag and retained WAL are read (SQL connection); 0: never."),
    click.option("--metrics-table-labels", is_flag=True, envvar=env("METRICS_TABLE_LABELS"),
                 help="Label wal2http_events_total with schema and table (one series per table)."),
    options(
        "Notifications",
        click.option("--smtp-host", envvar=env("SMTP_HOST", "SMTP_HOST"), metavar="HOST",
                     help="Mail server for failure notifications; none are sent without it."),
        click.option("--smtp-port", type=click.IntRange(1, 65535), envvar=env("SMTP_PORT", "SMTP_PORT"),
                     show_default="587, or 25 with --no-smtp-starttls", help="Mail server port."),
        click.option("--smtp-username", envvar=env("SMTP_USERNAME", "SMTP_USERNAME"), metavar="NAME",
                     help="Mail server login; the password comes from WAL2HTTP_SMTP_PASSWORD, SMTP_PASSWORD "
                          "or --smtp-password-file."),
        secret_file_option(SMTP_PASSWORD, "File holding the mail server password."),
        click.option("--smtp-from", envvar=env("SMTP_FROM", "SMTP_FROM"), metavar="ADDRESS",
                     help="Sender address of notifications."),
        click.option("--smtp-to", envvar=env("SMTP_TO", "SMTP_TO"), metavar="ADDRESSES",
                     help="Recipients of notifications, separated by commas."),
        click.option("--smtp-starttls/--no-smtp-starttls", envvar=env("SMTP_STARTTLS", "SMTP_STARTTLS"),
                     default=NotifyConfig.starttls,
                     help="Encrypt the mail connection with STARTTLS (certificate verified)."),
        click.option("--notify-after", type=_float("notify_after"), envvar=env("NOTIFY_AFTER"),
                     default=NotifyConfig.notify_after_s,
                     metavar="SECONDS", help="Email when the circuit breaker stays open this long."),
        click.option("--notify-interval", type=_float("notify_interval"), envvar=env("NOTIFY_INTERVAL"),
                     default=NotifyConfig.interval_s, metavar="SECONDS",
                     help="At most one dead-letter email this often; the dead letters in between are summarised."),
    ),
)

# Every option of run; check-config takes them too, to check them.
run_options = options(
    "Delivery",
    options(
        "Database",
        click.option("--create-slot", is_flag=True, envvar=env("CREATE_SLOT"),
                     help="Create the slot when it does not exist (never a publication)."),
        failover_option,
        messages_option,
    ),
    options(
        "Backfill",
        click.option("--backfill", is_flag=True, envvar=env("BACKFILL"),
                     help="With --create-slot: when the slot is created, queue a backfill of every published "
                          "table, so the existing rows are sent too."),
        click.option("--backfill-chunk-size", type=_int("backfill_chunk_size"), envvar=env("BACKFILL_CHUNK_SIZE"),
                     default=BackfillConfig.chunk_size, metavar="N",
                     help="Rows per backfill chunk (one short select each)."),
        click.option("--backfill-chunk-bytes", type=_int("backfill_chunk_bytes"),
                     envvar=env("BACKFILL_CHUNK_BYTES"), default=BackfillConfig.chunk_bytes, metavar="BYTES",
                     help="Column text per backfill chunk at most (a larger single row is read alone)."),
        click.option("--reselect-toast", is_flag=True, envvar=env("RESELECT_TOAST"),
                     help="Follow every update that lacks an unchanged large (TOASTed) value with a 'read' "
                          "event of the whole row, taken between watermarks."),
    ),
    sink_options,
    options(
        "Routing",
        click.option("--filter", "filter_expression", envvar=env("FILTER"), metavar="EXPR",
                     help="Send only the events this CEL expression is true for; it reads op, schema, table, key, "
                          "new, old, changed and unchanged_toast (old and changed need REPLICA IDENTITY FULL)."),
        click.option("--columns", "columns", multiple=True, type=Lines(), envvar=env("COLUMNS"),
                     metavar="SCHEMA.TABLE=COL,COL",
                     help="Keep only these columns of a table in new and old; the key stays whole (repeatable)."),
        click.option("--routes", "routes_file", envvar=env("ROUTES"), metavar="FILE",
                     type=click.Path(dir_okay=False),
                     help="TOML file of [[route]] tables: each sends the events its filter takes to its own URL "
                          "(with --sink http, instead of --http-url)."),
    ),
    click.option("--batch-wait-ms", type=_int("batch_wait_ms"), envvar=env("BATCH_WAIT_MS"),
                 default=BatchConfig.max_wait_ms,
                 metavar="MS",
                 help="Longest time an event waits for its batch to fill while changes keep coming."),
    click.option("--on-reject", type=click.Choice([p.value for p in OnReject]), envvar=env("ON_REJECT"),
                 default=DeliveryConfig.on_reject.value,
                 help="What a refused event does: stop (exit 4), go to the dead-letter file, "
                                      "or be skipped. 401, 403, 404 and 410 always stop."),
    click.option("--dead-letter-path", envvar=env("DEAD_LETTER_PATH"), metavar="PATH",
                 help="JSON-lines file for --on-reject dead-letter (see 'wal2http replay')."),
    click.option("--give-up-after", type=_float("give_up_after"), envvar=env("GIVE_UP_AFTER"),
                 metavar="SECONDS",
                 help="An event failing (5xx, timeouts, connection errors, --retry-status) this long goes to "
                      "--dead-letter-path and the stream goes on; later changes of its row are parked "
                      "behind it. Off by default: retried until it succeeds."),
    click.option("--give-up-attempts", type=_int("give_up_attempts"), envvar=env("GIVE_UP_ATTEMPTS"),
                 metavar="N", help="Like --give-up-after, after this many failed attempts."),
    click.option("--max-dead-letters", type=_int("max_dead_letters"), envvar=env("MAX_DEAD_LETTERS"),
                 metavar="N",
                 help="Halt (exit 4) rather than write more than N lines to the dead-letter file (counting "
                      "those in it at start). No limit by default."),
    click.option("--max-event-bytes", type=_int("max_event_bytes"), envvar=env("MAX_EVENT_BYTES"),
                 default=DeliveryConfig.max_event_bytes, metavar="BYTES",
                 help="Largest event sent; a larger one is refused and handled by --on-reject."),
    breaker_options,
    options(
        "Database",
        click.option("--reconnect-max-wait", type=_float("reconnect_max_wait"), envvar=env("RECONNECT_MAX_WAIT"),
                     default=SourceConfig.reconnect_max_wait_s, metavar="SECONDS",
                     help="Longest pause between reconnection attempts."),
        click.option("--replication-timeout", type=_float("replication_timeout"), envvar=env("REPLICATION_TIMEOUT"),
                     default=SourceConfig.replication_timeout_s, metavar="SECONDS",
                     help="Silence from PostgreSQL after which it is asked to answer; no answer means reconnect."),
    ),
    click.option("--shutdown-timeout", type=_float("shutdown_timeout"), envvar=env("SHUTDOWN_TIMEOUT"),
                 default=DeliveryConfig.shutdown_timeout_s, metavar="SECONDS",
                 help="How long a stop may wait to finish the open transaction."),
    log_options,
    observability_options,
)



def given(o: dict[str, Any], **fields: str) -> dict[str, Any]:
    """Keyword arguments for a settings dataclass: ``field="option"`` for each option this command has.

    An option the command does not take is left out, so the dataclass default (the one the option's
    own default is read from) applies.
    """
    return {field: o[option] for field, option in fields.items() if option in o}


def unchecked_config(o: dict[str, Any]) -> Config:
    """The configuration the options describe, not validated yet; reading a secret may raise ConfigError."""
    log = given(o, format="log_format", level="log_level", file="log_file", max_bytes="log_max_bytes",
                backups="log_backups", progress_s="progress_seconds")
    if "level" in log:
        log["level"] = log["level"].upper()
    return Config(
        source=source_config(o),
        sink=SinkConfig(**given(o, kind="sink", file_path="file_path"), http=_http_config(o),
                        hook0=_hook0_config(o) if o.get("sink") == SinkKind.HOOK0 else None),
        batch=BatchConfig(**given(o, max_events="batch_size", max_bytes="batch_bytes", max_wait_ms="batch_wait_ms")),
        delivery=DeliveryConfig(**given(
            o, on_reject="on_reject", dead_letter_path="dead_letter_path", max_event_bytes="max_event_bytes",
            breaker_failures="breaker_failures", breaker_cooldown_s="breaker_cooldown",
            shutdown_timeout_s="shutdown_timeout", give_up_after_s="give_up_after",
            give_up_attempts="give_up_attempts", max_dead_letters="max_dead_letters"),
            statuses=status_classes(o.get("reject_status"), o.get("retry_status"))),
        log=LogConfig(**log),
        metrics=_metrics_config(o),
        notify=_notify_config(o),
        backfill=BackfillConfig(**given(o, chunk_size="backfill_chunk_size", chunk_bytes="backfill_chunk_bytes",
                                        reselect_toast="reselect_toast", initial="backfill")),
        routing=_routing_config(o),
    )


def _routing_config(o: dict[str, Any]) -> RoutingConfig:
    path = o.get("routes_file")
    return RoutingConfig(
        filter=compile_expression(o["filter_expression"]) if o.get("filter_expression") else None,
        columns=parse_columns(o.get("columns") or ()),
        routes=load_routes(path, _http_config(o, url="") or HttpConfig(url=""), os.environ) if path else (),
        routes_file=path)


def build_config(o: dict[str, Any], database: bool = True, *, validated: bool = True) -> Config:
    """The configuration, validated unless ``validated`` is False (check-config lists the problems
    itself); a problem ends the command with its exit code."""
    try:
        config = unchecked_config(o)
        return validate(config, database=database) if validated else config
    except Wal2HttpError as e:
        fail(str(e), e.exit_status, as_json=o.get("log_format") == "json")
    except Exception as e:
        # Logging (and its secret filter) is not set up yet: the message could hold a secret.
        fail(f"unexpected error while reading the configuration ({type(e).__name__})", ExitStatus.ERROR,
             as_json=o.get("log_format") == "json")


def source_config(o: dict[str, Any]) -> SourceConfig:
    """The database settings of any command using ``source_options``; secrets from env or files."""
    from_flag = click.get_current_context().get_parameter_source("dsn") is ParameterSource.COMMANDLINE
    return SourceConfig(
        dsn=load_dsn(o.get("dsn") if from_flag else None, o.get("dsn_file"), os.environ),
        **given(o, slot="slot", publication="publication", create_slot="create_slot", failover="failover",
                messages="messages", until="until",
                reconnect_max_wait_s="reconnect_max_wait", replication_timeout_s="replication_timeout",
                require_tls="require_tls"),
    )


def _http_config(o: dict[str, Any], url: str | None = None) -> HttpConfig | None:
    """The http sink's settings; without --http-url only when a --format was given (the rules refuse it
    with the other sinks). With ``url``, the settings every route of --routes shares (its own URL replaces it)."""
    event_format = EventFormat(o.get("event_format") or EventFormat.JSON)
    if url is None and not o.get("http_url") and event_format == EventFormat.JSON:
        return None
    return HttpConfig(
        url=(o.get("http_url") or "") if url is None else url,
        format=event_format,
        cloudevents=CloudEventsConfig(**given(o, source="ce_source", type_prefix="ce_type_prefix")),
        **given(o, timeout_s="http_timeout"),
        bearer_token=HTTP_BEARER_TOKEN.load(o.get("http_bearer_token_file"), os.environ),
        signing_secrets=split_signing_secrets(SIGNING_SECRET.load(o.get("signing_secret_file"), os.environ)),
        headers=parse_headers(o.get("headers", ()), os.environ),
        ca_file=o.get("ca_file"),
        client_cert=o.get("client_cert"),
        client_key=o.get("client_key"),
    )


def _hook0_config(o: dict[str, Any]) -> Hook0Config:
    token = HOOK0_API_TOKEN.load(o.get("hook0_api_token_file"), os.environ) or Secret("")
    labels = []
    for mapping in o.get("hook0_labels") or ():
        name, equals, column = mapping.partition("=")
        if not equals:
            raise ConfigError(f"--hook0-label must be NAME=COLUMN, not {mapping!r}")
        labels.append((name.strip(), column.strip()))
    return Hook0Config(
        http=HttpConfig(url=o.get("hook0_api_url") or "", **given(o, timeout_s="http_timeout"),
                        ca_file=o.get("ca_file"), client_cert=o.get("client_cert"), client_key=o.get("client_key")),
        application_id=(o.get("hook0_application_id") or "").strip(),
        token=token,
        **given(o, mode="hook0_mode", outbox_table="hook0_outbox_table", message_prefix="hook0_message_prefix",
                ensure_event_types="hook0_ensure_event_types"),
        service=o.get("hook0_service") or None,
        labels=tuple(labels),
    )


def _metrics_config(o: dict[str, Any]) -> MetricsConfig:
    return MetricsConfig(
        address=parse_listen_address(o["metrics_addr"]) if o.get("metrics_addr") else None,
        token=ADMIN_TOKEN.load(o.get("admin_token_file"), os.environ),
        **given(o, health_stall_s="health_stall_seconds", slot_poll_s="slot_poll_seconds",
                table_labels="metrics_table_labels"),
    )


def _notify_config(o: dict[str, Any]) -> NotifyConfig:
    if not o.get("smtp_host"):
        return NotifyConfig()
    return NotifyConfig(
        smtp_host=o["smtp_host"],
        smtp_port=o.get("smtp_port"),
        username=o.get("smtp_username"),
        password=SMTP_PASSWORD.load(o.get("smtp_password_file"), os.environ),
        sender=o.get("smtp_from") or "",
        recipients=tuple(a.strip() for a in (o.get("smtp_to") or "").split(",") if a.strip()),
        **given(o, starttls="smtp_starttls", notify_after_s="notify_after", interval_s="notify_interval"),
    )
