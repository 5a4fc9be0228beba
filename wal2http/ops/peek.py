"""``slot peek``: the events the slot holds for ``run``, decoded as ``run`` decodes them, without consuming any."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from wal2http.config.sections import SourceConfig
from wal2http.decode import pgoutput
from wal2http.decode.events import Event, EventBuilder
from wal2http.errors import SlotMissing
from wal2http.lsn import format_lsn
from wal2http.pg.backfill_model import REQUESTS_SCHEMA, REQUESTS_TABLE, WATERMARK_PREFIX
from wal2http.pg.catalog import Catalog
from wal2http.pg.connection import LazyConnection, source_connection
from wal2http.pg.pending import UNTIL_PREFIX, peek_changes
from wal2http.pg.slot import find_slot

# Messages decoded per event asked for, at first (a transaction adds Begin, Commit and Relation messages);
# each further round decodes this many times more, until enough events or the end of what the slot holds.
FIRST_ROUND_PER_EVENT = 4
GROWTH = 4
ROUNDS = 6


@dataclass(frozen=True)
class Peeked:
    slot: str
    confirmed_lsn: str | None
    events: list[dict[str, Any]]  # exactly the JSON run would send
    more: bool  # the slot holds more events than these

    def as_json(self) -> dict[str, Any]:
        return {"slot": self.slot, "confirmed_lsn": self.confirmed_lsn, "events": self.events, "more": self.more}

    def lines(self) -> list[str]:
        n = len(self.events)
        head = (f"slot {self.slot}: {'the first ' if self.more else ''}{n} pending event{'s' if n != 1 else ''} "
                f"after {self.confirmed_lsn}, nothing consumed")
        if self.more:
            head += "; more follow (raise --limit)"
        return [head] + [_line(e) for e in self.events]


def _line(event: dict[str, Any]) -> str:
    where = f"{event['schema']}.{event['table']}" if event.get("table") else f"prefix={event.get('prefix')}"
    key = orjson.dumps(event["key"]).decode() if event.get("key") is not None else "-"
    return f"{event['id']}  {event['op']:<8} {where}  key={key}  commit {event['commit_lsn'] or event['lsn']}"


def peek(source: SourceConfig, limit: int) -> Peeked:
    """At most ``limit`` events the slot holds for ``run`` (with ``source.messages``, its messages too)."""
    catalog = LazyConnection(source.dsn.reveal(), require_tls=source.require_tls, purpose="peek")
    try:
        with source_connection(source) as conn:
            slot = find_slot(conn, source.slot)
            if slot is None:
                raise SlotMissing(f"replication slot {source.slot!r} does not exist")
            upto = FIRST_ROUND_PER_EVENT * (limit + 1)
            for _ in range(ROUNDS):
                builder = EventBuilder(Catalog(catalog), hidden=[(REQUESTS_SCHEMA, REQUESTS_TABLE)])
                events, messages = _decode(peek_changes(conn, source.slot, source.publication, upto), builder,
                                           limit + 1, source.messages)
                everything = messages < upto  # PostgreSQL stopped short of the number asked: the slot's end
                if len(events) > limit or everything:
                    break
                upto *= GROWTH
    finally:
        catalog.close()
    confirmed = slot.confirmed_flush_lsn
    return Peeked(source.slot, None if confirmed is None else format_lsn(confirmed),
                  [orjson.loads(e.body) for e in events[:limit]], len(events) > limit or not everything)


def _decode(changes: Iterable[tuple[int, bytes]], builder: EventBuilder, wanted: int,
            messages: bool) -> tuple[list[Event], int]:
    """The events of a run of pgoutput messages, as ``run`` builds them; stops at ``wanted`` events.

    Returns them and the number of messages read.
    """
    events: list[Event] = []
    read = 0
    for lsn, payload in changes:
        read += 1
        decoded = pgoutput.parse(payload, lsn)
        if isinstance(decoded, pgoutput.Begin):
            builder.begin(decoded)
        elif isinstance(decoded, pgoutput.Commit):
            builder.commit()
        elif isinstance(decoded, pgoutput.Relation):
            builder.relation(decoded)
        elif isinstance(decoded, pgoutput.Type):
            builder.type(decoded)
        elif isinstance(decoded, pgoutput.Origin):
            continue
        elif isinstance(decoded, pgoutput.Message):
            if messages and decoded.prefix not in (WATERMARK_PREFIX, UNTIL_PREFIX):
                events.extend(builder.changes(decoded, lsn))
        else:
            events.extend(builder.changes(decoded, lsn))
        if len(events) >= wanted:
            break
    return events, read
