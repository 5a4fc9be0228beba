"""Read ``--routes FILE``: a TOML list of ``[[route]]`` tables, each checked as the options it stands for."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from typing import Any

from wal2http.config.cloudevents import EventFormat
from wal2http.config.headers import parse_headers
from wal2http.config.routing import Route, compile_expression, parse_columns
from wal2http.config.rules import split_signing_secrets
from wal2http.config.secrets import Secret, read_secret_file
from wal2http.config.sections import HttpConfig, OnReject
from wal2http.errors import ConfigError

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")
KEYS = {"name": str, "filter": str, "url": str, "headers": list, "signing_secret_file": str, "format": str,
        "columns": list, "on_reject": str, "dead_letter_path": str}
REQUIRED = ("name", "url")


def load_routes(path: str, base: HttpConfig, environ: Mapping[str, str]) -> tuple[Route, ...]:
    """The routes of ``path``; ``base`` holds the run's http settings (timeouts, TLS) every route shares."""
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"--routes {path}: cannot read it ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--routes {path}: not valid TOML: {e}") from None
    extra = sorted(set(document) - {"route"})
    if extra:
        raise ConfigError(f"--routes {path}: unknown table or key {', '.join(extra)}; routes are [[route]] tables")
    tables = document.get("route")
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"--routes {path}: no route; give one [[route]] table per route")
    routes = [_route(path, i, table, base, environ) for i, table in enumerate(tables, 1)]
    names = [r.name for r in routes]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"--routes {path}: route name {', '.join(twice)} is used twice")
    files = [r.dead_letter_path for r in routes if r.dead_letter_path]
    if len(files) != len(set(files)):
        raise ConfigError(f"--routes {path}: two routes share a dead_letter_path; give each its own file")
    return tuple(routes)


def _route(path: str, number: int, table: Any, base: HttpConfig, environ: Mapping[str, str]) -> Route:
    where = f"--routes {path}, route {number}"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a [[route]] table")
    if isinstance(table.get("name"), str):
        where = f"--routes {path}, route {table['name']!r}"
    for key, value in table.items():
        kind = KEYS.get(key)
        if kind is None:
            raise ConfigError(f"{where}: unknown key {key!r}; a route has {', '.join(KEYS)}")
        if not isinstance(value, kind) or (kind is list and not all(isinstance(v, str) for v in value)):
            raise ConfigError(f"{where}: {key} must be {'a list of strings' if kind is list else 'a string'}")
    missing = [key for key in REQUIRED if key not in table]
    if missing:
        raise ConfigError(f"{where}: {' and '.join(missing)} missing")
    if not NAME_RE.match(table["name"]):
        raise ConfigError(f"{where}: name must be 1-63 letters, digits, '.', '_' or '-'")
    fmt = table.get("format", base.format.value)
    if fmt not in tuple(EventFormat):
        raise ConfigError(f"{where}: format must be one of {', '.join(EventFormat)}, not {fmt!r}")
    on_reject = table.get("on_reject", OnReject.HALT.value)
    if on_reject not in tuple(OnReject):
        raise ConfigError(f"{where}: on_reject must be one of {', '.join(OnReject)}, not {on_reject!r}")
    if on_reject == OnReject.DEAD_LETTER and not table.get("dead_letter_path"):
        raise ConfigError(f"{where}: on_reject = \"dead-letter\" needs dead_letter_path")
    secrets: tuple[Secret, ...] = ()
    if "signing_secret_file" in table:
        secrets = split_signing_secrets(Secret(read_secret_file(table["signing_secret_file"],
                                                                f"{where} signing_secret_file")))
    try:
        http = dataclasses.replace(base, url=table["url"], headers=parse_headers(table.get("headers", ()), environ),
                                   signing_secrets=secrets, format=EventFormat(fmt))
        return Route(
            name=table["name"], http=http,
            filter=compile_expression(table["filter"], f"{where}: filter") if "filter" in table else None,
            columns=parse_columns(table.get("columns", ()), f"{where}: columns"),
            on_reject=OnReject(on_reject), dead_letter_path=table.get("dead_letter_path"))
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}" if not str(e).startswith(where) else str(e)) from None
