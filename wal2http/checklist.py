"""A checklist: one line per check (ok, warning or FAILED with the fix), its exit code and its text."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any

from wal2http.errors import ConfigError, DatabaseError, ExitStatus, Wal2HttpError


class CheckName(StrEnum):
    """The checks other code decides on by name (the others' names are only shown)."""

    DSN = "dsn"
    SINK_SETTINGS = "sink settings"
    REPLICA_IDENTITY = "replica identity"
    WAL_SENDERS = "wal senders"
    BACKFILL_REQUESTS = "backfill requests"


class Status(Enum):
    OK = "ok"
    WARNING = "warning"
    FAILED = "failed"


@dataclass(frozen=True)
class Check:
    """One line of the checklist; ``fix`` says what to do when it is not ok."""

    name: str
    status: Status
    detail: str
    fix: str | None = None
    exit_status: ExitStatus = ExitStatus.USAGE  # of a failure: 2 configuration, 3 database side

    @property
    def message(self) -> str:
        """The detail and the fix, as ``run`` and ``slot create`` report a failure."""
        return f"{self.detail}; {self.fix}" if self.fix else self.detail

    def error(self) -> Wal2HttpError:
        cls = ConfigError if self.exit_status == ExitStatus.USAGE else DatabaseError
        return cls(self.message)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status.value, "detail": self.detail, "fix": self.fix}


def ok(name: str, detail: str) -> Check:
    return Check(name, Status.OK, detail)


def warning(name: str, detail: str, fix: str | None = None) -> Check:
    return Check(name, Status.WARNING, detail, fix)


def failed(name: str, detail: str, fix: str | None = None,
           exit_status: ExitStatus = ExitStatus.USAGE) -> Check:
    return Check(name, Status.FAILED, detail, fix, exit_status)


def ident(name: str) -> str:
    """An SQL identifier as an operator would type it in a suggested fix."""
    return name if re.match(r"^[a-z_][a-z0-9_$]*$", name) else '"' + name.replace('"', '""') + '"'


def require(checks: Iterable[Check]) -> list[str]:
    """Raise the first failure; return the warnings' text."""
    notes = []
    for check in checks:
        if check.status is Status.FAILED:
            raise check.error()
        if check.status is not Status.OK:
            notes.append(check.message)
    return notes


def exit_status(checks: list[Check]) -> ExitStatus:
    """0 when nothing failed, 2 when a configuration check failed, else 3 (the database side)."""
    failures = {c.exit_status for c in checks if c.status is Status.FAILED}
    if not failures:
        return ExitStatus.OK
    return ExitStatus.USAGE if ExitStatus.USAGE in failures else ExitStatus.DATABASE


def render_text(checks: list[Check]) -> list[str]:
    lines = []
    for c in checks:
        label = "FAILED" if c.status is Status.FAILED else c.status.value
        lines.append(f"{label:<8} {c.name}: {c.detail}")
        if c.fix and c.status is not Status.OK:
            lines.append(f"{'':<8} fix: {c.fix}")
    counts = {s: sum(c.status is s for c in checks) for s in Status}
    warnings = counts[Status.WARNING]
    lines.append(f"{counts[Status.FAILED]} failed, {warnings} warning{'' if warnings == 1 else 's'}, "
                 f"{counts[Status.OK]} ok")
    return lines
