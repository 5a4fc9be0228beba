"""Dead letters: events the receiver refused or that were given up, in a JSON-lines file for ``replay``."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from wal2http.decode.events import Event, encode
from wal2http.decode.values import JsonText
from wal2http.delivery.lines import LineFile
from wal2http.delivery.parking import ParkedRows, parse, record_of
from wal2http.errors import ConfigError

RESPONSE_EXCERPT = 500


class DeadLetterFile:
    """Appends one JSON line per refused event, fsynced before anything past it is confirmed.

    A full disk raises TransientDeliveryError (the deliverer waits and tries again), a file that
    cannot be written FileUnwritable; either way the file keeps only whole lines.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._out = LineFile(path, "--dead-letter-path")
        # A shared lock tells `wal2http replay` that this file is still being written.
        try:
            fcntl.flock(self._out.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            self._out.close()
            raise ConfigError(f"--dead-letter-path {path!r} is being replayed; "
                              "start again when 'wal2http replay' is done") from None
        # The rows of the events already in the file stay parked: the file is what survives a restart.
        try:
            self.parked = parked_in(path)
        except ConfigError:
            self._out.close()
            raise

    def append(self, event: Event, reason: str, status: int | None, response: str) -> None:
        entry = {
            "dead_lettered_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "event_id": event.id,
            "reason": reason,
            "status": status,
            "response": response[:RESPONSE_EXCERPT],
            "event": orjson.Fragment(event.body),
        }
        self._out.append(orjson.dumps(entry) + b"\n", f"dead letter {event.id}")
        self.parked.written(event.id, record_of(event))

    def close(self) -> None:
        self._out.close()


@dataclass(frozen=True)
class ReplayLine:
    """One line of a replay input: the event to send, as exactly as it was first sent."""

    number: int
    event: Event
    dead_letter: bool
    # What a dead letter says about the refusal (None on a line of a capture).
    reason: str | None = None
    status: int | None = None
    dead_lettered_at: str | None = None

    @property
    def table(self) -> str | None:
        schema, table = self.event.record.get("schema"), self.event.record.get("table")
        return None if table is None else f"{schema}.{table}" if schema is not None else str(table)

    def as_json(self) -> dict[str, Any]:
        """The listing of ``replay --dry-run --json``."""
        return {"line": self.number, "id": self.event.id, "table": self.table, "op": self.event.op,
                "status": self.status, "reason": self.reason, "dead_lettered_at": self.dead_lettered_at}


def parked_in(path: str) -> ParkedRows:
    """What a dead-letter file parks (for ``slot status``); an absent file parks nothing."""
    parked = ParkedRows()
    for number, raw in _numbered_lines(path, missing_ok=True):
        try:
            entry = parse(raw)
            record = entry["event"] if "event" in entry and "reason" in entry else entry
            parked.written(str(record["id"]), record)
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"{path}:{number}: not a dead letter (a JSON object with an \"event\" "
                              "that has an \"id\")") from None
    return parked


def read_lines(path: str) -> Iterator[ReplayLine]:
    """Events from a dead-letter file or a ``file`` sink capture; raises ConfigError on a bad line."""
    for number, raw in _numbered_lines(path):
        yield _parse(raw, number, path)


def _numbered_lines(path: str, *, missing_ok: bool = False) -> Iterator[tuple[int, bytes]]:
    """The file's non-blank lines with their line numbers; ConfigError when it cannot be read."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as e:
        if missing_ok and isinstance(e, FileNotFoundError):
            return
        raise ConfigError(f"cannot read {path!r}: {e.strerror}") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            if raw.strip():
                yield number, raw


def _parse(raw: bytes, number: int, path: str) -> ReplayLine:
    try:
        # Numbers stay as their original text, so re-encoding keeps every digit.
        value: Any = json.loads(raw, parse_float=JsonText, parse_int=JsonText)
    except ValueError as e:
        raise ConfigError(f"{path}:{number}: not a JSON object: {e}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}:{number}: not a JSON object")
    dead_letter = "event" in value and "reason" in value
    record = value["event"] if dead_letter else value
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        raise ConfigError(f"{path}:{number}: no event with an \"id\" on this line")
    if not dead_letter:
        return ReplayLine(number, _event(record), False)
    status = value.get("status")
    return ReplayLine(number, _event(record), True, reason=str(value["reason"]),
                      status=int(status) if isinstance(status, str) and status.isdigit() else None,
                      dead_lettered_at=None if value.get("dead_lettered_at") is None
                      else str(value["dead_lettered_at"]))


def _event(record: dict[str, Any]) -> Event:
    return Event(
        id=record["id"], op=str(record.get("op", "")), xid=None, commit_lsn=0, commit_time_us=0,
        seq=0, record=record, body=encode(record),
    )
