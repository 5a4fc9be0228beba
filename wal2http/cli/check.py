"""``wal2http check-config``: the checklist of what ``run`` would meet."""

from __future__ import annotations

import sys
from typing import Any

import click

from wal2http import checklist
from wal2http.cli.app import CONTEXT_SETTINGS, emit, execute, main
from wal2http.cli.options import build_config, run_options, source_options
from wal2http.ops import check_config as checks


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
    config = build_config(options, validated=False)  # the checklist lists every invalid setting

    def action() -> None:
        found = checks.check_config(config, offline)
        status = int(checklist.exit_status(found))
        emit(as_json, {"exit_code": status, "checks": [c.as_dict() for c in found]}, checklist.render_text(found))
        sys.exit(status)

    execute(config, action, as_log=False)
