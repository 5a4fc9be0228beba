"""``wal2http routes test``: try a routes file on recorded events, sending nothing."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from wal2http.cli.app import CONTEXT_SETTINGS, fail, main
from wal2http.config.routes_file import load_routes
from wal2http.config.sections import HttpConfig
from wal2http.delivery.deadletter import read_lines
from wal2http.errors import Wal2HttpError
from wal2http.ops.routes_test import plan


@main.group(context_settings=CONTEXT_SETTINGS)
def routes() -> None:
    """Check a --routes file before a run uses it.

    \b
    Example:
      wal2http routes test --routes routes.toml captured.jsonl
    """


@routes.command("test", context_settings=CONTEXT_SETTINGS)
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--routes", "routes_file", required=True, metavar="FILE", type=click.Path(dir_okay=False),
              help="The TOML routes file to try.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")
def test(path: str, routes_file: str, as_json: bool, **_options: Any) -> None:
    """Show what each route would send for the events of PATH.

    PATH is a file sink capture or a dead-letter file. Nothing is sent and nothing connects;
    secret header values are not shown. Exit code 0, or 2 when the routes file or PATH is invalid.

    \b
    Example:
      wal2http routes test --routes routes.toml captured.jsonl
    """
    try:
        loaded = load_routes(routes_file, HttpConfig(url=""), os.environ)
        plans = plan(loaded, (line.event for line in read_lines(path)))
    except Wal2HttpError as e:
        fail(str(e), e.exit_status)
    for p in plans:
        if as_json:
            click.echo(json.dumps(p.as_json()))
        else:
            click.echo("\n".join(p.lines()))
