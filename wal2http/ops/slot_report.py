"""``slot status``: judge replication slots against thresholds, the monitoring-plugin way (pure)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from enum import IntEnum
from typing import Any

from wal2http.errors import ConfigError
from wal2http.lsn import format_lsn
from wal2http.pg.slot import Slot
from wal2http.sizes import format_size

PREFIX = "WAL2HTTP"


class Health(IntEnum):
    """Exit codes of ``slot status``: the Nagios/Icinga plugin convention, not ExitStatus."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


@dataclass(frozen=True)
class Thresholds:
    warn_lag: int | None = None
    crit_lag: int | None = None
    warn_inactive: bool = False

    def __post_init__(self) -> None:
        if self.warn_lag is not None and self.crit_lag is not None and self.warn_lag > self.crit_lag:
            raise ConfigError("--warn-lag must not be larger than --crit-lag")


@dataclass(frozen=True)
class Verdict:
    """A slot, how healthy it is, and why."""

    slot: Slot
    health: Health
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class Report:
    health: Health
    verdicts: tuple[Verdict, ...]
    thresholds: Thresholds
    missing: str | None = None  # the configured slot, when it does not exist
    database: str = ""


def judge(slot: Slot, t: Thresholds) -> Verdict:
    """The health of one slot: the worst of its lag, activity and WAL reservation."""
    found: list[tuple[Health, str]] = []
    if slot.invalidated:
        found.append((Health.CRITICAL, f"invalidated: {slot.why_invalidated()}; drop and recreate it"))
    elif slot.wal_status == "unreserved":
        found.append((Health.CRITICAL, "WAL it needs goes at the next checkpoint (wal_status unreserved)"))
    lag = slot.lag_bytes
    if lag is not None and t.crit_lag is not None and lag >= t.crit_lag:
        found.append((Health.CRITICAL, f"lag {format_size(lag)} >= critical {format_size(t.crit_lag)}"))
    elif lag is not None and t.warn_lag is not None and lag >= t.warn_lag:
        found.append((Health.WARNING, f"lag {format_size(lag)} >= warning {format_size(t.warn_lag)}"))
    if not slot.active and t.warn_inactive:
        found.append((Health.WARNING, "inactive: no consumer"))
    health = max((h for h, _ in found), default=Health.OK)
    return Verdict(slot, health, tuple(reason for _, reason in found))


def evaluate(slots: list[Slot], t: Thresholds, wanted: str | None, database: str = "") -> Report:
    """Judge ``wanted`` (missing is critical), or every slot when ``wanted`` is None."""
    verdicts = tuple(judge(slot, t) for slot in slots if wanted is None or slot.name == wanted)
    if wanted is not None and not verdicts:
        return Report(Health.CRITICAL, (), t, missing=wanted, database=database)
    if wanted is not None and database:
        verdicts = tuple(_elsewhere(v, database) if v.slot.database != database else v for v in verdicts)
    health = max((v.health for v in verdicts), default=Health.OK)
    return Report(health, verdicts, t, database=database)


def _elsewhere(v: Verdict, database: str) -> Verdict:
    reason = f"belongs to database {v.slot.database}, not {database}: run would refuse it"
    return replace(v, health=max(v.health, Health.WARNING), reasons=(*v.reasons, reason))


# -- text ----------------------------------------------------------------------------------------


def _brief(v: Verdict) -> str:
    s = v.slot
    parts = [f"slot {s.name} {'active' if s.active else 'inactive'}"]
    if s.lag_bytes is not None:
        parts.append(f"lag {format_size(s.lag_bytes)}")
    if s.wal_status in ("unreserved", "lost"):
        parts.append(f"wal_status {s.wal_status}")
    return ", ".join(parts)


def summary(report: Report) -> str:
    """The first line: ``WAL2HTTP OK - slot wal2http active, lag 1.2 MB | lag_bytes=...``."""
    if report.missing is not None:
        return f"{PREFIX} CRITICAL - slot {report.missing} does not exist"
    if not report.verdicts:
        where = f" in database {report.database}" if report.database else ""
        return f"{PREFIX} OK - no logical replication slots{where}"
    text = "; ".join(_brief(v) for v in report.verdicts)
    if len(report.verdicts) > 1:
        text = f"{len(report.verdicts)} slots: {text}"
    return f"{PREFIX} {report.health.name} - {text} | {perfdata(report)}"


def unknown(message: str) -> str:
    """The first line when nothing could be judged (cannot connect, bad configuration)."""
    return f"{PREFIX} UNKNOWN - {message}"


_PLAIN_LABEL = re.compile(r"^[A-Za-z0-9_]+$")


def _label(name: str) -> str:
    return name if _PLAIN_LABEL.match(name) else "'" + name.replace("'", "") + "'"


