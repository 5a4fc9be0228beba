"""The wal2http CLI run inside the test process (click's test runner), for what ends before any connection.

Option and configuration checks exit 2 before wal2http connects anywhere: running them in-process costs
microseconds instead of an interpreter start. What needs a real process (signals, a connection, the
installed entry point) goes through tests.support.process instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from click.testing import CliRunner

from tests.support.process import Result
from wal2http.cli import main

__all__ = ["UNREACHABLE_DSN", "invoke"]

# A DSN no check ever connects to: configuration is validated before any connection is opened.
UNREACHABLE_DSN = "host=127.0.0.1 port=1 dbname=app user=app"


def invoke(*args: str, env: Mapping[str, str] | None = None) -> Result:
    """Run ``wal2http ARGS`` in this process with only ``env`` of the WAL2HTTP_* variables set (the
    subprocess wrapper passes the same), and return its exit code, stdout and stderr. An exception that
    escapes the command fails the test with its traceback."""
    inherited: dict[str, str | None] = {name: None for name in os.environ if name.startswith("WAL2HTTP_")}
    result = CliRunner().invoke(main, list(args), env={**inherited, **(env or {})}, catch_exceptions=False,
                                prog_name="wal2http")
    return Result(result.exit_code, result.stdout, result.stderr)
