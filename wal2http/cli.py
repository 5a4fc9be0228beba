"""The command line: builds the configuration, runs commands, maps errors to exit codes.

The only module that imports click, prints to the terminal or exits.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from wal2http import __version__
from wal2http import log as log_setup
from wal2http.config import (
    BatchConfig,
    Config,
    HttpConfig,
    LogConfig,
    Secret,
    SinkConfig,
    SourceConfig,
    validate,
)
from wal2http.errors import ExitStatus, Wal2HttpError

logger = logging.getLogger("wal2http")

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 80, "show_default": True}


def env(name: str, *legacy: str) -> list[str]:
    """Environment variables for an option: ``WAL2HTTP_<NAME>`` first, then the earlier tool's."""
    return [f"WAL2HTTP_{name}", *legacy]


def source_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options naming the database, slot and publication, shared by every command."""
    for decorator in reversed([
        click.option("--dsn", envvar=env("DSN", "DATABASE_URL"), metavar="DSN",
                     help="PostgreSQL connection string (URL or key=value); prefer the environment "
                          "variable, which keeps a password out of the process list."),
        click.option("--slot", envvar=env("SLOT", "SLOT_NAME"), default="wal2http",
                     help="Logical replication slot (pgoutput)."),
        click.option("--publication", envvar=env("PUBLICATION", "PUB_NAME"), default="wal2http",
                     help="Publication whose changes are streamed."),
    ]):
        f = decorator(f)
    return f


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="wal2http")
def main() -> None:
    """Stream PostgreSQL row changes to HTTP endpoints, in commit order, at least once."""


@main.command(context_settings=CONTEXT_SETTINGS)
@source_options
@click.option("--create-slot", is_flag=True, envvar=env("CREATE_SLOT"),
              help="Create the slot when it does not exist (never a publication).")
@click.option("--messages", is_flag=True, envvar=env("MESSAGES"),
              help="Also deliver pg_logical_emit_message() messages as 'message' events.")
@click.option("--sink", type=click.Choice(["stdout", "file", "http"]), envvar=env("SINK", "EVENT_SINK"),
              default="stdout", help="Where events go.")
@click.option("--http-url", envvar=env("HTTP_URL", "HTTP_ENDPOINT_URL"), metavar="URL",
              help="Receiver URL for --sink http.")
@click.option("--http-timeout", type=click.FloatRange(0.1, 300), envvar=env("HTTP_TIMEOUT"), default=15.0,
              metavar="SECONDS", help="Read timeout of one request; keep it below wal_sender_timeout/2.")
@click.option("--file-path", envvar=env("FILE_PATH"), metavar="PATH",
              help="File that --sink file appends JSON lines to.")
@click.option("--batch-size", type=click.IntRange(1, 100_000), envvar=env("BATCH_SIZE"), default=1,
              help="Events per request at most; above 1 the body is a JSON array.")
@click.option("--batch-bytes", type=click.IntRange(1024), envvar=env("BATCH_BYTES"), default=1_048_576,
              help="Body bytes per request at most (a larger single event is sent alone).")
@click.option("--batch-wait-ms", type=click.IntRange(0, 60_000), envvar=env("BATCH_WAIT_MS"), default=100,
              help="Longest time an event waits for its batch to fill while changes keep coming.")
@click.option("--log-format", type=click.Choice(["text", "json"]), envvar=env("LOG_FORMAT"), default="text",
              help="Log record format on standard error.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              envvar=env("LOG_LEVEL"), default="info", help="Least severe level logged.")
def run(**options: Any) -> None:
    """Stream the publication's changes to the sink until stopped.

    Changes are delivered in commit order; a WAL position is confirmed to PostgreSQL
    only after the sink accepted every change before it. SIGTERM or Ctrl-C stops at the
    next transaction boundary.

    \b
    Example:
      WAL2HTTP_DSN=postgresql://wal2http@db/app \\
      wal2http run --sink http --http-url https://hooks.example.com/pg --batch-size 100
    """
    config = _build_config(options)
    _execute(config, lambda: _run_pipeline(config))


def _run_pipeline(config: Config) -> None:
    from wal2http.pipeline import run as run_pipeline

    run_pipeline(config)


def _build_config(o: dict[str, Any]) -> Config:
    http = HttpConfig(url=o["http_url"], read_timeout_s=o["http_timeout"]) if o.get("http_url") else None
    config = Config(
        source=SourceConfig(
            dsn=Secret(o.get("dsn") or ""),
            slot=o["slot"],
            publication=o["publication"],
            create_slot=o.get("create_slot", False),
            messages=o.get("messages", False),
        ),
        sink=SinkConfig(kind=o.get("sink", "stdout"), http=http, file_path=o.get("file_path")),
        batch=BatchConfig(o.get("batch_size", 1), o.get("batch_bytes", 1_048_576),
                          o.get("batch_wait_ms", 100)),
        log=LogConfig(format=o.get("log_format", "text"), level=o.get("log_level", "info").upper()),
    )
    try:
        return validate(config)
    except Wal2HttpError as e:
        _fail(str(e), e.exit_status)
        raise  # unreachable: _fail exits


def _execute(config: Config, action: Callable[[], None]) -> None:
    """Run ``action`` with logging set up; turn every failure into a message and an exit code."""
    log_setup.setup(config.log.level, config.log.format, config.secrets())
    try:
        action()
    except Wal2HttpError as e:
        logger.error("%s", e)
        sys.exit(int(e.exit_status))
    except Exception as e:
        logger.error("unexpected error: %s: %s (run with --log-level debug for details)", type(e).__name__, e)
        logger.debug("traceback", exc_info=True)
        sys.exit(int(ExitStatus.ERROR))


def _fail(message: str, status: ExitStatus) -> None:
    click.echo(f"wal2http: error: {message}", err=True)
    sys.exit(int(status))
