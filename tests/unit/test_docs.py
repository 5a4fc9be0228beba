"""The manual page and the README document exactly the options the CLI has."""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import click
import docutils.core
import pytest
from click.testing import CliRunner

import wal2http.cli
from tests.support import readme
from wal2http.config.secrets import SECRET_SOURCES

ROOT = Path(__file__).resolve().parents[2]
MAN_PAGE = ROOT / "man" / "wal2http.1"
README = ROOT / "README.rst"

# Options click adds to every command; documented once, not per command.
IGNORED = frozenset({"--help", "-h", "--version"})
LONG_OPTION_RE = re.compile(r"(?<![\w-])--[A-Za-z0-9][A-Za-z0-9-]*")
ROFF_FONT_RE = re.compile(r"\\f(?:\[[^\]]*\]|\(..|.)")

CommandTree = Iterator[tuple[str, click.Command]]


def walk(command: click.Command, path: tuple[str, ...] = ("wal2http",)) -> CommandTree:
    """Every command of the tree, with its full name (``wal2http slot create``)."""
    yield " ".join(path), command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from walk(sub, (*path, name))


def long_options(command: click.Command, hidden: bool = False) -> list[str]:
    """The command's ``--long`` options; hidden ones only when asked (they need no docs)."""
    return [
        opt
        for p in command.params
        if isinstance(p, click.Option) and (hidden or not p.hidden)
        for opt in (*p.opts, *p.secondary_opts)
        if opt.startswith("--") and opt not in IGNORED
    ]


def envvars(command: click.Command) -> list[str]:
    names: list[str] = []
    for p in command.params:
        if not isinstance(p, click.Option) or p.envvar is None:
            continue
        names.extend([p.envvar] if isinstance(p.envvar, str) else p.envvar)
    return names


def roff_to_text(source: str) -> str:
    """The man page source with hyphen escapes and font changes removed, for searching."""
    text = source.replace("\\-", "-").replace("\\&", "")
    return ROFF_FONT_RE.sub("", text)


