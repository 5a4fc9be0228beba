"""``wal2http backfill``, ``backfill status`` and ``backfill cancel``: requests the streaming run works."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from wal2http.backfill import queue
from wal2http.cli.app import (
    CONTEXT_SETTINGS,
    SectionedCommand,
    Wal2httpGroup,
    emit,
    env,
    execute,
    main,
)
from wal2http.cli.options import build_config, source_options
from wal2http.errors import ExitStatus
from wal2http.pg.backfill_model import State, Task

WAIT_POLL_S = 1.0
PROGRESS_EVERY_S = 10.0  # --wait without a terminal: a progress line per table this often


class BackfillGroup(Wal2httpGroup):
    """``backfill`` requests a backfill itself; ``backfill status|cancel`` are its subcommands."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        SectionedCommand.format_options(self, ctx, formatter)  # type: ignore[arg-type]
        self.format_commands(ctx, formatter)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, "[OPTIONS] | status [OPTIONS] | cancel [OPTIONS] ID")


@main.group("backfill", cls=BackfillGroup, invoke_without_command=True, context_settings=CONTEXT_SETTINGS,
            short_help="Send the current rows of tables as 'read' events.")
@source_options
@click.option("--table", "tables", multiple=True, envvar=env("BACKFILL_TABLE"), metavar="SCHEMA.TABLE",
              help="A published table whose current rows to send; repeatable. Names are taken as written "
                   "(case kept); quote a part holding a dot: '\"eu.west\".orders'.")
@click.option("--all-tables", is_flag=True, help="Every table the publication publishes.")
@click.option("--where", metavar="CONDITION", help="Send only the rows meeting this SQL condition.")
@click.option("--wait", is_flag=True, help="Follow the request to its end; exit 0 when done, 1 when it "
                                           "failed or was cancelled.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def backfill(ctx: click.Context, /, tables: tuple[str, ...], all_tables: bool, where: str | None, wait: bool,
             as_json: bool, **options: Any) -> None:
    """Send the current rows of tables as 'read' events, in order with the live stream.

    Queues a request in the database and returns its id; the 'run' streaming from --slot
    reads the tables in key-ordered chunks between watermarks, without locking or pausing
    anything. Refused (exit 2, nothing queued) when a table is not published, has no
    primary key or replica identity index, or --where cannot be planned.

    \b
    Examples:
      wal2http backfill --table public.orders --wait
      wal2http backfill --all-tables
      wal2http backfill status
      wal2http backfill cancel 12
    """
    if ctx.invoked_subcommand is not None:
        return
    config = build_config(options)

    def action() -> None:
        requested = queue.request(config.source, tables, all_tables, where)
        for text in requested.warnings:
            click.echo(f"wal2http: warning: {text}", err=True)
        emit(as_json, requested.as_json(), requested.lines())
        if wait:
            sys.exit(_wait(config.source, requested.request, as_json))

    execute(config, action, as_log=False)


def _wait(source: Any, request: int, quiet: bool) -> int:
    """Follow a request until every table finished: a progress bar on a terminal, else a line per table
    when it finishes, and progress lines on standard error every PROGRESS_EVERY_S (cron, CI, a pipe)."""
    reported: set[int] = set()
    bar: Any = None
    terminal = sys.stderr.isatty()
    last_report, rows_then = time.monotonic(), dict[int, int]()
    try:
        while True:
            found = queue.tasks(source, request)
            now = time.monotonic()
            if not terminal and now - last_report >= PROGRESS_EVERY_S:
                for task in found:
                    if not task.state.finished:
                        click.echo(_progress(task, task.rows_sent - rows_then.get(task.id, 0), now - last_report),
                                   err=True)
                last_report, rows_then = now, {t.id: t.rows_sent for t in found}
            if terminal and not quiet:
                total = sum(t.rows_estimated or 0 for t in found) or 1
                if bar is None:
                    bar = click.progressbar(length=total, label=f"backfill {request}", file=sys.stderr)
                    bar.__enter__()
                bar.update(sum(t.rows_sent for t in found) - bar.pos)
            for task in found:
                if task.state.finished and task.id not in reported:
                    reported.add(task.id)
                    if not quiet:
                        click.echo(_line(task), err=bar is not None)
            if all(t.state.finished for t in found):
                return 0 if all(t.state is State.DONE for t in found) else int(ExitStatus.ERROR)
            time.sleep(WAIT_POLL_S)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


