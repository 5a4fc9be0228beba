"""``wal2http run`` and ``wal2http replay``."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from wal2http.backfill.queue import backfill_refusal
from wal2http.cli.app import CONTEXT_SETTINGS, env, execute, fail, main, options
from wal2http.cli.options import (
    breaker_options,
    build_config,
    log_options,
    run_options,
    sink_options,
    source_options,
)
from wal2http.config.sections import SinkKind
from wal2http.config.settings import Config
from wal2http.errors import ExitStatus
from wal2http.lsn import parse_lsn
from wal2http.observe import log as log_setup


def _until(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    text = value.strip()
    if text.lower() == "now":
        return "now"
    try:
        parse_lsn(text)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither 'now' nor a WAL position like 16/B374D848") from None
    return text


@main.command(context_settings=CONTEXT_SETTINGS)
@source_options
@options("Database", click.option(
    "--until", callback=_until, envvar=env("UNTIL"), metavar="now|LSN",
    help="Stop by itself, exit 0: 'now' once everything committed before the start (and the backfills "
         "queued by then) is delivered and confirmed; an LSN once every transaction committed up to it is."))
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
    config = build_config(options)
    refusal = backfill_refusal(config)
    if config.backfill.initial and refusal:
        fail(f"--backfill: {refusal}", ExitStatus.USAGE, as_json=config.log.format == "json")
    if config.backfill.reselect_toast and refusal:
        fail(f"--reselect-toast: {refusal}", ExitStatus.USAGE, as_json=config.log.format == "json")
    run_id = log_setup.new_run_id()
    execute(config, lambda: _run_pipeline(config, run_id), run_id=run_id)


@main.command(context_settings=CONTEXT_SETTINGS)
@click.argument("path", type=click.Path(dir_okay=False))
@sink_options
@breaker_options
@click.option("--dry-run", is_flag=True, help="List every line (id, table, op, status, dead-lettered time, "
                                              "reason) after checking it; send nothing, change nothing.")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: list the lines as JSON lines.")
@click.option("--keep", is_flag=True, help="Leave a dead-letter file untouched even when a receiver accepted "
                                           "its events.")
@log_options
def replay(path: str, dry_run: bool, as_json: bool, keep: bool, **options: Any) -> None:
    """Send the events of a dead-letter file again.

    Or of a 'file' sink capture. Events go in file order with their original ids, so
    receivers can drop duplicates. Lines leave a dead-letter file only once an 'http' or
    'hook0' sink accepted them, one batch at a time (atomically: a crash repeats at most
    one batch); with the stdout or file sink, replay only prints or copies and removes
    nothing. A capture file is never changed. Exit 0 only when every line was delivered;
    a refused event stops the replay with exit 4.

    \b
    Examples:
      wal2http replay --dry-run dead.jsonl
      wal2http replay --sink http --http-url https://hooks.example.com/pg \\
          dead.jsonl
    """
    if as_json and not dry_run:
        raise click.UsageError("--json lists the lines of --dry-run; add --dry-run")
    config = build_config(options, database=False)
    execute(config, lambda: _list(path, as_json) if dry_run else _replay(config, path, keep))


def _list(path: str, as_json: bool) -> None:
    """``replay --dry-run``: each line, read-only."""
    from wal2http.ops.replay import listing

    lines = listing(path)
    if as_json:
        for line in lines:
            click.echo(json.dumps(line.as_json()))
        return
    rows = [("ID", "TABLE", "OP", "STATUS", "DEAD-LETTERED", "REASON")]
    rows += [(line.event.id, line.table or "-", line.event.op or "-", "-" if line.status is None else str(line.status),
              line.dead_lettered_at or "-", line.reason or "-") for line in lines]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[5])
    kind = "dead-letter file" if lines and all(x.dead_letter for x in lines) else "capture"
    click.echo(f"{len(lines)} events in {path} ({kind}) would be replayed")


def _replay(config: Config, path: str, keep: bool) -> None:
    from wal2http.ops.replay import listing, removes_lines
    from wal2http.ops.replay import replay as replay_file

    total = len(listing(path))
    if sys.stderr.isatty() and total:
        with click.progressbar(length=total, label="replaying", file=sys.stderr) as bar:
            result = replay_file(config, path, keep=keep, on_progress=bar.update)
    else:
        result = replay_file(config, path, keep=keep)
    kind = "dead-letter file" if result.dead_letter_file else "capture"
    summary = f"replayed {result.delivered} of {result.total} events from {path} ({kind})"
    if result.dead_letter_file and not result.removes:
        target = f"file {config.sink.file_path}" if config.sink.kind == SinkKind.FILE else str(config.sink.kind)
        why = ("--keep" if keep and removes_lines(config, False)
               else "lines leave it only once an http or hook0 sink accepted them")
        summary = (f"sent {result.delivered} of {result.total} events from {path} ({kind}) to {target}; "
                   f"the file is unchanged: {why}")
    # On stdout the events are the output: the summary goes beside them, to stderr.
    click.echo(summary, err=config.sink.kind == SinkKind.STDOUT)


def _run_pipeline(config: Config, run_id: str) -> None:
    from wal2http.ops.start import run as run_pipeline

    run_pipeline(config, run_id)
