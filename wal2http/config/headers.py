"""Static request headers from ``--header 'Name: value'``; secret values come from ``env:`` or ``file:``."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from wal2http.config.secrets import Secret, read_secret_file
from wal2http.errors import ConfigError

OPTION = "--header"
TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")  # RFC 9110 field name
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
VALUE_RE = re.compile(r"^[\x20-\x7e\t]{1,8192}$")  # visible ASCII, spaces and tabs; no CR or LF
# Headers wal2http sets itself: overriding them would break framing, signatures or idempotency.
RESERVED = frozenset({
    "host", "content-length", "content-type", "transfer-encoding", "connection",
    "webhook-id", "webhook-timestamp", "webhook-signature", "idempotency-key",
})
# A literal value for a header named like these would sit in the process list and the shell history.
SENSITIVE_RE = re.compile(r"auth|token|secret|passw|api.?key|access.?key|cookie|signature|credential|session",
                          re.IGNORECASE)


@dataclass(frozen=True)
class Header:
    """One static header; a value read from ``env:`` or ``file:`` is a Secret."""

    name: str
    value: str | Secret

    def reveal(self) -> str:
        return self.value.reveal() if isinstance(self.value, Secret) else self.value


def parse_headers(specs: Iterable[str], environ: Mapping[str, str]) -> tuple[Header, ...]:
    """Parse every ``Name: value`` (blank entries ignored); ConfigError names the header, never a secret."""
    headers: list[Header] = []
    seen: set[str] = set()
    for spec in specs:
        if not spec.strip():
            continue
        header = parse_header(spec, environ)
        if header.name.lower() in seen:
            raise ConfigError(f"{OPTION} {header.name} is given twice")
        seen.add(header.name.lower())
        headers.append(header)
    return tuple(headers)


def parse_header(spec: str, environ: Mapping[str, str]) -> Header:
    name, colon, raw = spec.partition(":")
    name, raw = name.strip(), raw.strip()
    if not colon or not TOKEN_RE.match(name):
        raise ConfigError(
            f"{OPTION} must be 'Name: value' with a name of letters, digits and !#$%&'*+.^_`|~- "
            "(value from the environment: 'Name: env:VARIABLE', from a file: 'Name: file:PATH')"
        )
    if name.lower() in RESERVED:
        raise ConfigError(f"{OPTION} {name}: wal2http sets this header itself; it cannot be changed")
    value: str | Secret
    if raw.startswith("env:"):
        variable = raw[4:].strip()
        if not ENV_NAME_RE.match(variable):
            raise ConfigError(f"{OPTION} {name}: {variable!r} is not an environment variable name")
        if not environ.get(variable):
            raise ConfigError(f"{OPTION} {name}: environment variable {variable} is not set or empty")
        value = Secret(environ[variable])
    elif raw.startswith("file:"):
        value = Secret(read_secret_file(raw[5:].strip(), f"{OPTION} {name} file"))
    elif SENSITIVE_RE.search(name):
        raise ConfigError(
            f"{OPTION} {name} looks like a secret: give its value as 'env:VARIABLE' or 'file:PATH', "
            "never on the command line"
        )
    else:
        value = raw
    shown = value if isinstance(value, str) else None
    text = value.reveal() if isinstance(value, Secret) else value
    if not VALUE_RE.match(text):
        detail = f" {shown!r}" if shown is not None else " (not shown: it is secret)"
        raise ConfigError(
            f"{OPTION} {name}: the value{detail} must be 1-8192 printable ASCII characters, "
            "spaces or tabs, without line breaks"
        )
    return Header(name, value)
