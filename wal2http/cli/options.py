"""The options shared by commands, and the configuration built from them."""

from __future__ import annotations

import os
from typing import Any

import click
from click.core import ParameterSource

from wal2http.cli.app import Lines, env, fail, options, secret_file_option
from wal2http.config.headers import parse_headers
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
    BatchConfig,
    DeliveryConfig,
    HttpConfig,
    LogConfig,
    MetricsConfig,
    NotifyConfig,
    SourceConfig,
)
from wal2http.config.settings import Config, SinkConfig
from wal2http.errors import ConfigError, ExitStatus, Wal2HttpError
from wal2http.hook0.settings import Hook0Config

source_options = options(
    "Database",
    click.option("--dsn", envvar=env("DSN", "DATABASE_URL"), metavar="DSN",
                 help="PostgreSQL connection string (URL or key=value) without a password; a DSN "
                      "with a password goes in WAL2HTTP_DSN or --dsn-file."),
    secret_file_option(DSN, "File holding the PostgreSQL connection string."),
    click.option("--require-tls", is_flag=True, envvar=env("REQUIRE_TLS"),
                 help="Refuse database connections that do not use TLS (exit 3)."),
    click.option("--slot", envvar=env("SLOT", "SLOT_NAME"), default="wal2http", metavar="NAME",
                 help="Logical replication slot (pgoutput)."),
    click.option("--publication", envvar=env("PUBLICATION", "PUB_NAME"), default="wal2http", metavar="NAME",
                 help="Publication whose changes are streamed."),
)

hook0_options = options(
    "Hook0",
    click.option("--hook0-api-url", envvar=env("HOOK0_API_URL", "HOOK0_API_URL"), metavar="URL",
                 help="Hook0 API base URL for --sink hook0, e.g. https://app.hook0.com/api/v1."),
    click.option("--hook0-application-id", envvar=env("HOOK0_APPLICATION_ID", "HOOK0_APPLICATION_ID"),
                 metavar="UUID", help="Hook0 application that receives the events."),
    secret_file_option(HOOK0_API_TOKEN, "File holding the Hook0 API token."),
    click.option("--hook0-mode", type=click.Choice(["outbox", "changes"]), envvar=env("HOOK0_MODE"),
                 default="outbox",
                 help="outbox: rows inserted into the outbox table (and hook0 messages) are the "
                      "events; changes: every row change is an event."),
    click.option("--hook0-outbox-table", envvar=env("HOOK0_OUTBOX_TABLE"), default="public.hook0_outbox",
                 metavar="[SCHEMA.]TABLE", help="Outbox table of --hook0-mode outbox."),
    click.option("--hook0-message-prefix", envvar=env("HOOK0_MESSAGE_PREFIX"), default="hook0",
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
    click.option("--sink", type=click.Choice(["stdout", "file", "http", "hook0"]),
                 envvar=env("SINK", "EVENT_SINK"), default="stdout", help="Where events go."),
    click.option("--http-url", envvar=env("HTTP_URL", "HTTP_ENDPOINT_URL"), metavar="URL",
                 help="Receiver URL for --sink http."),
    click.option("--http-timeout", type=click.FloatRange(0.1, 300), envvar=env("HTTP_TIMEOUT"), default=15.0,
                 metavar="SECONDS", help="Read timeout of one request; keep it below wal_sender_timeout/2."),
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
    hook0_options,
    options(
        "Delivery",
        click.option("--batch-size", type=click.IntRange(1, 100_000), envvar=env("BATCH_SIZE"), default=1, metavar="N",
                     help="Events per request at most; above 1 the body is a JSON array."),
        click.option("--batch-bytes", "--max-batch-bytes", "batch_bytes", type=click.IntRange(1024, 64 << 20),
                     envvar=env("BATCH_BYTES", "WAL2HTTP_MAX_BATCH_BYTES"), default=1_048_576, metavar="BYTES",
                     help="Body bytes per request at most (a larger single event is sent alone)."),
    ),
)

breaker_options = options(
    "Delivery",
    click.option("--breaker-failures", type=click.IntRange(1, 1000), envvar=env("BREAKER_FAILURES"), default=5,
                 metavar="N",
                 help="Consecutive failed attempts that open the circuit breaker."),
    click.option("--breaker-cooldown", type=click.FloatRange(0.1, 3600), envvar=env("BREAKER_COOLDOWN"),
                 default=10.0, metavar="SECONDS",
                 help="First pause of an open breaker; doubles after each failed probe, up to 300 s."),
)

log_options = options(
    "Logging",
    click.option("--log-format", type=click.Choice(["text", "json"]), envvar=env("LOG_FORMAT"), default="text",
                 help="Log record format on standard error."),
    click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
                 envvar=env("LOG_LEVEL"), default="info", help="Least severe level logged."),
    click.option("--log-file", envvar=env("LOG_FILE"), metavar="PATH",
                 help="Write log records to this file instead of standard error."),
    click.option("--log-max-bytes", type=click.IntRange(0), envvar=env("LOG_MAX_BYTES"), default=104_857_600,
                 metavar="BYTES", help="Rotate --log-file at this size; 0: never (rotate it with logrotate, "
                                       "then send SIGHUP to reopen it)."),
    click.option("--log-backups", type=click.IntRange(0, 1000), envvar=env("LOG_BACKUPS"), default=5,
                 help="Rotated log files kept (PATH.1 ... PATH.N)."),
)

