"""Turn decoded pgoutput messages into change events and their JSON envelope."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson

from wal2http.decode.pgoutput import (
    UNCHANGED,
    Begin,
    ColumnValue,
    Delete,
    Insert,
    Message,
    Relation,
    Truncate,
    Type,
    Update,
)
from wal2http.decode.values import Converter, JsonText, converter_for
from wal2http.errors import DecodeError
from wal2http.lsn import format_lsn

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True)  # not frozen, like the pgoutput records: one is built per row
class Event:
    """One change, encoded once: ``body`` is exactly what a sink sends; read-only."""

    id: str
    op: str
    xid: int | None
    commit_lsn: int
    commit_time_us: int
    seq: int
    record: dict[str, Any]
    body: bytes


def _embed(value: object) -> orjson.Fragment:
    if isinstance(value, JsonText):
        return orjson.Fragment(str(value))
    raise TypeError(f"cannot encode {type(value).__name__}")


def encode(record: dict[str, Any]) -> bytes:
    """An event's JSON bytes; json/jsonb column values are embedded exactly as PostgreSQL sent them."""
    return orjson.dumps(record, default=_embed, option=orjson.OPT_PASSTHROUGH_SUBCLASS)


def event_id(commit_lsn: int, seq: int) -> str:
    """Stable id: the same change gets the same id on every delivery, across restarts."""
    return f"{commit_lsn:016X}-{seq}"


def format_timestamp_us(us: int) -> str:
    """RFC 3339 UTC with microseconds, e.g. ``2026-11-28T01:02:03.456789Z``."""
    seconds, micros = divmod(us, 1_000_000)
    return f"{_utc_second(seconds)}.{micros:06d}Z"