def perfdata(report: Report) -> str:
    """Nagios performance data: ``label=value[UOM];warn;crit;min``, one set per slot."""
    t = report.thresholds
    warn = "" if t.warn_lag is None else str(t.warn_lag)
    crit = "" if t.crit_lag is None else str(t.crit_lag)
    items: list[str] = []
    for v in report.verdicts:
        s = v.slot
        prefix = f"{s.name}_" if len(report.verdicts) > 1 else ""
        if s.lag_bytes is not None:
            items.append(f"{_label(prefix + 'lag_bytes')}={s.lag_bytes}B;{warn};{crit};0")
        if s.retained_bytes is not None:
            items.append(f"{_label(prefix + 'retained_bytes')}={s.retained_bytes}B;;;0")
        items.append(f"{_label(prefix + 'active')}={int(s.active)};;;0;1")
    return " ".join(items)


def _size(n: int | None, none: str = "unknown") -> str:
    return none if n is None else f"{format_size(n)} ({n} bytes)" if n >= 1024 else format_size(n)


def _lsn(n: int | None) -> str:
    return "none" if n is None else format_lsn(n)


def details(v: Verdict) -> list[tuple[str, str]]:
    """The fields of one slot, for a human: sizes readable, LSNs in PostgreSQL's form."""
    s = v.slot
    if s.active:
        consumer = f"PID {s.active_pid}" if s.active_pid else "unknown PID"
        if s.application_name:
            consumer += f", application_name {s.application_name}"
        active = f"yes ({consumer})"
    else:
        active = "no"
    spill = ("unknown" if s.spill_txns is None else
             f"{s.spill_txns} transactions, {s.spill_count} times, {format_size(s.spill_bytes or 0)}")
    stream = ("unknown" if s.stream_txns is None else
              f"{s.stream_txns} transactions, {s.stream_count} times, {format_size(s.stream_bytes or 0)}")
    decoded = ("unknown" if s.total_txns is None else
               f"{s.total_txns} transactions, {format_size(s.total_bytes or 0)}")
    safe = "unlimited" if s.safe_wal_size is None and s.wal_status != "lost" else _size(s.safe_wal_size)
    return [
        ("status", v.health.name + (": " + "; ".join(v.reasons) if v.reasons else "")),
        ("active", active),
        ("plugin", s.plugin),
        ("database", s.database),
        ("wal_status", s.wal_status or "unknown"),
        ("restart_lsn", _lsn(s.restart_lsn)),
        ("confirmed_flush_lsn", _lsn(s.confirmed_flush_lsn)),
        ("unconfirmed", _size(s.lag_bytes)),
        ("retained", _size(s.retained_bytes)),
        ("safe_wal_size", safe),
        ("spilled", spill),
        ("streamed", stream),
        ("decoded", decoded),
        *_newer_columns(s),
    ]


def _newer_columns(s: Slot) -> list[tuple[str, str]]:
    """The columns only newer servers have (16: conflicting; 17: failover, synced, ...), when present."""
    rows = []
    if s.invalidation_reason is not None:
        rows.append(("invalidation_reason", s.invalidation_reason))
    if s.conflicting is not None:
        rows.append(("conflicting", "yes" if s.conflicting else "no"))
    if s.failover is not None:
        rows.append(("failover", "yes" if s.failover else "no"))
    if s.synced is not None:
        rows.append(("synced", "yes (a standby's copy)" if s.synced else "no"))
    if s.inactive_since is not None:
        rows.append(("inactive_since", s.inactive_since))
    return rows


def render_text(report: Report) -> list[str]:
    """The summary line, then one block per slot."""
    lines = [summary(report)]
    for v in report.verdicts:
        lines.append("")
        lines.append(f"slot {v.slot.name}")
        lines.extend(f"  {name:<20} {value}" for name, value in details(v))
    return lines


def as_json(report: Report) -> dict[str, Any]:
    """Raw numbers for programs: bytes as integers, LSNs as text."""
    def slot_json(v: Verdict) -> dict[str, Any]:
        data = asdict(v.slot)
        data["unconfirmed_bytes"] = data.pop("lag_bytes")  # the JSON name since 0.1
        for key in ("restart_lsn", "confirmed_flush_lsn"):
            data[key] = None if data[key] is None else format_lsn(data[key])
        data["status"] = v.health.name
        data["reasons"] = list(v.reasons)
        return data

    return {
        "status": report.health.name,
        "exit_code": int(report.health),
        "summary": summary(report),
        "missing": report.missing,
        "database": report.database,
        "thresholds": asdict(report.thresholds),
        "slots": [slot_json(v) for v in report.verdicts],
    }
