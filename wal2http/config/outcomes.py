"""What each HTTP status of a receiver's answer leads to: accepted, retried, refused (--on-reject) or a halt."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from wal2http.errors import ConfigError


class Action(StrEnum):
    """What the deliverer does with an answer of a given status."""

    ACCEPTED = "accepted"
    RETRY = "retry"  # transient: tried again, and given up after --give-up-after/--give-up-attempts
    REJECT = "reject"  # refused for good: --on-reject decides
    SMALLER = "smaller"  # 413: fewer events per request; a single event is refused
    HALT = "halt"  # the receiver says wal2http is misconfigured


DEFAULT_RETRY = frozenset({408, 425, 429, *range(500, 600)})
# The receiver says the URL or the credentials are wrong: no event can fix that, so these always halt.
CONFIGURATION = frozenset({401, 403, 404, 410})
TOO_LARGE = 413


@dataclass(frozen=True)
class StatusClasses:
    """The statuses an operator moved (``--reject-status``, ``--retry-status``) over today's defaults."""

    reject: frozenset[int] = frozenset()
    retry: frozenset[int] = frozenset()

    def action(self, status: int) -> Action:
        """What an answer with ``status`` leads to."""
        if 200 <= status < 300:
            return Action.ACCEPTED
        if status < 200:
            return Action.RETRY  # an interim answer and no final one
        if status in CONFIGURATION:
            return Action.HALT
        if status == TOO_LARGE:
            return Action.SMALLER
        if status in self.retry:
            return Action.RETRY
        if status in self.reject:
            return Action.REJECT
        return Action.RETRY if status in DEFAULT_RETRY else Action.REJECT

    @property
    def retried(self) -> frozenset[int]:
        """Every final status retried (the HTTP client's quick retries use these too)."""
        return frozenset(s for s in range(300, 600) if self.action(s) == Action.RETRY)

    def table(self) -> list[tuple[str, Action]]:
        """The effective table as ranges of statuses with one action each, 300-599, in order."""
        rows: list[tuple[str, Action]] = [("2xx", Action.ACCEPTED)]
        start = 300
        for status in range(301, 601):
            if status == 600 or self.action(status) != self.action(start):
                rows.append((str(start) if status - 1 == start else f"{start}-{status - 1}", self.action(start)))
                start = status
        return rows


def parse_statuses(text: str, option: str) -> frozenset[int]:
    """``400,422`` or ``409,500-503``: the statuses listed; ConfigError names ``option`` and what is wrong."""
    statuses: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        low_text, dash, high_text = part.partition("-")
        if not low_text.strip().isdigit() or (dash and not high_text.strip().isdigit()):
            raise ConfigError(f"{option} {text!r}: expected statuses or ranges separated by commas, "
                              "e.g. 400,422 or 500-503")
        low = int(low_text)
        high = int(high_text) if dash else low
        if not 300 <= low <= high <= 599:
            raise ConfigError(f"{option} {part!r}: statuses go from 300 to 599 (2xx is always accepted), "
                              "low to high")
        statuses.update(range(low, high + 1))
    for status in sorted(statuses):
        if status in CONFIGURATION:
            raise ConfigError(f"{option}: {status} cannot be listed: 401, 403, 404 and 410 say the URL or the "
                              "credentials are wrong, and always halt")
        if status == TOO_LARGE:
            raise ConfigError(f"{option}: 413 cannot be listed: it makes requests smaller, and a single event "
                              "answered 413 goes to --on-reject")
    return frozenset(statuses)


def status_classes(reject: str | None, retry: str | None) -> StatusClasses:
    """The classes from the two options' texts; a status in both is a ConfigError."""
    rejected = parse_statuses(reject or "", "--reject-status")
    retried = parse_statuses(retry or "", "--retry-status")
    both = sorted(rejected & retried)
    if both:
        raise ConfigError(f"--reject-status and --retry-status both list {', '.join(map(str, both))}: "
                          "keep each status in one of them")
    return StatusClasses(reject=rejected, retry=retried)
