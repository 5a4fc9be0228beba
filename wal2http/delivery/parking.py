"""Rows parked behind a dead letter: their later changes follow it into the file, never past it; pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from wal2http.decode.events import Event

# Rows (keys, and whole tables after a truncate) parked at once; past it run halts instead of
# holding an ever larger set in memory: replaying the dead-letter file is the cure.
PARKED_ROWS_MAX = 100_000

Table = tuple[str, str]  # (schema, table)


def canonical(value: Any) -> str:
    """One text per key, whatever the order of its columns."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


# Values that read back from an event's JSON as themselves (JsonText, arrays and objects do not).
_PLAIN = frozenset({str, int, float, bool, type(None)})
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # orjson reads a larger integer back as a float


def _plain(value: Any) -> bool:
    return type(value) in _PLAIN and (type(value) is not int or _INT_MIN <= value <= _INT_MAX)


def record_of(event: Event) -> Mapping[str, Any]:
    """The event as a key comparison needs it: its key compares equal to the same key read from the file.

    Keys of plain values (text, integers, booleans) are taken from the record as built (a
    microsecond); any other key is read back from the body, as the file's lines are.
    """
    record = event.record
    key, old = record.get("key"), record.get("old")
    if key is None or (isinstance(key, dict) and all(_plain(v) for v in key.values())
                       and (not isinstance(old, dict) or all(_plain(old.get(name)) for name in key))):
        return record
    return parse(event.body)


def parse(body: bytes) -> dict[str, Any]:
    """An event (or a dead-letter line) read back from its JSON; ValueError when it is not an object."""
    value = orjson.loads(body)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def rows_text(n: int) -> str:
    return "1 row" if n == 1 else f"{n} rows"


@dataclass(frozen=True)
class RowsOf:
    """The rows one event changes: keys of one table, or the whole table (a truncate)."""

    table: Table
    keys: tuple[str, ...] = ()
    whole_table: bool = False


def rows_of(record: Mapping[str, Any]) -> RowsOf | None:
    """The rows an event changes; None for an event of no row (a message).

    An update that changed the key changes two rows: the old key's and the new key's.
    A row is known by its ``key`` as the event carries it (every column for a table without one).
    """
    schema, table = record.get("schema"), record.get("table")
    if not isinstance(schema, str) or not isinstance(table, str):
        return None
    op = record.get("op")
    if op == "truncate":
        return RowsOf((schema, table), whole_table=True)
    key = record.get("key")
    if not isinstance(key, dict):
        key = {}
    keys = [canonical(key)]
    old = record.get("old")
    if op == "update" and key and isinstance(old, dict) and all(name in old for name in key):
        old_key = canonical({name: old[name] for name in key})
        if old_key != keys[0]:
            keys.append(old_key)
    return RowsOf((schema, table), tuple(keys))


class ParkedRows:
    """The rows with an event in the dead-letter file, and the ids of the events there.

    Built from the file at start and kept up to date as lines are written, so a restart
    parks exactly what the file says.
    """

    def __init__(self) -> None:
        self._keys: dict[Table, set[str]] = {}
        self._tables: set[Table] = set()
        self._size = 0
        self.ids: set[str] = set()  # events in the file: one coming again (a restart) is not written twice
        self.lines = 0  # lines in the file

    def __len__(self) -> int:
        """Parked rows, a whole table counting as one."""
        return self._size

    def touches(self, table: Table) -> bool:
        """Whether any row of ``table`` is parked: when not, an event of it needs no closer look."""
        return table in self._keys or table in self._tables

    def holds(self, rows: RowsOf) -> bool:
        """Whether an event changing ``rows`` must wait behind a dead letter."""
        if rows.table in self._tables:
            return True
        keys = self._keys.get(rows.table)
        if not keys:
            return False
        return rows.whole_table or any(key in keys for key in rows.keys)

    def new_rows(self, rows: RowsOf) -> int:
        """How many entries parking ``rows`` would add."""
        if rows.whole_table:
            return 0 if rows.table in self._tables else 1
        if rows.table in self._tables:
            return 0
        keys = self._keys.get(rows.table, set())
        return sum(1 for key in set(rows.keys) if key not in keys)

    def park(self, rows: RowsOf) -> None:
        self._size += self.new_rows(rows)
        if rows.whole_table:
            self._tables.add(rows.table)
        elif rows.table not in self._tables:
            self._keys.setdefault(rows.table, set()).update(rows.keys)

    def written(self, event_id: str, record: Mapping[str, Any]) -> None:
        """A line for this event is in the file: its rows are parked."""
        self.ids.add(event_id)
        self.lines += 1
        rows = rows_of(record)
        if rows is not None:
            self.park(rows)
