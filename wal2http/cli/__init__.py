"""The command line: the only package that imports click, prints to the terminal or exits.

``app`` holds the group and maps errors to exit codes; ``options`` turns options into a
validated ``Config``; ``run``, ``slot`` and ``check`` define the commands (importing them
registers them).
"""

from wal2http.cli import backfill, check, routes, run, slot  # noqa: F401 - registers the commands on main
from wal2http.cli.app import main

__all__ = ["main"]