observability_options = options(
    "Monitoring",
    click.option("--progress-seconds", type=click.FloatRange(0, 86400), envvar=env("PROGRESS_SECONDS"),
                 default=60.0, metavar="SECONDS", help="Log a progress line this often; 0: never."),
    click.option("--metrics-addr", envvar=env("METRICS_ADDR"), metavar="HOST:PORT",
                 help="Serve /metrics, /healthz and /readyz here (a port alone binds 127.0.0.1). Off by "
                      "default. Set WAL2HTTP_ADMIN_TOKEN to require a bearer token."),
    secret_file_option(ADMIN_TOKEN, "File holding the bearer token every admin path then requires."),
    click.option("--health-stall-seconds", type=click.FloatRange(1, 86400), envvar=env("HEALTH_STALL_SECONDS"),
                 default=120.0, metavar="SECONDS",
                 help="/healthz fails when the main loop made no progress for this long."),
    click.option("--slot-poll-seconds", type=click.FloatRange(0, 86400), envvar=env("SLOT_POLL_SECONDS"),
                 default=15.0, metavar="SECONDS",
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
        click.option("--smtp-starttls/--no-smtp-starttls", envvar=env("SMTP_STARTTLS", "SMTP_STARTTLS"), default=True,
                     help="Encrypt the mail connection with STARTTLS (certificate verified)."),
        click.option("--notify-after", type=click.FloatRange(0, 86400), envvar=env("NOTIFY_AFTER"), default=300.0,
                     metavar="SECONDS", help="Email when the circuit breaker stays open this long."),
        click.option("--notify-interval", type=click.FloatRange(0, 86400), envvar=env("NOTIFY_INTERVAL"),
                     default=900.0, metavar="SECONDS",
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
        click.option("--messages", is_flag=True, envvar=env("MESSAGES"),
                     help="Also deliver pg_logical_emit_message() messages as 'message' events."),
    ),
    sink_options,
    click.option("--batch-wait-ms", type=click.IntRange(0, 60_000), envvar=env("BATCH_WAIT_MS"), default=100,
                 metavar="MS",
                 help="Longest time an event waits for its batch to fill while changes keep coming."),
    click.option("--on-reject", type=click.Choice(["halt", "dead-letter", "skip"]), envvar=env("ON_REJECT"),
                 default="halt", help="What a refused event does: stop (exit 4), go to the dead-letter file, "
                                      "or be skipped. 401, 403, 404 and 410 always stop."),
    click.option("--dead-letter-path", envvar=env("DEAD_LETTER_PATH"), metavar="PATH",
                 help="JSON-lines file for --on-reject dead-letter (see 'wal2http replay')."),
    click.option("--max-event-bytes", type=click.IntRange(1024, 64 << 20), envvar=env("MAX_EVENT_BYTES"),
                 default=1_048_576, metavar="BYTES",
                 help="Largest event sent; a larger one is refused and handled by --on-reject."),
    breaker_options,
    options(
        "Database",
        click.option("--reconnect-max-wait", type=click.FloatRange(0.1, 3600), envvar=env("RECONNECT_MAX_WAIT"),
                     default=30.0, metavar="SECONDS", help="Longest pause between reconnection attempts."),
        click.option("--replication-timeout", type=click.FloatRange(1, 3600), envvar=env("REPLICATION_TIMEOUT"),
                     default=30.0, metavar="SECONDS",
                     help="Silence from PostgreSQL after which it is asked to answer; no answer means reconnect."),
    ),
    click.option("--shutdown-timeout", type=click.FloatRange(0, 3600), envvar=env("SHUTDOWN_TIMEOUT"),
                 default=30.0, metavar="SECONDS",
                 help="How long a stop may wait to finish the open transaction."),
    log_options,
    observability_options,
)



def unchecked_config(o: dict[str, Any]) -> Config:
    """The configuration the options describe, not validated yet; reading a secret may raise ConfigError."""
    return Config(
        source=source_config(o),
        sink=SinkConfig(kind=o.get("sink", "stdout"), http=_http_config(o), file_path=o.get("file_path"),
                        hook0=_hook0_config(o) if o.get("sink") == "hook0" else None),
        batch=BatchConfig(o.get("batch_size", 1), o.get("batch_bytes", 1_048_576),
                          o.get("batch_wait_ms", 100)),
        delivery=DeliveryConfig(
            on_reject=o.get("on_reject", "halt"),
            dead_letter_path=o.get("dead_letter_path"),
            max_event_bytes=o.get("max_event_bytes", 1_048_576),
            breaker_failures=o.get("breaker_failures", 5),
            breaker_cooldown_s=o.get("breaker_cooldown", 10.0),
            shutdown_timeout_s=o.get("shutdown_timeout", 30.0),
        ),
        log=LogConfig(format=o.get("log_format", "text"), level=o.get("log_level", "info").upper(),
                      file=o.get("log_file"), max_bytes=o.get("log_max_bytes", 104_857_600),
                      backups=o.get("log_backups", 5), progress_s=o.get("progress_seconds", 60.0)),
        metrics=_metrics_config(o),
        notify=_notify_config(o),
    )


def build_config(o: dict[str, Any], database: bool = True, *, validated: bool = True) -> Config:
    """The configuration, validated unless ``validated`` is False (check-config lists the problems
    itself); a problem ends the command with its exit code."""
    try:
        config = unchecked_config(o)
        return validate(config, database=database) if validated else config
    except Wal2HttpError as e:
        fail(str(e), e.exit_status)
    except Exception as e:
        # Logging (and its secret filter) is not set up yet: the message could hold a secret.
        fail(f"unexpected error while reading the configuration ({type(e).__name__})", ExitStatus.ERROR)


def source_config(o: dict[str, Any]) -> SourceConfig:
    """The database settings of any command using ``source_options``; secrets from env or files."""
    from_flag = click.get_current_context().get_parameter_source("dsn") is ParameterSource.COMMANDLINE
    return SourceConfig(
        dsn=load_dsn(o.get("dsn") if from_flag else None, o.get("dsn_file"), os.environ),
        slot=o.get("slot", "wal2http"),
        publication=o.get("publication", "wal2http"),
        create_slot=o.get("create_slot", False),
        messages=o.get("messages", False),
        reconnect_max_wait_s=o.get("reconnect_max_wait", 30.0),
        replication_timeout_s=o.get("replication_timeout", 30.0),
        require_tls=o.get("require_tls", False),
    )


def _http_config(o: dict[str, Any]) -> HttpConfig | None:
    if not o.get("http_url"):
        return None
    return HttpConfig(
        url=o["http_url"],
        read_timeout_s=o["http_timeout"],
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
        http=HttpConfig(url=o.get("hook0_api_url") or "", read_timeout_s=o.get("http_timeout", 15.0),
                        ca_file=o.get("ca_file"), client_cert=o.get("client_cert"), client_key=o.get("client_key")),
        application_id=(o.get("hook0_application_id") or "").strip(),
        token=token,
        mode=o.get("hook0_mode", "outbox"),
        outbox_table=o.get("hook0_outbox_table", "public.hook0_outbox"),
        message_prefix=o.get("hook0_message_prefix", "hook0"),
        service=o.get("hook0_service") or None,
        labels=tuple(labels),
        ensure_event_types=o.get("hook0_ensure_event_types", False),
    )


def _metrics_config(o: dict[str, Any]) -> MetricsConfig:
    return MetricsConfig(
        address=parse_listen_address(o["metrics_addr"]) if o.get("metrics_addr") else None,
        token=ADMIN_TOKEN.load(o.get("admin_token_file"), os.environ),
        health_stall_s=o.get("health_stall_seconds", 120.0),
        slot_poll_s=o.get("slot_poll_seconds", 15.0),
        table_labels=o.get("metrics_table_labels", False),
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
        starttls=o.get("smtp_starttls", True),
        notify_after_s=o.get("notify_after", 300.0),
        interval_s=o.get("notify_interval", 900.0),
    )
