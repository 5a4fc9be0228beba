"""The command line: builds the configuration, runs commands, maps errors to exit codes.

The only module that imports click, prints to the terminal or exits.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click
from click.core import ParameterSource

from wal2http import __version__, checklist, checks, lifecycle, slots
from wal2http import log as log_setup
from wal2http.config import (
    ADMIN_TOKEN,
    DSN,
    HOOK0_API_TOKEN,
    HTTP_BEARER_TOKEN,
    SIGNING_SECRET,
    SMTP_PASSWORD,
    BatchConfig,
    Config,
    DeliveryConfig,
    Hook0Config,
    HttpConfig,
    LogConfig,
    MetricsConfig,
    NotifyConfig,
    Secret,
    SecretSource,
    SinkConfig,
    SourceConfig,
    load_dsn,
    outbox_schema_table,
    parse_listen_address,
    split_signing_secrets,
    validate,
)
from wal2http.errors import ConfigError, ExitStatus, Wal2HttpError
from wal2http.headers import parse_headers
from wal2http.sizes import parse_size

logger = logging.getLogger("wal2http")

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 80, "show_default": True}


def env(name: str, *legacy: str) -> list[str]:
    """Environment variables for an option: ``WAL2HTTP_<NAME>`` first, then the earlier tool's."""
    return [f"WAL2HTTP_{name}", *legacy]


def secret_file_option(source: SecretSource, help: str) -> Callable[..., Any]:
    """``--x-file PATH`` (or ``WAL2HTTP_X_FILE``) for a secret that is never a flag itself."""
    return click.option(source.file_option, envvar=source.file_env, metavar="PATH",
                        help=f"{help} Or set {' or '.join(source.env)}.")


class _Lines(click.ParamType):  # type: ignore[type-arg]
    """A repeatable option whose environment variable holds one value per line."""

    name = "text"
    envvar_list_splitter = "\n"


# The --help heading of each option, by parameter name: set by the options() group declaring it.
HEADINGS: dict[str, str] = {}


