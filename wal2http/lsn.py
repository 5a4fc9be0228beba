"""Log sequence numbers: PostgreSQL's ``X/Y`` text form to and from integers."""

from __future__ import annotations

import re

_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def parse_lsn(text: str) -> int:
    """Return the integer for ``"16/B374D848"``; raise ValueError on anything else."""
    match = _LSN_RE.match(text.strip())
    if match is None:
        raise ValueError(f"not an LSN: {text!r} (expected a form like 16/B374D848)")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(value: int) -> str:
    """Return PostgreSQL's text form of an LSN, e.g. ``"16/B374D848"``."""
    if value < 0 or value >= 1 << 64:
        raise ValueError(f"LSN out of range: {value}")
    # Once per event: printf-style formatting is a third faster than an f-string with format specs.
    return "%X/%X" % (value >> 32, value & 0xFFFFFFFF)  # noqa: UP031
