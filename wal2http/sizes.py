"""Byte sizes: ``512MB`` and ``2GB`` to bytes and back, with PostgreSQL's units (1 kB = 1024 B)."""

from __future__ import annotations

import re

# PostgreSQL's memory units are powers of 1024 (``max_slot_wal_keep_size = 2GB``); so are ours.
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(?:([kmgtp])(?:i?b)?|(b|bytes?))?\s*$", re.IGNORECASE)
_PRETTY = ("B", "kB", "MB", "GB", "TB", "PB")


def parse_size(text: str) -> int:
    """Bytes for ``"512MB"``, ``"2 GB"``, ``"1.5GiB"``, ``"64k"`` or ``"1000"``; ValueError otherwise."""
    match = _SIZE_RE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (use a number with an optional unit: B, kB, MB, GB, TB)")
    number, prefix, _bytes = match.groups()
    return int(float(number) * _UNITS[(prefix or "").lower()])


def format_size(n: int) -> str:
    """A short human form: ``"0 B"``, ``"512 B"``, ``"1.2 MB"``, ``"2.0 GB"``."""
    if n < 0:
        return "-" + format_size(-n)
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in _PRETTY[1:]:
        value /= 1024
        if round(value, 1) < 1024 or unit == _PRETTY[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")