def _progress(task: Task, rows: int, seconds: float) -> str:
    """``public.orders: running, 120000 of ~1000000 rows (12000 rows/s), about 73 s left``."""
    if task.state is State.QUEUED:
        return f"{task.name}: queued, waiting for the tables before it"
    rate = rows / seconds if seconds > 0 else 0.0
    if task.rows_estimated is None:
        return (f"{task.name}: {task.state.value}, {task.rows_sent} rows sent ({rate:.0f} rows/s), "
                "total unknown (the table has no statistics yet: ANALYZE it for an estimate)")
    remaining = max(0, task.rows_estimated - task.rows_sent)
    left = f"about {remaining / rate:.0f} s left" if rate > 0 else "time left unknown (no rows sent lately)"
    return (f"{task.name}: {task.state.value}, {task.rows_sent} of ~{task.rows_estimated} rows "
            f"({rate:.0f} rows/s), {left}")


def _line(task: Task) -> str:
    estimate = "?" if task.rows_estimated is None else str(task.rows_estimated)
    reason = f": {task.reason}" if task.reason and task.state is not State.DONE else ""
    return f"{task.name}: {task.state.value}, {task.rows_sent} rows sent (estimated {estimate}){reason}"


@backfill.command("status", context_settings=CONTEXT_SETTINGS, short_help="List backfill requests.")
@source_options
@click.option("--json", "as_json", is_flag=True, help="Print the requests as JSON.")
def status(as_json: bool, **options: Any) -> None:
    """List backfill requests of the slot: id, table, state, rows sent and estimated, times.

    The ID is the request's, as 'backfill' printed it and 'backfill cancel' takes it.

    \b
    Example:
      wal2http backfill status --json
    """
    config = build_config(options)

    def action() -> None:
        found = queue.tasks(config.source)
        # One id for the operator: the request's, which 'backfill' printed and 'backfill cancel' takes.
        lines = [f"{'ID':>6} {'TABLE':<30} {'STATE':<10} {'SENT':>10} {'ESTIMATED':>10} "
                 f"{'STARTED':<20} FINISHED"]
        for t in found:
            lines.append(f"{t.request:>6} {t.name:<30} {t.state.value:<10} {t.rows_sent:>10} "
                         f"{'?' if t.rows_estimated is None else t.rows_estimated:>10} "
                         f"{_time(t.started_at):<20} {_time(t.finished_at)}"
                         + (f"  ({t.reason})" if t.reason and t.state in (State.FAILED, State.RUNNING) else ""))
        if not found:
            lines = [f"no backfill requests for slot {config.source.slot}"]
        emit(as_json, {"slot": config.source.slot, "requests": [t.as_json() for t in found]}, lines)

    execute(config, action, as_log=False)


def _time(value: Any) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


@backfill.command("cancel", context_settings=CONTEXT_SETTINGS, short_help="Cancel a backfill request.")
@source_options
@click.argument("request_id", metavar="ID", type=int)
@click.option("--table", "tables", multiple=True, metavar="SCHEMA.TABLE",
              help="Cancel only this table of the request; repeatable.")
def cancel(request_id: int, tables: tuple[str, ...], **options: Any) -> None:
    """Cancel a backfill request (the ID 'backfill status' shows), or some of its tables.

    Its tables not yet finished stop after the current chunk.

    \b
    Examples:
      wal2http backfill cancel 12
      wal2http backfill cancel 12 --table public.orders
    """
    config = build_config(options)

    def action() -> None:
        cancelled = queue.cancel(config.source, request_id, tables)
        if not cancelled:
            what = f"{', '.join(tables)} of backfill request {request_id}" if tables else \
                f"backfill request {request_id}"
            click.echo(f"{what} had already finished")
        for task in cancelled:
            click.echo(f"{task.name}: cancelled after {task.rows_sent} rows")

    execute(config, action, as_log=False)