@lru_cache(maxsize=64)
def _utc_second(seconds: int) -> str:
    # strftime took a tenth of the time of a stream of single-row transactions; their commit
    # times mostly share a second.
    return (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")


@dataclass(frozen=True)
class RelationFacts:
    """What the catalogue says about a table that pgoutput does not (read once per Relation message)."""

    # The row identity (primary key, else replica identity index); None: pgoutput's key flags, which
    # under REPLICA IDENTITY FULL flag every column.
    key: tuple[str, ...] | None = None
    # Domain (or array-of-domain) type OID -> the built-in type OID it converts as.
    base_types: Mapping[int, int] = field(default_factory=dict)
    hidden: bool = False  # wal2http's own table: its changes are not events


class _RelationInfo:
    """A Relation with everything the hot path needs precomputed."""

    __slots__ = ("converters", "hidden", "key_names", "names", "relation")

    def __init__(self, relation: Relation, type_names: dict[int, str], facts: RelationFacts | None = None) -> None:
        self.relation = relation
        self.names = tuple(c.name for c in relation.columns)
        bases = facts.base_types if facts is not None else {}
        self.converters: tuple[Converter, ...] = tuple(
            converter_for(bases[c.type_oid]) if c.type_oid in bases
            else converter_for(c.type_oid, type_names.get(c.type_oid))
            for c in relation.columns
        )
        if facts is not None and facts.key is not None:
            key = set(facts.key)
            self.key_names = tuple(name for name in self.names if name in key)
        else:
            # Without a primary key or replica identity index a row has no identity but its values: every
            # column, as under REPLICA IDENTITY FULL. pgoutput flags none under DEFAULT or NOTHING, and an
            # empty key would make a receiver upserting by it merge every row of the table into one.
            self.key_names = tuple(c.name for c in relation.columns if c.is_key) or self.names
        self.hidden = facts is not None and facts.hidden

    def key_of(self, row: dict[str, Any]) -> dict[str, Any]:
        """The replica identity columns of a row (those it has: an unchanged TOAST value is absent)."""
        return {name: row[name] for name in self.key_names if name in row}


class EventBuilder:
    """Keeps the relation cache and the open transaction; builds events from changes.

    ``catalog`` (optional) tells, once per Relation message, the row identity and the domains'
    base types (wal2http.pg.catalog reads them); ``hidden`` names tables whose changes are no events.
    """

    def __init__(self, catalog: Callable[[Relation], RelationFacts] | None = None,
                 hidden: Iterable[tuple[str, str]] = ()) -> None:
        self.catalog = catalog
        self.hidden = frozenset(hidden)
        self._relations: dict[int, _RelationInfo] = {}
        self._type_names: dict[int, str] = {}
        self.in_transaction = False
        self._xid: int | None = None
        self._commit_lsn = 0
        self._commit_lsn_text = format_lsn(0)
        self._id_prefix = ""
        self._commit_time_us = 0
        self._commit_time = ""
        self._seq = 0

    def begin(self, msg: Begin) -> None:
        self.in_transaction = True
        self._xid = msg.xid
        self._commit_lsn = msg.commit_lsn
        self._commit_lsn_text = format_lsn(msg.commit_lsn)
        self._id_prefix = f"{msg.commit_lsn:016X}-"  # event_id() of this transaction, less the seq
        self._commit_time_us = msg.commit_time_us
        self._commit_time = format_timestamp_us(msg.commit_time_us)
        self._seq = 0

    def commit(self) -> None:
        self.in_transaction = False

    def relation(self, msg: Relation) -> None:
        # A later Relation message for the same OID means the table changed: replace it.
        self._relations[msg.oid] = self._describe(msg)

    def _describe(self, msg: Relation) -> _RelationInfo:
        if (msg.schema, msg.table) in self.hidden:
            return _RelationInfo(msg, self._type_names, RelationFacts(hidden=True))
        facts = self.catalog(msg) if self.catalog is not None else None
        return _RelationInfo(msg, self._type_names, facts)

    @property
    def commit_lsn(self) -> int:
        """The open (or last) transaction's commit LSN."""
        return self._commit_lsn

    def reads(self, relation: Relation, facts: RelationFacts, type_names: Mapping[int, str],
              rows: Iterable[tuple[ColumnValue, ...]], lsn: int,
              keep: Callable[[dict[str, Any]], bool] | None = None) -> Iterator[Event]:
        """``read`` events of backfilled rows (column texts in ``relation``'s order), in the open transaction.

        The very converters and envelope of streamed changes; ``keep`` sees each row's key and
        decides whether the row is sent.
        """
        info = _RelationInfo(relation, {**self._type_names, **type_names}, facts)
        for values in rows:
            new, toast = self._row(info, values)
            key = info.key_of(new)
            if keep is None or keep(key):
                yield self._event("read", lsn, relation, key, new, None, toast)

    def type(self, msg: Type) -> None:
        self._type_names[msg.oid] = msg.name

    def changes(self, msg: Insert | Update | Delete | Truncate | Message, lsn: int) -> list[Event]:
        """Events for one change message; ``lsn`` is the message's WAL position."""
        if isinstance(msg, Truncate):
            if self.hidden and any(self._info(oid, lsn).hidden for oid in msg.relation_oids):
                msg = Truncate(tuple(oid for oid in msg.relation_oids if not self._info(oid, lsn).hidden),
                               msg.cascade, msg.restart_identity)
            return [
                self._event(
                    "truncate",
                    lsn,
                    self._info(oid, lsn).relation,
                    None,
                    None,
                    None,
                    [],
                    {"cascade": msg.cascade, "restart_identity": msg.restart_identity},
                )
                for oid in msg.relation_oids
            ]
        if isinstance(msg, Message):
            return [self._message(msg, lsn)]
        info = self._info(msg.relation_oid, lsn)
        if info.hidden:
            return []
        try:
            return [self._row_event(info, msg, lsn)]
        except ValueError as e:
            rel = info.relation
            raise DecodeError(f"bad value in {rel.schema}.{rel.table}: {e}", lsn) from e

    def _info(self, oid: int, lsn: int) -> _RelationInfo:
        info = self._relations.get(oid)
        if info is None:
            raise DecodeError(f"change for relation OID {oid} before its Relation message", lsn)
        return info

    def _row_event(self, info: _RelationInfo, msg: Insert | Update | Delete, lsn: int) -> Event:
        rel = info.relation
        key_of = info.key_of
        if isinstance(msg, Insert):
            new, toast = self._row(info, msg.new)
            return self._event("insert", lsn, rel, key_of(new), new, None, toast)
        if isinstance(msg, Update):
            new, toast = self._row(info, msg.new)
            if msg.old is not None:
                old, _ = self._row(info, msg.old)
                # REPLICA IDENTITY FULL sends unchanged TOASTed values inline in the old row.
                toast = [name for name in toast if not _fill(new, old, name)]
            elif msg.key is not None:  # a key column changed: PostgreSQL sent the old key
                old = key_of(self._row(info, msg.key)[0])
            else:
                old = key_of(new)
            return self._event("update", lsn, rel, key_of(new), new, old, toast)
        if msg.old is not None:
            old, _ = self._row(info, msg.old)
        else:
            assert msg.key is not None
            old = key_of(self._row(info, msg.key)[0])
        return self._event("delete", lsn, rel, key_of(old), None, old, [])

    @staticmethod
    def _row(info: _RelationInfo, values: tuple[ColumnValue, ...]) -> tuple[dict[str, Any], list[str]]:
        row: dict[str, Any] = {}
        toast: list[str] = []
        for name, convert, value in zip(info.names, info.converters, values, strict=False):
            if value is None:
                row[name] = None
            elif value is UNCHANGED:
                toast.append(name)
            else:
                row[name] = convert(value)  # type: ignore[arg-type]
        return row, toast

    def _message(self, msg: Message, lsn: int) -> Event:
        try:
            content: str = msg.content.decode()
            is_base64 = False
        except UnicodeDecodeError:
            content = base64.b64encode(msg.content).decode()
            is_base64 = True
        extra = {
            "prefix": msg.prefix,
            "transactional": msg.transactional,
            "content": content,
            "content_base64": is_base64,
        }
        if msg.transactional and self.in_transaction:
            return self._event("message", lsn, None, None, None, None, [], extra)
        # A non-transactional message stands alone: its own LSN identifies it.
        eid = event_id(msg.lsn, 0)
        record = envelope(eid, "message", None, None, None, None, [], format_lsn(msg.lsn), None, None, None, 0)
        record.update(extra)
        return Event(eid, "message", None, msg.lsn, 0, 0, record, encode(record))

    def _event(
        self,
        op: str,
        lsn: int,
        rel: Relation | None,
        key: dict[str, Any] | None,
        new: dict[str, Any] | None,
        old: dict[str, Any] | None,
        toast: list[str],
        extra: dict[str, Any] | None = None,
    ) -> Event:
        self._seq += 1
        eid = f"{self._id_prefix}{self._seq}"  # event_id(), with the per-transaction part made once
        record = envelope(eid, op, rel, key, new, old, toast, format_lsn(lsn), self._commit_lsn_text,
                          self._commit_time, self._xid, self._seq)
        if extra:
            record.update(extra)
        try:
            body = encode(record)
        except TypeError as e:  # a converter returned something JSON cannot hold
            raise DecodeError(f"cannot encode event {eid}: {e}", lsn) from e
        return Event(eid, op, self._xid, self._commit_lsn, self._commit_time_us, self._seq, record, body)


def envelope(eid: str, op: str, rel: Relation | None, key: dict[str, Any] | None, new: dict[str, Any] | None,
             old: dict[str, Any] | None, toast: list[str], lsn: str, commit_lsn: str | None,
             commit_time: str | None, xid: int | None, seq: int) -> dict[str, Any]:
    """The event's 13 keys, in the order receivers see them; ``op``-specific keys are added after."""
    return {
        "id": eid,
        "op": op,
        "schema": rel.schema if rel else None,
        "table": rel.table if rel else None,
        "key": key,
        "new": new,
        "old": old,
        "unchanged_toast": toast,
        "lsn": lsn,
        "commit_lsn": commit_lsn,
        "commit_time": commit_time,
        "xid": xid,
        "seq": seq,
    }


def _fill(new: dict[str, Any], old: dict[str, Any], name: str) -> bool:
    if name in old:
        new[name] = old[name]
        return True
    return False
