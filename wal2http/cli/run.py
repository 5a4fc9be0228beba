"""``wal2http run`` and ``wal2http replay``."""

from __future__ import annotations

import sys
from typing import Any

import click

from wal2http.backfill.queue import backfill_refusal
from wal2http.cli.app import CONTEXT_SETTINGS, execute, fail, main
from wal2http.cli.options import (
    breaker_options,
    build_config,
    log_options,
    run_options,
    sink_options,
    source_options,
)
from wal2http.config.settings import Config
from wal2http.errors import ExitStatus
from wal2http.observe import log as log_setup


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
    config = build_config(options)
    refusal = backfill_refusal(config)
    if config.backfill.initial and refusal:
        fail(f"--backfill: {refusal}", ExitStatus.USAGE)
    run_id = log_setup.new_run_id()
    execute(config, lambda: _run_pipeline(config, run_id), run_id=run_id)


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
    config = build_config(options, database=False)
    execute(config, lambda: _replay(config, path, dry_run, keep))


def _replay(config: Config, path: str, dry_run: bool, keep: bool) -> None:
    from wal2http.ops.replay import replay as replay_file

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
    from wal2http.ops.start import run as run_pipeline

    run_pipeline(config, run_id)
