"""The click application: the command group, option headings, and error-to-exit-code mapping."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from wal2http import __version__
from wal2http.config.environment import unknown_variables
from wal2http.config.secrets import SECRET_SOURCES, SecretSource
from wal2http.config.settings import Config
from wal2http.errors import ExitStatus, Wal2HttpError
from wal2http.observe import log as log_setup

logger = logging.getLogger("wal2http")

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 80, "show_default": True}


def env(name: str, *legacy: str) -> list[str]:
    """Environment variables for an option: ``WAL2HTTP_<NAME>`` first, then the earlier tool's."""
    return [f"WAL2HTTP_{name}", *legacy]


def secret_file_option(source: SecretSource, help: str) -> Callable[..., Any]:
    """``--x-file PATH`` (or ``WAL2HTTP_X_FILE``) for a secret that is never a flag itself."""
    return click.option(source.file_option, envvar=source.file_env, metavar="PATH",
                        help=f"{help} Or set {' or '.join(source.env)}.")


class Lines(click.ParamType):  # type: ignore[type-arg]
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

    def invoke(self, ctx: click.Context) -> Any:
        """Usage errors of the commands below as click shows them, or as one JSON record with --log-format json."""
        as_json = wants_json([*ctx._protected_args, *ctx.args])
        try:
            return super().invoke(ctx)
        except click.ClickException as e:
            if not as_json:
                raise
            fail(e.format_message(), e.exit_code, as_json=True)


def wants_json(args: list[str]) -> bool:
    """Whether a command line (or WAL2HTTP_LOG_FORMAT) asks for JSON log records, before it is parsed."""
    chosen = os.environ.get("WAL2HTTP_LOG_FORMAT")
    for i, arg in enumerate(args):
        if arg == "--log-format" and i + 1 < len(args):
            chosen = args[i + 1]
        elif arg.startswith("--log-format="):
            chosen = arg.partition("=")[2]
    return chosen == "json"


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



def execute(config: Config, action: Callable[[], None], *, as_log: bool = True, run_id: str = "") -> None:
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
        fail(str(e), e.exit_status, as_json=config.log.format == "json")
    warn_unknown_environment()
    try:
        action()
    except (click.ClickException, click.Abort):
        raise
    except Wal2HttpError as e:
        if not as_log:
            fail(str(e), e.exit_status, as_json=config.log.format == "json")
        logger.error("%s", e)
        sys.exit(int(e.exit_status))
    except Exception as e:
        logger.error("unexpected error: %s: %s (run with --log-level debug for details)", type(e).__name__, e)
        logger.debug("traceback", exc_info=True)
        sys.exit(int(ExitStatus.ERROR))


def fail(message: str, status: ExitStatus | int, *, as_json: bool = False) -> NoReturn:
    """Report a problem found before logging is set up (or by a one-shot command), and exit.

    ``as_json`` (--log-format json): as one JSON error record, like those logged later.
    """
    click.echo(log_setup.json_error(message) if as_json else f"wal2http: error: {message}", err=True)
    sys.exit(int(status))


def known_variables(root: click.Command) -> set[str]:
    """Every environment variable some option of some command reads, and the secrets' own."""
    names = {name for source in SECRET_SOURCES for name in (*source.env, source.file_env)}
    commands = [root]
    while commands:
        command = commands.pop()
        if isinstance(command, click.Group):
            commands.extend(command.commands.values())
        for param in command.params:
            if isinstance(param, click.Option) and param.envvar:
                names.update([param.envvar] if isinstance(param.envvar, str) else param.envvar)
    return names


def warn_unknown_environment() -> None:
    """A WAL2HTTP_* variable no option reads is most likely a typo: name it, and the variable meant."""
    for name, nearest in unknown_variables(os.environ, known_variables(main)):
        logger.warning("environment variable %s is not one wal2http reads: ignored%s", name,
                       f" (did you mean {nearest}?)" if nearest else "")


def emit(as_json: bool, data: Any, lines: list[str]) -> None:
    """A command's result on standard output: ``data`` as JSON, or ``lines`` as text."""
    click.echo(json.dumps(data, indent=2) if as_json else "\n".join(lines))