def options(heading: str, *decorators: Callable[..., Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Apply a group of click options in the order they are listed; --help shows them under ``heading``.

    A group nested inside another keeps its own heading.
    """

    def apply(f: Callable[..., Any]) -> Callable[..., Any]:
        before = {id(p) for p in getattr(f, "__click_params__", ())}
        for decorator in reversed(decorators):
            f = decorator(f)
        for param in getattr(f, "__click_params__", ()):
            if id(param) not in before and param.name:
                HEADINGS.setdefault(param.name, heading)
        return f

    return apply


class SectionedCommand(click.Command):
    """A command whose --help lists its options under headings (Database, Sink, Delivery, ...)."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {"Options": []}  # the command's own come first
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
            if record is not None:
                sections.setdefault(HEADINGS.get(param.name or "", "Options"), []).append(record)
        # One option column for every section: pad the first name to the widest (at most 30).
        width = min(30, max((len(name) for rows in sections.values() for name, _ in rows), default=0))
        for heading, records in sections.items():
            if not records:
                continue
            records[0] = (records[0][0].ljust(width), records[0][1])
            with formatter.section(heading):
                formatter.write_dl(records)


class Wal2httpGroup(click.Group):
    command_class = SectionedCommand
    group_class = type  # subgroups are Wal2httpGroups too


@click.group(cls=Wal2httpGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="wal2http")
def main() -> None:
    """Stream PostgreSQL row changes to HTTP endpoints, in commit order, at least once.

    \b
    Example:
      export WAL2HTTP_DSN=postgresql://wal2http@db.example.com/app
      wal2http check-config && wal2http run

    'wal2http COMMAND --help' shows a command's options; 'man wal2http' has it all.
    """


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
    click.option("--header", "headers", multiple=True, type=_Lines(), envvar=env("HEADER"),
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


@main.command(context_settings=CONTEXT_SETTINGS)
@source_options
@run_options
def run(**options: Any) -> None:
    """Stream the publication's changes to the sink until stopped.

    Changes are delivered in commit order; a WAL position is confirmed to PostgreSQL
    only after the sink accepted every change before it. Lost connections are retried
    for as long as it takes. SIGTERM or Ctrl-C stops at the next transaction boundary;
    a second one stops at once (exit 130).

    \b
    Example:
      WAL2HTTP_DSN=postgresql://wal2http@db/app \\
      wal2http run --sink http --http-url https://hooks.example.com/pg \\
          --batch-size 100
    """
    config = _build_config(options)
    run_id = log_setup.new_run_id()
    _execute(config, lambda: _run_pipeline(config, run_id), run_id=run_id)


@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("path", type=click.Path(dir_okay=False))
@sink_options
@breaker_options
@click.option("--dry-run", is_flag=True, help="Read and check every line, send nothing.")
@click.option("--keep", is_flag=True, help="Leave a dead-letter file untouched (lines are removed as "
                                           "they are delivered otherwise).")
@log_options
def replay(path: str, dry_run: bool, keep: bool, **options: Any) -> None:
    """Send the events of a dead-letter file again.

    Or of a 'file' sink capture. Events go in file order with their original ids, so
    receivers can drop duplicates. Delivered lines leave a dead-letter file one batch at
    a time (atomically: a crash repeats at most one batch); a capture file is never
    changed. Exit 0 only when every line was delivered; a refused event stops the
    replay with exit 4.

    \b
    Example:
      wal2http replay --sink http --http-url https://hooks.example.com/pg \\
          dead.jsonl
    """
    config = _build_config(options, database=False)
    _execute(config, lambda: _replay(config, path, dry_run, keep))


def _replay(config: Config, path: str, dry_run: bool, keep: bool) -> None:
    from wal2http.replay import replay as replay_file

    counted = replay_file(config, path, dry_run=True)
    kind = "dead-letter file" if counted.dead_letter_file else "capture"
    if dry_run:
        click.echo(f"{counted.total} events in {path} ({kind}) would be replayed")
        return
    if sys.stderr.isatty() and counted.total:
        with click.progressbar(length=counted.total, label="replaying", file=sys.stderr) as bar:
            result = replay_file(config, path, keep=keep, on_progress=bar.update)
    else:
        result = replay_file(config, path, keep=keep)
    click.echo(f"replayed {result.delivered} of {result.total} events from {path} ({kind})")


def _run_pipeline(config: Config, run_id: str) -> None:
    from wal2http.pipeline import run as run_pipeline

    run_pipeline(config, run_id)


def _config(o: dict[str, Any]) -> Config:
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


def _build_config(o: dict[str, Any], database: bool = True, *, validated: bool = True) -> Config:
    """The configuration, validated unless ``validated`` is False (check-config lists the problems
    itself); a problem ends the command with its exit code."""
    try:
        config = _config(o)
        return validate(config, database=database) if validated else config
    except Wal2HttpError as e:
        _fail(str(e), e.exit_status)
    except Exception as e:
        # Logging (and its secret filter) is not set up yet: the message could hold a secret.
        _fail(f"unexpected error while reading the configuration ({type(e).__name__})", ExitStatus.ERROR)


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


def _execute(config: Config, action: Callable[[], None], *, as_log: bool = True, run_id: str = "") -> None:
    """Run ``action`` with logging set up; turn every failure into a message and an exit code.

    ``run`` reports failures as log records; the one-shot commands (``as_log=False``) as one
    ``wal2http: error:`` line, and log only warnings. Every record carries ``slot`` and ``run_id``.
    """
    level = config.log.level if as_log else "WARNING"
    try:
        log_setup.setup(level, config.log.format, config.secrets(), file=config.log.file,
                        max_bytes=config.log.max_bytes, backups=config.log.backups,
                        context={"slot": config.source.slot, "run_id": run_id or log_setup.new_run_id()})
    except Wal2HttpError as e:
        _fail(str(e), e.exit_status)
    try:
        action()
    except (click.ClickException, click.Abort):
        raise
    except Wal2HttpError as e:
        if not as_log:
            _fail(str(e), e.exit_status)
        logger.error("%s", e)
        sys.exit(int(e.exit_status))
    except Exception as e:
        logger.error("unexpected error: %s: %s (run with --log-level debug for details)", type(e).__name__, e)
        logger.debug("traceback", exc_info=True)
        sys.exit(int(ExitStatus.ERROR))


def _fail(message: str, status: ExitStatus | int) -> NoReturn:
    """Report a problem found before logging is set up (or by a one-shot command), and exit."""
    click.echo(f"wal2http: error: {message}", err=True)
    sys.exit(int(status))


def _emit(as_json: bool, data: Any, lines: list[str]) -> None:
    """A command's result on standard output: ``data`` as JSON, or ``lines`` as text."""
    click.echo(json.dumps(data, indent=2) if as_json else "\n".join(lines))


# -- check-config -----------------------------------------------------------------------------------


@main.command("check-config", context_settings=CONTEXT_SETTINGS)
@source_options
@run_options
@click.option("--offline", is_flag=True, help="Check the options only; connect to nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the checklist as JSON.")
def check_config(offline: bool, as_json: bool, **options: Any) -> None:
    """Check what 'run' would meet, without streaming.

    Takes every option of 'run'. Prints one line per check (ok, warning or FAILED with
    the fix). Creates nothing and sends no event. Exit code 0 when nothing failed, 2 for
    a configuration error, 3 when the database side fails.

    \b
    Example (a CI smoke check):
      wal2http check-config --sink http --http-url https://hooks.example.com/pg
    """
    config = _build_config(options, validated=False)  # the checklist lists every invalid setting

    def action() -> None:
        found = checks.check_config(config, offline)
        status = int(checklist.exit_status(found))
        _emit(as_json, {"exit_code": status, "checks": [c.as_dict() for c in found]}, checklist.render_text(found))
        sys.exit(status)

    _execute(config, action, as_log=False)


# -- slot ------------------------------------------------------------------------------------------


@main.group(context_settings=CONTEXT_SETTINGS)
def slot() -> None:
    """Create, drop and monitor the replication slot.

    \b
    Examples:
      wal2http slot create --table public.orders --table public.customers
      wal2http slot status --warn-lag 512MB --crit-lag 2GB
      wal2http slot drop --with-publication --yes
    """


@slot.command("create", context_settings=CONTEXT_SETTINGS)
@source_options
@click.option("--table", "tables", multiple=True, envvar=env("TABLE"), metavar="[SCHEMA.]TABLE",
              help="Publish this table when the publication is created; repeatable.")
@click.option("--schema", "schemas", multiple=True, envvar=env("SCHEMA"), metavar="SCHEMA",
              help="Publish every table of this schema (FOR TABLES IN SCHEMA); repeatable.")
@click.option("--all-tables", is_flag=True, envvar=env("ALL_TABLES"),
              help="Publish every table of the database (FOR ALL TABLES; needs a superuser).")
@click.option("--publish", envvar=env("PUBLISH"), metavar="OPS", show_default=False,
              help="Operations the created publication publishes [default: insert,update,delete,truncate; "
                   "insert for --hook0-outbox alone].")
@options(
    "Hook0",
    click.option("--hook0-outbox", is_flag=True,
                 help="Also create the Hook0 outbox table and publish it, adding it to an existing "
                      "publication if needed."),
    click.option("--hook0-outbox-table", envvar=env("HOOK0_OUTBOX_TABLE"), default="public.hook0_outbox",
                 metavar="[SCHEMA.]TABLE", help="The outbox table of --hook0-outbox."),
)
@click.option("--if-not-exists", is_flag=True,
              help="An existing slot (or outbox table) is a success, not an error.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def slot_create(tables: tuple[str, ...], schemas: tuple[str, ...], all_tables: bool, publish: str | None,
                hook0_outbox: bool, hook0_outbox_table: str, if_not_exists: bool, as_json: bool,
                **options: Any) -> None:
    """Create the pgoutput slot (and its publication when missing).

    The publication is created only from --table, --schema, --all-tables or
    --hook0-outbox, and only when it does not exist; an existing one is never changed,
    except that --hook0-outbox adds the outbox table to it. Warns about published
    tables without a replica identity.

    \b
    Examples:
      wal2http slot create --table public.orders --table public.customers
      wal2http slot create --hook0-outbox
    """
    config = _build_config(options)

    def action() -> None:
        outbox = outbox_schema_table(hook0_outbox_table) if hook0_outbox else None
        only_outbox = outbox is not None and not (tables or schemas or all_tables)
        operations = lifecycle.parse_operations(publish, outbox_only=only_outbox)
        request = lifecycle.PublicationRequest(tables, schemas, all_tables, operations, outbox)
        created = lifecycle.create(config.source, request, if_not_exists)
        for text in created.warnings:
            click.echo(f"wal2http: warning: {text}", err=True)
        _emit(as_json, created.as_json(), created.lines())

    _execute(config, action, as_log=False)


@slot.command("drop", context_settings=CONTEXT_SETTINGS)
@source_options
@click.option("--force", is_flag=True, help="Terminate the slot's consumer, then drop the slot.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (needed without a terminal).")
@click.option("--if-exists", is_flag=True, help="A missing slot is a success, not an error.")
@click.option("--with-publication", is_flag=True, help="Also drop the publication.")
def slot_drop(force: bool, yes: bool, if_exists: bool, with_publication: bool, **options: Any) -> None:
    """Drop the replication slot; what it has not delivered is lost.

    An active slot is refused, naming its consumer, unless --force terminates that
    consumer. Asks for confirmation on a terminal.

    \b
    Example:
      wal2http slot drop --with-publication --yes
    """
    config = _build_config(options)

    def confirm(question: str) -> None:
        if yes:
            return
        if not sys.stdin.isatty():
            raise ConfigError("not dropping without confirmation: standard input is not a terminal; "
                              "pass --yes")
        click.confirm(question, abort=True, err=True)

    def action() -> None:
        dropped = lifecycle.drop(config.source, force=force, if_exists=if_exists,
                                 with_publication=with_publication, confirm=confirm)
        click.echo("\n".join(dropped.lines()))

    _execute(config, action, as_log=False)


class MonitoringCommand(SectionedCommand):
    """A command following the monitoring-plugin convention: a usage error is UNKNOWN (3)."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as e:
            click.echo(slots.unknown(e.format_message()))
            raise UnknownUsage(e.format_message(), e.ctx) from None


class UnknownUsage(click.UsageError):
    exit_code = int(slots.Health.UNKNOWN)


def _size(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@slot.command("status", cls=MonitoringCommand, context_settings=CONTEXT_SETTINGS)
@source_options
@click.option("--all", "all_slots", is_flag=True, help="Every logical slot of the database, not only --slot.")
@click.option("--warn-lag", callback=_size, envvar=env("WARN_LAG"), metavar="SIZE",
              help="WARNING when unconfirmed WAL reaches this size (512MB, 2GB).")
@click.option("--crit-lag", callback=_size, envvar=env("CRIT_LAG"), metavar="SIZE",
              help="CRITICAL when unconfirmed WAL reaches this size.")
@click.option("--warn-inactive", is_flag=True, envvar=env("WARN_INACTIVE"),
              help="WARNING when a slot has no consumer.")
@click.option("--json", "as_json", is_flag=True, help="Print raw numbers as JSON.")
def slot_status(all_slots: bool, warn_lag: int | None, crit_lag: int | None, warn_inactive: bool,
                as_json: bool, **options: Any) -> None:
    """Report the slot's activity, lag and WAL retention.

    For people and for monitoring: the first line is a Nagios/Icinga plugin summary
    with performance data. Exit code: 0 OK, 1 WARNING, 2 CRITICAL (a missing slot,
    wal_status unreserved or lost, lag past --crit-lag), 3 UNKNOWN (cannot connect).

    \b
    Example (cron):
      wal2http slot status --warn-lag 512MB --crit-lag 2GB --warn-inactive
    """
    logging_ready = False
    try:
        config = _config(options)  # a --dsn-file that cannot be read is UNKNOWN too
        log_setup.setup("WARNING", config.log.format, config.secrets())
        logging_ready = True
        validate(config)
        thresholds = slots.Thresholds(warn_lag, crit_lag, warn_inactive)
        report = lifecycle.status(config.source, thresholds, all_slots)
    except Exception as e:  # whatever it is, a monitoring check must answer UNKNOWN, not crash
        if isinstance(e, Wal2HttpError):
            reason = str(e)
        else:
            # Its text may quote a secret: only the log record, scrubbed by the secret filter, shows it.
            reason = f"unexpected error: {type(e).__name__}"
            if logging_ready:
                logger.warning("%s: %s", reason, e)
        line = slots.unknown(reason)
        _emit(as_json, {"status": "UNKNOWN", "exit_code": int(slots.Health.UNKNOWN), "summary": line}, [line])
        sys.exit(int(slots.Health.UNKNOWN))
    _emit(as_json, slots.as_json(report), slots.render_text(report))
    sys.exit(int(report.health))
