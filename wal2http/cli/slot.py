"""``wal2http slot create|drop|status|peek``."""

from __future__ import annotations

import sys
from typing import Any

import click

from wal2http.backfill import queue as backfill_queue
from wal2http.cli.app import (
    CONTEXT_SETTINGS,
    SectionedCommand,
    emit,
    env,
    execute,
    logger,
    main,
    options,
)
from wal2http.cli.options import (
    build_config,
    failover_option,
    messages_option,
    source_options,
    unchecked_config,
)
from wal2http.config.hook0 import Hook0Config, outbox_schema_table
from wal2http.config.rules import validate
from wal2http.delivery.deadletter import parked_in
from wal2http.delivery.parking import rows_text
from wal2http.errors import ConfigError, Wal2HttpError
from wal2http.observe import log as log_setup
from wal2http.ops import slot as slot_ops
from wal2http.ops import slot_report
from wal2http.sizes import parse_size

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
@failover_option
@click.option("--publish", envvar=env("PUBLISH"), metavar="OPS", show_default=False,
              help="Operations the created publication publishes [default: insert,update,delete,truncate; "
                   "insert for --hook0-outbox alone].")
@options(
    "Hook0",
    click.option("--hook0-outbox", is_flag=True,
                 help="Also create the Hook0 outbox table and publish it, adding it to an existing "
                      "publication if needed."),
    click.option("--hook0-outbox-table", envvar=env("HOOK0_OUTBOX_TABLE"), default=Hook0Config.outbox_table,
                 metavar="[SCHEMA.]TABLE", help="The outbox table of --hook0-outbox."),
)
@click.option("--if-not-exists", is_flag=True,
              help="An existing slot (or outbox table) is a success, not an error.")
@click.option("--backfill", is_flag=True,
              help="Also queue a backfill of every published table with a key (the initial snapshot), "
                   "sent by the first 'run' along with the changes; checked before the slot is created. "
                   "With --if-not-exists and an existing slot: queued unless one is unfinished.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def slot_create(tables: tuple[str, ...], schemas: tuple[str, ...], all_tables: bool, publish: str | None,
                hook0_outbox: bool, hook0_outbox_table: str, if_not_exists: bool, backfill: bool, as_json: bool,
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
    config = build_config(options)

    def action() -> None:
        outbox = outbox_schema_table(hook0_outbox_table) if hook0_outbox else None
        only_outbox = outbox is not None and not (tables or schemas or all_tables)
        operations = slot_ops.parse_operations(publish, outbox_only=only_outbox)
        request = slot_ops.PublicationRequest(tables, schemas, all_tables, operations, outbox)
        created = slot_ops.create(config.source, request, if_not_exists, backfill)
        for text in created.warnings:
            click.echo(f"wal2http: warning: {text}", err=True)
        emit(as_json, created.as_json(), created.lines())

    execute(config, action, as_log=False)


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
    config = build_config(options)

    def confirm(question: str) -> None:
        if yes:
            return
        if not sys.stdin.isatty():
            raise ConfigError("not dropping without confirmation: standard input is not a terminal; "
                              "pass --yes")
        click.confirm(question, abort=True, err=True)

    def action() -> None:
        dropped = slot_ops.drop(config.source, force=force, if_exists=if_exists,
                                 with_publication=with_publication, confirm=confirm)
        for line in dropped.lines():
            click.echo(line)
        if dropped.problem is not None:  # after the lines of what was done: the last line says what was not
            raise dropped.problem

    execute(config, action, as_log=False)


class MonitoringCommand(SectionedCommand):
    """A command following the monitoring-plugin convention: a usage error is UNKNOWN (3)."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as e:
            click.echo(slot_report.unknown(e.format_message()))
            raise UnknownUsage(e.format_message(), e.ctx) from None


class UnknownUsage(click.UsageError):
    exit_code = int(slot_report.Health.UNKNOWN)


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
@click.option("--dead-letter-path", envvar=env("DEAD_LETTER_PATH"), metavar="PATH",
              help="Also say how many events run's dead-letter file holds and how many rows they park.")
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
        config = unchecked_config(options)  # a --dsn-file that cannot be read is UNKNOWN too
        log_setup.setup("WARNING", config.log.format, config.secrets())
        logging_ready = True
        validate(config)
        thresholds = slot_report.Thresholds(warn_lag, crit_lag, warn_inactive)
        report = slot_ops.status(config.source, thresholds, all_slots)
        backfills = [] if all_slots else backfill_queue.unfinished(config.source)
        dead_letters = config.delivery.dead_letter_path
        parked = parked_in(dead_letters) if dead_letters else None
    except Exception as e:  # whatever it is, a monitoring check must answer UNKNOWN, not crash
        if isinstance(e, Wal2HttpError):
            reason = str(e)
        else:
            # Its text may quote a secret: only the log record, scrubbed by the secret filter, shows it.
            reason = f"unexpected error: {type(e).__name__}"
            if logging_ready:
                logger.warning("%s: %s", reason, e)
        line = slot_report.unknown(reason)
        emit(as_json, {"status": "UNKNOWN", "exit_code": int(slot_report.Health.UNKNOWN), "summary": line}, [line])
        sys.exit(int(slot_report.Health.UNKNOWN))
    extra: dict[str, Any] = {}
    lines = [backfill_queue.describe(t) for t in backfills]
    if parked is not None:
        extra["dead_letters"] = {"path": dead_letters, "events": parked.lines, "parked_rows": len(parked)}
        lines.append(f"dead letters: {parked.lines} events in {dead_letters}, {rows_text(len(parked))} parked"
                     + (" (replay the file to unpark them: wal2http replay)" if parked else ""))
    emit(as_json, {**slot_report.as_json(report), "backfills": [t.as_json() for t in backfills], **extra},
         slot_report.render_text(report) + lines)
    sys.exit(int(report.health))


@slot.command("peek", context_settings=CONTEXT_SETTINGS, short_help="Show the pending changes; consume none.")
@source_options
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, metavar="N", help="Show at most N events.")
@options("Database", messages_option)
@click.option("--json", "as_json", is_flag=True, help="Print the events as JSON, exactly as 'run' sends them.")
def slot_peek(limit: int, as_json: bool, **options: Any) -> None:
    """Show the changes the slot holds, as the events 'run' would send; consume nothing.

    Decodes what the slot holds after its confirmed position with the same decoder as
    'run' (pg_logical_slot_peek_binary_changes): the slot does not move, and the next
    run still sends every event shown. Only while nothing streams from the slot.
    Backfill rows are not in the slot: 'run' reads them from the tables.

    \b
    Example:
      wal2http slot peek --limit 20
    """
    config = build_config(options)

    def action() -> None:
        from wal2http.ops.peek import peek

        peeked = peek(config.source, limit)
        emit(as_json, peeked.as_json(), peeked.lines())

    execute(config, action, as_log=False)
