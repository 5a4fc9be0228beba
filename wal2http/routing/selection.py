"""Apply ``--filter`` and ``--columns`` to events before they are batched, for every sink."""

from __future__ import annotations

import logging
from typing import Any

from wal2http.config.routing import Expression, RoutingConfig
from wal2http.decode.events import Event, encode

logger = logging.getLogger(__name__)

MAX_WARNED = 100
SHAPE = frozenset({"op", "schema", "table"})  # what an event's answer may depend on to be remembered
MAX_ANSWERS = 10_000  # distinct evaluation errors logged; more would flood the log with one mistake


def _changed(record: dict[str, Any]) -> list[str]:
    """Columns whose value differs between ``old`` and ``new`` (an update under REPLICA IDENTITY FULL).

    Every column of an insert, none of a delete; an unchanged TOAST value is unchanged by definition.
    """
    new, old = record["new"], record["old"]
    if new is None:
        return []
    if old is None:
        return list(new)
    return [name for name, value in new.items() if name not in old or old[name] != value]


class Filter:
    """A compiled expression evaluated per event with only the variables it reads."""

    def __init__(self, expression: Expression) -> None:
        self.expression = expression
        self._execute = expression.program.execute
        self._plain = tuple(v for v in expression.variables if v != "changed")
        self._changed = "changed" in expression.variables
        self._warned: set[str] = set()
        # An expression of the table and the op alone has one answer per (schema, table, op): asking CEL
        # once per event cost 3-5 us, a dictionary look-up costs a tenth of one.
        self._answers: dict[tuple[Any, ...], bool] | None = {} if set(self._plain) <= SHAPE else None

    def matches(self, record: dict[str, Any]) -> bool:
        """True only when the expression is true: false, any other value, or an error do not match.

        An error is, for instance, reading a column absent from ``new`` (an unchanged TOAST value, or
        ``new`` of a delete): unknown is neither equal nor different, so the event is not sent.
        """
        answers = self._answers
        if answers is None:
            return self._evaluate(record)
        shape = tuple([record[name] for name in self._plain])
        answer = answers.get(shape)
        if answer is None:
            if len(answers) >= MAX_ANSWERS:
                answers.clear()
            answer = answers[shape] = self._evaluate(record)
        return answer

    def _evaluate(self, record: dict[str, Any]) -> bool:
        context = {name: record[name] for name in self._plain}
        if self._changed:
            context["changed"] = _changed(record)
        try:
            return self._execute(context) is True
        except Exception as e:  # the binding raises several kinds; every one means "no match"
            self._warn(record, e)
            return False

    def _warn(self, record: dict[str, Any], error: Exception) -> None:
        text = f"{type(error).__name__}: {error}".split("\n", 1)[0]
        if text in self._warned or len(self._warned) >= MAX_WARNED:
            return
        self._warned.add(text)
        logger.warning("--filter %r failed on event %s (%s.%s %s): %s; the event is not sent (logged once per "
                       "error)", self.expression.text, record["id"], record["schema"], record["table"],
                       record["op"], text)


class Selection:
    """``--filter`` then ``--columns``: the event to batch, or None when it is not sent.

    The filter sees the whole row, so it may read a column that ``--columns`` leaves out.
    """

    def __init__(self, config: RoutingConfig) -> None:
        self.filter = Filter(config.filter) if config.filter is not None else None
        self.columns = {(c.schema, c.table): frozenset(c.names) for c in config.columns}
        self.dropped = 0  # events the filter did not let through

    def apply(self, event: Event) -> Event | None:
        record = event.record
        if self.filter is not None and not self.filter.matches(record):
            self.dropped += 1
            return None
        if self.columns:
            keep = self.columns.get((record["schema"], record["table"]))
            if keep is not None:
                return narrowed(event, keep)
        return event


def narrowed(event: Event, keep: frozenset[str]) -> Event:
    """The event with only the ``keep`` columns in ``new``, ``old`` and ``unchanged_toast``; the key whole."""
    record = dict(event.record)
    for part in ("new", "old"):
        row = record[part]
        if row is not None:
            record[part] = {name: value for name, value in row.items() if name in keep}
    record["unchanged_toast"] = [name for name in record["unchanged_toast"] if name in keep]
    return Event(event.id, event.op, event.xid, event.commit_lsn, event.commit_time_us, event.seq, record,
                 encode(record))
