"""Every option a command takes reaches the configuration: a misspelt name in the mapping cannot go unnoticed.

``given(o, field="option")`` leaves out a name the command does not have, so that a command with fewer
options gets the dataclass defaults. The same tolerance would hide a typo: the option would be accepted on
the command line and do nothing. This test builds each command's configuration from all of its options
and fails for any option that was never read.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from typing import Any

import click
import pytest
from click.core import ParameterSource

from wal2http.cli import main
from wal2http.cli import options as options_module
from wal2http.cli.options import unchecked_config

# Options read only in some configurations: each variant switches one of them on.
VARIANTS: tuple[dict[str, Any], ...] = (
    {},
    {"http_url": "https://hooks.example.com/pg"},
    {"sink": "hook0"},
    {"smtp_host": "mail.example.com"},
)


class ReadsRecorded(dict[str, Any]):
    """The options of one command, remembering which ones the configuration asked for."""

    def __init__(self, values: dict[str, Any]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)


def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from commands(command, (*prefix, name))
        else:
            yield " ".join((*prefix, name)), command


def configured(command: click.Command) -> bool:
    """Commands whose options (beyond their own arguments) become a Config: they take ``**options``."""
    assert command.callback is not None
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(command.callback).parameters.values())


CONFIGURED = [(name, command) for name, command in commands(main) if configured(command)]


def options_read(name: str, command: click.Command, variant: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(the options given to the configuration, those it read), with ``variant`` overriding defaults."""
    assert command.callback is not None
    own = set(inspect.signature(command.callback).parameters)
    ctx = command.make_context(name, [], resilient_parsing=True)
    ctx.set_parameter_source("dsn", ParameterSource.COMMANDLINE)  # --dsn is read only when typed
    options = ReadsRecorded({k: v for k, v in ctx.params.items() if k not in own} | variant)
    with ctx:
        unchecked_config(options)
    return set(options) - set(variant), options.read


@pytest.mark.parametrize(("name", "command"), CONFIGURED, ids=[name for name, _ in CONFIGURED])
def test_every_option_of_a_command_is_read(name: str, command: click.Command) -> None:
    given: set[str] = set()
    read: set[str] = set()
    for variant in VARIANTS:
        names = {p.name for p in command.params}
        options, seen = options_read(name, command, {k: v for k, v in variant.items() if k in names})
        given |= options
        read |= seen
    assert sorted(given - read) == [], f"options of '{name}' that nothing reads"


def test_the_check_sees_an_option_nobody_reads() -> None:
    """A command with an option the configuration never asks for is caught."""
    probe = click.Command("probe", callback=lambda **options: None,
                          params=[click.Option(["--dsn"]), click.Option(["--unheard-of"])])
    options, read = options_read("probe", probe, {})
    assert "unheard_of" in options - read


def names_asked_for(source: str) -> set[str]:
    """Option names the configuration code asks for: ``given(o, field="name")``, ``o["name"]``, ``o.get("name")``."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "given":
            names.update(k.value.value for k in node.keywords if isinstance(k.value, ast.Constant))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and isinstance(node.func.value, ast.Name) and node.func.value.id == "o" and node.args
              and isinstance(node.args[0], ast.Constant)):
            names.add(node.args[0].value)
        elif (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "o"
              and isinstance(node.slice, ast.Constant)):
            names.add(node.slice.value)
    return names


def test_every_name_the_configuration_asks_for_is_an_option() -> None:
    """A misspelt name in ``given`` matches no option: it would be skipped, and the real option unread."""
    every_option = {p.name for _, command in commands(main) for p in command.params}
    asked = names_asked_for(inspect.getsource(options_module))
    assert asked, "the scan found nothing: has the configuration code changed shape?"
    assert sorted(asked - every_option) == []


def test_the_scan_sees_a_misspelt_name() -> None:
    assert names_asked_for('given(o, timeout_s="http_timout")\no.get("x")\no["y"]') == {"http_timout", "x", "y"}
