"""One chunk between its low and high watermark: the selected rows, less those whose key changed meanwhile."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from wal2http.pg.backfill_model import Row, TableSpec, Task


def identity(names: Iterable[str], row: Mapping[str, Any]) -> bytes:
    """A hashable form of a row's key values (JSON values as events carry them)."""
    # JsonText (a str subclass) goes through default=str, the same way on both sides.
    return orjson.dumps([row.get(name) for name in names], option=orjson.OPT_PASSTHROUGH_SUBCLASS, default=str)


def change_identities(key_names: Iterable[str], record: Mapping[str, Any]) -> list[bytes]:
    """The keys a change event touches: its key, and its old row's (a key change, a delete)."""
    names = tuple(key_names)
    return [identity(names, side) for side in (record.get("key"), record.get("old")) if side]


class Chunk:
    """Rows selected in key order; changes seen in the stream after the low mark was written drop theirs.

    Tracking starts when the low mark is written, not when the stream reaches it: wider than the
    window between the two marks, so a transaction whose commit record precedes the low mark but
    which the select did not see yet (commit-visibility race) is still caught.
    """

    def __init__(self, task: Task, spec: TableSpec, number: int, token: str, rows: list[Row],
                 complete: bool) -> None:
        self.task = task
        self.spec = spec
        self.number = number
        self.token = token
        self.rows = rows
        self.complete = complete  # fewer rows than asked for: the table ends with this chunk
        self.truncated = False
        self._changed: set[bytes] = set()
        positions = {c.name: i for i, c in enumerate(spec.columns)}
        self._key_positions = tuple(positions[name] for name in spec.key)

    @property
    def oid(self) -> int:
        return self.spec.oid

    def observe(self, record: Mapping[str, Any]) -> None:
        """A change event of this chunk's table: its old and new keys are no longer ours to send."""
        self._changed.update(change_identities(self.spec.key, record))

    def truncate(self) -> None:
        self.truncated = True

    def keep(self, key: Mapping[str, Any]) -> bool:
        """Whether a selected row (by its converted key) is still the row's value at the high mark."""
        return not self.truncated and identity(self.spec.key, key) not in self._changed

    @property
    def changed(self) -> int:
        return len(self._changed)

    @property
    def last_key(self) -> tuple[str | None, ...] | None:
        """Key column texts of the last selected row: where the next chunk starts."""
        if not self.rows:
            return self.task.last_key
        last = self.rows[-1]
        return tuple(last[i] for i in self._key_positions)