def man_section(text: str, name: str) -> str:
    match = re.search(rf"^\.SH \"?{name}\"?\s*$(.*?)(?=^\.SH |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match is not None, f"{MAN_PAGE.name} has no {name} section"
    return match.group(1)


def mentions(text: str, word: str) -> bool:
    """True when ``word`` appears as a whole token (``--batch`` is not in ``--batch-size``)."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


# Secrets have no flag, so no click option names their variables: the registry does.
SECRET_VARIABLES = sorted({name for source in SECRET_SOURCES for name in (*source.env, source.file_env)})

COMMANDS = list(walk(wal2http.cli.main))
OPTIONS = [(path, opt) for path, cmd in COMMANDS for opt in long_options(cmd)]
ENVVARS = [(path, var) for path, cmd in COMMANDS for var in envvars(cmd)]
DOCS = {"man": MAN_PAGE, "readme": README}


@pytest.fixture(scope="module")
def docs() -> dict[str, str]:
    return {"man": roff_to_text(MAN_PAGE.read_text()), "readme": README.read_text()}


def test_the_tree_is_walked() -> None:
    assert any(path == "wal2http run" for path, _ in COMMANDS)
    assert ("wal2http run", "--dsn") in OPTIONS


@pytest.mark.parametrize("doc", DOCS)
@pytest.mark.parametrize(("path", "option"), OPTIONS, ids=[f"{p}:{o}" for p, o in OPTIONS])
def test_every_option_is_documented(docs: dict[str, str], doc: str, path: str, option: str) -> None:
    assert mentions(docs[doc], option), f"{path} {option} is missing from {DOCS[doc].name}"


@pytest.mark.parametrize("doc", DOCS)
@pytest.mark.parametrize(("path", "name"), ENVVARS, ids=[f"{p}:{v}" for p, v in ENVVARS])
def test_every_environment_variable_is_documented(
    docs: dict[str, str], doc: str, path: str, name: str
) -> None:
    assert mentions(docs[doc], name), f"{name} (an option of {path}) is missing from {DOCS[doc].name}"


@pytest.mark.parametrize("doc", DOCS)
@pytest.mark.parametrize("name", SECRET_VARIABLES)
def test_every_secret_variable_is_documented(docs: dict[str, str], doc: str, name: str) -> None:
    assert mentions(docs[doc], name), f"secret variable {name} is missing from {DOCS[doc].name}"


@pytest.mark.parametrize("doc", DOCS)
@pytest.mark.parametrize("path", [p for p, _ in COMMANDS if p != "wal2http"])
def test_every_command_is_documented(docs: dict[str, str], doc: str, path: str) -> None:
    assert re.search(r"\s+".join(map(re.escape, path.split())), docs[doc]), (
        f"command '{path}' is missing from {DOCS[doc].name}"
    )


def test_the_man_page_names_no_option_the_cli_lacks(docs: dict[str, str]) -> None:
    known = {opt for _, cmd in COMMANDS for opt in long_options(cmd, hidden=True)} | IGNORED
    documented = set(LONG_OPTION_RE.findall(man_section(docs["man"], "OPTIONS")))
    unknown = sorted(documented - known)
    assert not unknown, f"{MAN_PAGE.name} OPTIONS names options the CLI does not have: {', '.join(unknown)}"


# -- README code blocks: every command is run by tests/integration/test_readme.py, or says why not ----


def test_every_command_block_of_the_readme_is_marked() -> None:
    unmarked = [b.where + ": " + b.text.splitlines()[0] for b in readme.blocks() if b.is_command and not b.kind]
    assert not unmarked, (
        "README.rst blocks with commands need a '.. test: shell|sql|cron' comment before their paragraph "
        "(or '.. test: not-run <reason>'):\n" + "\n".join(unmarked)
    )


def test_readme_block_names_are_unique() -> None:
    names = [b.name for b in readme.blocks() if b.name]
    assert len(names) == len(set(names))


def test_the_readme_marks_runnable_blocks_and_set_up() -> None:
    kinds = {b.kind for b in readme.blocks()}
    assert {"shell", "sql", "not-run"} <= kinds
    assert any("setup" in b.flags for b in readme.blocks())


def test_the_readme_renders_without_warnings() -> None:
    """PyPI shows README.rst (setup.cfg long_description): a markup error would show as raw text."""
    warnings = io.StringIO()
    docutils.core.publish_doctree(README.read_text(), settings_overrides={
        "report_level": 2, "halt_level": 5, "warning_stream": warnings})
    assert not warnings.getvalue(), warnings.getvalue()


SAMPLE = """\
Title
=====

.. test: shell exit=2 name=first

Run this::

    wal2http run --bogus

- A list item whose block is indented::

      SELECT 1;
      SELECT 'a;b'; -- a comment; with a semicolon

Second
======

.. test: not-run needs Docker

Build::

    docker build .

::

    {"not": "a command"}
"""


def test_markers_attach_to_the_next_literal_block() -> None:
    first, second, third, fourth = readme.parse(SAMPLE)
    assert (first.kind, first.exit, first.name, first.section) == ("shell", 2, "first", "Title")
    assert first.text == "wal2http run --bogus" and first.line == 8
    assert second.kind is None and second.is_command
    assert second.statements() == ["SELECT 1;", "SELECT 'a;b';"]  # the trailing comment is no statement
    assert (third.kind, third.reason, third.section) == ("not-run", "needs Docker", "Second")
    assert fourth.kind is None and not fourth.is_command


@pytest.mark.parametrize("bad", [
    ".. test: shell\n\nNo literal block follows.\n",
    ".. test: shell\n\n.. test: sql\n\nTwice::\n\n    SELECT 1;\n",
    ".. test: python\n\nRun::\n\n    print()\n",
    ".. test: shell exit=x\n\nRun::\n\n    true\n",
    ".. test: not-run\n\nRun::\n\n    true\n",
])
def test_malformed_markers_are_errors(bad: str) -> None:
    with pytest.raises(readme.ReadmeError):
        readme.parse(bad)


# -- the manual page: SYNOPSIS matches the commands, examples parse, mandoc and man accept it ----------

SOURCE_OPTIONS = frozenset({"--dsn", "--dsn-file", "--require-tls", "--slot", "--publication"})
EXAMPLE_COMMAND_RE = re.compile(r"(?:^|\$\(|&&|\|\|)\s*(?:[A-Z][A-Z0-9_]*=\S+\s+)*(wal2http\s+[^|;&)]*)")


def synopsis_entries(text: str) -> dict[str, set[str]]:
    """``wal2http slot create`` -> the options its SYNOPSIS entry shows."""
    entries: dict[str, set[str]] = {}
    current: set[str] | None = None
    for line in man_section(text, "SYNOPSIS").splitlines():
        found = re.match(r"^\.B (wal2http(?: [a-z][a-z-]*)*)\s*$", line)
        if found:
            current = entries.setdefault(found.group(1), set())
        elif line.startswith((".br", ".PP")):
            current = None
        elif current is not None:
            current.update(LONG_OPTION_RE.findall(line))
    return entries


def test_the_synopsis_shows_every_command_with_its_own_options(docs: dict[str, str]) -> None:
    entries = synopsis_entries(docs["man"])
    # A group that runs by itself (``backfill``) has a synopsis entry of its own too.
    leaves = {path: cmd for path, cmd in COMMANDS
              if not isinstance(cmd, click.Group) or cmd.invoke_without_command}
    assert set(entries) - {"wal2http"} == set(leaves), "SYNOPSIS and the CLI list different commands"
    for path, shown in entries.items():
        if path in leaves:
            unknown = shown - set(long_options(leaves[path], hidden=True))
            assert not unknown, f"SYNOPSIS shows {', '.join(sorted(unknown))} for '{path}', which lacks them"
    for path in ("wal2http slot create", "wal2http slot drop", "wal2http slot status"):
        if path in leaves:
            assert set(long_options(leaves[path])) >= SOURCE_OPTIONS, f"{path}: [SOURCE] is not all there"


def man_examples(text: str) -> list[str]:
    """Every ``wal2http ...`` command of the EXAMPLES section, continuation lines joined."""
    section = man_section(text, "EXAMPLES").replace("\\e", "\\").replace("\\(aq", "'")
    commands = []
    for block in re.findall(r"^\.nf\n(.*?)^\.fi", section, re.MULTILINE | re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            commands.extend(m.strip() for m in EXAMPLE_COMMAND_RE.findall(line))
    return commands


def parse_command_line(args: list[str]) -> click.Context:
    """What click makes of a command line, without running it: raises click.UsageError if wrong."""
    command: click.Command = wal2http.cli.main
    context = command.make_context("wal2http", args)
    while isinstance(command, click.Group):
        if command.invoke_without_command and not [*context._protected_args, *context.args]:
            break  # a group that runs by itself (backfill)
        name, found, rest = command.resolve_command(context, [*context._protected_args, *context.args])
        assert name is not None and found is not None
        command, context = found, found.make_context(name, rest, parent=context)
    return context


def test_the_man_examples_are_valid_command_lines(docs: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("WAL2HTTP_")]:
        monkeypatch.delenv(name)
    examples = man_examples(docs["man"])
    assert {"run", "replay", "check-config", "slot"} <= {shlex.split(x)[1] for x in examples}
    for example in examples:
        try:
            parse_command_line(shlex.split(example)[1:])
        except click.UsageError as e:
            raise AssertionError(f"man page example '{example}': {e}") from None


def test_the_man_page_passes_mandoc_lint() -> None:
    """Nothing above style level (`make docs-tools` installs mandoc; CI runs it via `make test`)."""
    if shutil.which("mandoc") is None:
        pytest.skip("mandoc is not installed: `make docs-tools` installs it")
    done = subprocess.run(["mandoc", "-T", "lint", "-W", "warning", str(MAN_PAGE)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr


def test_the_man_page_renders_at_80_columns() -> None:
    if shutil.which("man") is None:
        pytest.skip("man is not installed: `make docs-tools` installs it")
    env = {**os.environ, "MANWIDTH": "80", "MANPAGER": "cat", "PAGER": "cat", "LC_ALL": "C.UTF-8"}
    done = subprocess.run(["man", "--warnings", "-l", str(MAN_PAGE)], capture_output=True, text=True,
                          timeout=60, check=False, env=env)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("WAL2HTTP(1)") and "EXAMPLES" in lines
    wide = [x for x in lines if len(x) > 80]
    assert not wide, "lines wider than 80 columns:\n" + "\n".join(wide)


# -- --help: a one-line summary, an example, options under headings, 80 columns -----------------------

HELP_HEADINGS = ("Database", "Sink", "Hook0", "Delivery", "Logging", "Monitoring", "Notifications")


def help_text(path: str) -> str:
    result = CliRunner().invoke(wal2http.cli.main, [*path.split()[1:], "--help"], terminal_width=80,
                                env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS])
def test_help_has_a_summary_and_an_example_and_fits_80_columns(path: str) -> None:
    text = help_text(path)
    wide = [x for x in text.splitlines() if len(x) > 80]
    assert not wide, f"'{path} --help' is wider than 80 columns:\n" + "\n".join(wide)
    assert re.search(r"^  Examples?( \(.*\))?:$", text, re.MULTILINE), f"'{path} --help' shows no example"
    listed = re.findall(r"^  [a-z-]+ {2,}(.*)$", text.partition("\nCommands:\n")[2], re.MULTILINE)
    assert not [x for x in listed if x.endswith("...")], f"'{path} --help' truncates a summary: {listed}"


def help_sections(text: str) -> dict[str, list[str]]:
    """Heading -> the long options --help lists under it."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if re.match(r"^[A-Z][A-Za-z0-9 ]*:$", line):
            current = sections.setdefault(line[:-1], [])
        elif current is not None and (found := re.match(r"^  (?:-[a-z], )?(--[a-z][a-z0-9-]*)", line)):
            current.append(found.group(1))
    return sections


def test_run_help_lists_every_option_under_a_heading() -> None:
    sections = help_sections(help_text("wal2http run"))
    assert sections.pop("Options") == ["--help"], "an option of run has no heading: give its group one"
    assert [h for h in sections if h in HELP_HEADINGS] == list(HELP_HEADINGS)


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS if p not in ("wal2http", "wal2http run", "wal2http slot")])
def test_options_shared_with_run_keep_their_heading(path: str) -> None:
    heading_in_run = {o: h for h, opts in help_sections(help_text("wal2http run")).items() for o in opts}
    for heading, opts in help_sections(help_text(path)).items():
        for option in opts:
            if option in heading_in_run and option != "--help":
                assert heading == heading_in_run[option], f"'{path} --help': {option} under {heading}"
