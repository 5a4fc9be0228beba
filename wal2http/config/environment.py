"""Environment variables named like wal2http's own that no option reads: typos, said at start."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

PREFIX = "WAL2HTTP_"


def unknown_variables(environ: Mapping[str, str], known: Iterable[str]) -> list[tuple[str, str | None]]:
    """Each ``WAL2HTTP_*`` variable not in ``known``, with the nearest known name (None if none is close)."""
    names = sorted(set(known))
    return [(name, next(iter(difflib.get_close_matches(name, names, n=1, cutoff=0.8)), None))
            for name in sorted(environ) if name.startswith(PREFIX) and name not in names]
