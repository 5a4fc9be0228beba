"""What is sent and where: filter expressions (CEL), column selections and templates, checked once at start."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from wal2http.config.headers import Header
from wal2http.config.sections import HttpConfig, OnReject
from wal2http.errors import ConfigError

# The names an expression may read; ``changed`` and ``old`` need the old row (REPLICA IDENTITY FULL).
VARIABLES = ("op", "schema", "table", "key", "new", "old", "changed", "unchanged_toast")
NEEDS_OLD_ROW = frozenset({"old", "changed"})
PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")
FIELDS = ("schema", "table", "op")
_POSITION_RE = re.compile(r"<input>:(\d+):(\d+): (.*?)(?:\n|$)")


@dataclass(frozen=True)
class Expression:
    """A compiled CEL expression and the names it reads (only those are built for each event)."""

    text: str
    program: Any  # cel.Program: compiled once, evaluated per event
    variables: tuple[str, ...]

    @property
    def needs_old_row(self) -> bool:
        return bool(NEEDS_OLD_ROW.intersection(self.variables))


def compile_expression(text: str, option: str = "--filter") -> Expression:
    """Compile a filter; a syntax error or an unknown name is a ConfigError naming the expression and where."""
    # Imported here, not at the top: the cel package imports its own command line (prompt_toolkit, typer),
    # 140 ms that every command would pay at start although most runs have no expression.
    import cel

    try:
        program = cel.compile(text)
    except (ValueError, RuntimeError) as e:
        found = _POSITION_RE.search(str(e))
        where = f" at line {found.group(1)}, column {found.group(2)}: {found.group(3)}" if found else f": {e}"
        raise ConfigError(f"{option} {text!r} does not compile{where}") from None
    variables = tuple(program.variables())
    unknown = sorted(set(variables) - set(VARIABLES))
    if unknown:
        raise ConfigError(f"{option} {text!r} reads {', '.join(unknown)}, which an event does not have; "
                          f"an expression may read {', '.join(VARIABLES)}")
    return Expression(text, program, variables)


@dataclass(frozen=True)
class Columns:
    """``--columns SCHEMA.TABLE=COL,COL``: the columns kept in ``new`` and ``old`` of one table."""

    schema: str
    table: str
    names: tuple[str, ...]


def parse_columns(specs: Iterable[str], option: str = "--columns") -> tuple[Columns, ...]:
    selections: dict[tuple[str, str], Columns] = {}
    for spec in specs:
        if not spec.strip():
            continue
        target, equals, names = spec.partition("=")
        schema, dot, table = target.strip().rpartition(".")
        columns = tuple(n.strip() for n in names.split(",") if n.strip())
        if not equals or not dot or not schema or not table or not columns:
            raise ConfigError(f"{option} must be SCHEMA.TABLE=COLUMN[,COLUMN...], not {spec!r}")
        if (schema, table) in selections:
            raise ConfigError(f"{option} names {schema}.{table} twice: list all its columns once")
        selections[(schema, table)] = Columns(schema, table, columns)
    return tuple(selections.values())


@dataclass(frozen=True)
class Template:
    """A text with ``{schema}``, ``{table}``, ``{op}`` or ``{key.COLUMN}`` in it: literal and field parts."""

    text: str
    parts: tuple[tuple[bool, str], ...]  # (is a field, literal text or field name)

    @property
    def fixed(self) -> bool:
        return not any(is_field for is_field, _ in self.parts)

    @property
    def key_columns(self) -> tuple[str, ...]:
        return tuple(name[4:] for is_field, name in self.parts if is_field and name.startswith("key."))


def parse_template(text: str, option: str) -> Template:
    parts: list[tuple[bool, str]] = []
    at = 0
    for found in PLACEHOLDER_RE.finditer(text):
        name = found.group(1)
        if name not in FIELDS and not (name.startswith("key.") and len(name) > 4):
            raise ConfigError(f"{option}: unknown placeholder {{{name}}}; use {{schema}}, {{table}}, {{op}} "
                              "or {key.COLUMN}")
        if found.start() > at:
            parts.append((False, text[at:found.start()]))
        parts.append((True, name))
        at = found.end()
    if at < len(text):
        parts.append((False, text[at:]))
    if any("{" in literal or "}" in literal for is_field, literal in parts if not is_field):
        raise ConfigError(f"{option}: an unmatched brace in {text!r}")
    return Template(text, tuple(parts))


def example_of(template: Template) -> str:
    """The template with every field filled by a placeholder value, to check the URL it would make."""
    return "".join("x" if is_field else text for is_field, text in template.parts)


@dataclass(frozen=True)
class Route:
    """One ``[[route]]`` of ``--routes``: the events it takes, their columns, where and how they are sent."""

    name: str
    http: HttpConfig  # the URL template, headers, signing secrets and format; timeouts and TLS are the run's
    filter: Expression | None = None  # None: every event
    columns: tuple[Columns, ...] = ()
    on_reject: OnReject = OnReject.HALT
    dead_letter_path: str | None = None


@dataclass(frozen=True)
class RoutingConfig:
    """``--filter``, ``--columns`` (for every sink) and ``--routes`` (several http destinations)."""

    filter: Expression | None = None
    columns: tuple[Columns, ...] = ()
    routes: tuple[Route, ...] = ()
    routes_file: str | None = None

    @property
    def selects(self) -> bool:
        return self.filter is not None or bool(self.columns)

    def expressions(self) -> list[tuple[str, Expression]]:
        """Every filter with where it comes from (``--filter``, or ``route NAME``)."""
        found = [("--filter", self.filter)] if self.filter is not None else []
        found.extend((f"route {r.name!r}", r.filter) for r in self.routes if r.filter is not None)
        return found


def url_template_example(url: str, headers: Iterable[Header] = ()) -> str:
    """Check the templates of ``--http-url`` and literal ``--header`` values; the URL with its fields filled.

    A field may stand in the path and the query only: the host (and so the TLS name and the proxy
    choice) is the same for every event.
    """
    template = parse_template(url, "--http-url")
    for header in headers:
        if isinstance(header.value, str):
            parse_template(header.value, f"--header {header.name}")
    if not template.fixed and "{" in urlsplit(url).netloc:
        raise ConfigError("--http-url: {schema}, {table}, {op} and {key.COLUMN} may stand in the path and the "
                          "query, not in the host")
    return example_of(template)
