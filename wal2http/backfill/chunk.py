"""One chunk between its low and high watermark: the selected rows, less those whose key changed meanwhile.

A chunk also carries rows read again by key: rows an earlier chunk dropped for a change that lacked
their large (TOASTed) values, and with ``--reselect-toast`` rows of any update that lacked them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from wal2http.decode.pgoutput import ColumnValue
from wal2http.pg.backfill_model import Row, TableSpec, Task

KeyText = tuple[str | None, ...]  # key column texts as PostgreSQL prints them


def identity(names: Iterable[str], row: Mapping[str, Any]) -> bytes:
    """A hashable form of a row's key values (JSON values as events carry them)."""
    # JsonText (a str subclass) goes through default=str, the same way on both sides.
    return orjson.dumps([row.get(name) for name in names], option=orjson.OPT_PASSTHROUGH_SUBCLASS, default=str)


def change_identities(key_names: Iterable[str], record: Mapping[str, Any]) -> list[bytes]:
    """The keys a change event touches: its key, and its old row's (a key change, a delete)."""
    names = tuple(key_names)
    return [identity(names, side) for side in (record.get("key"), record.get("old")) if side]


def lacks_toast(record: Mapping[str, Any]) -> bool:
    """An update that did not carry some unchanged large (TOASTed) value of its row."""
    return record["op"] == "update" and bool(record["unchanged_toast"])


def is_key_change(record: Mapping[str, Any]) -> bool:
    key, old = record["key"], record["old"]
    return old is not None and any(old.get(name) != value for name, value in key.items())


def key_positions(spec: TableSpec) -> tuple[int, ...]:
    """Where the key columns are in a row of the table's published columns."""
    positions = {c.name: i for i, c in enumerate(spec.columns)}
    return tuple(positions[name] for name in spec.key)


def key_text(spec: TableSpec, values: tuple[ColumnValue, ...]) -> KeyText | None:
    """The key column texts of a streamed row (its columns in the table's published order); None if unusable."""
    if len(values) != len(spec.columns):
        return None  # the table changed since it was described
    texts: list[str | None] = []
    for i in key_positions(spec):
        value = values[i]
        if value is not None and not isinstance(value, str):
            return None  # a binary or unchanged TOASTed key value: it cannot be looked up by text
        texts.append(value)
    return tuple(texts)


class Chunk:
    """Rows selected in key order; changes seen in the stream after the low mark was written drop theirs.

    Tracking starts when the low mark is written, not when the stream reaches it: wider than the
    window between the two marks, so a transaction whose commit record precedes the low mark but
    which the select did not see yet (commit-visibility race) is still caught. A row dropped for a
    change that lacked its TOASTed values is named by ``to_read_again``: the receiver has no whole
    copy of it.
    """

    def __init__(self, task: Task | None, spec: TableSpec, number: int, token: str, rows: list[Row],
                 complete: bool, rereads: list[Row] | None = None, taken: list[bytes] | None = None) -> None:
        self.task = task  # None: a chunk of rows read again only (--reselect-toast)
        self.spec = spec
        self.number = number
        self.token = token
        self.rows = rows
        self.complete = complete  # the rows reach the end of the table
        self.rereads = rereads or []  # rows read again by key
        self.taken = taken or []  # identities of the keys those were read for
        self.truncated = False
        self._changed: set[bytes] = set()
        # Changed meanwhile by an update lacking TOASTed values: its key and row as streamed.
        self._lacking: dict[bytes, tuple[Mapping[str, Any], tuple[ColumnValue, ...]]] = {}
        self._key_positions = key_positions(spec)

    @property
    def oid(self) -> int:
        return self.spec.oid

    def observe(self, record: Mapping[str, Any], new: tuple[ColumnValue, ...] | None = None) -> None:
        """A change event of this chunk's table: its old and new keys are no longer ours to send.

        ``new`` is the update's row as streamed, for the key texts of a row to read again.
        """
        self._changed.update(change_identities(self.spec.key, record))
        if new is not None and lacks_toast(record):
            self._lacking[identity(self.spec.key, record["key"])] = (record["key"], new)

    def truncate(self) -> None:
        self.truncated = True

    def keep(self, key: Mapping[str, Any]) -> bool:
        """Whether a selected row (by its converted key) is still the row's value at the high mark."""
        return not self.truncated and identity(self.spec.key, key) not in self._changed

    def to_read_again(self, key: Mapping[str, Any]) -> tuple[Mapping[str, Any], tuple[ColumnValue, ...]] | None:
        """For a dropped row: the key and streamed row of the change lacking its TOASTed values that dropped it."""
        return self._lacking.get(identity(self.spec.key, key))

    @property
    def changed(self) -> int:
        return len(self._changed)

    @property
    def last_key(self) -> tuple[str | None, ...] | None:
        """Key column texts of the last selected row: where the next chunk starts."""
        if not self.rows:
            return self.task.last_key if self.task is not None else None
        last = self.rows[-1]
        return tuple(last[i] for i in self._key_positions)
