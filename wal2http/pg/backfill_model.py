"""Backfill records: request states, watermarks, and the table description a chunk select needs."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from wal2http.decode.pgoutput import Column, Relation

# pg_logical_emit_message() prefix of the watermarks; never delivered as a 'message' event.
WATERMARK_PREFIX = "wal2http.backfill"
# The table requests and progress live in; created by whoever requests a backfill first. Its schema is
# wal2http's own (a role cannot create tables in public from PostgreSQL 15 on); 0.1 kept it in public.
REQUESTS_SCHEMA, REQUESTS_TABLE = "wal2http", "wal2http_backfill"
LEGACY_REQUESTS_SCHEMA = "public"

Row = tuple[str | None, ...]  # a selected row: column texts as PostgreSQL prints them, None for NULL
QualifiedName = tuple[str, str]  # (schema, name) of a catalogue object, never joined on "."


def display_name(schema: str, table: str) -> str:
    """``schema.table`` as ``--table`` takes it back: a part holding a dot or a double quote is quoted."""
    def part(name: str) -> str:
        if "." in name or '"' in name or not name or name != name.strip():
            return '"' + name.replace('"', '""') + '"'
        return name

    return f"{part(schema)}.{part(table)}"


def parse_table_name(text: str) -> list[tuple[str | None, str]]:
    """The (schema, table) pairs ``--table`` text can mean; ValueError when it is not a name.

    Parts are taken literally (case kept); a part in double quotes may hold dots (``""`` is a quote).
    Unquoted dots split: ``a.b.c`` may mean (a, b.c) or (a.b, c), both returned for the caller to
    look up; no schema (a single part) is (None, table), found on the search path.
    """
    parts: list[tuple[str, bool]] = []  # (text, quoted)
    i, n = 0, len(text)
    while i <= n:
        if i < n and text[i] == '"':
            j, name = i + 1, []
            while True:
                k = text.find('"', j)
                if k < 0:
                    raise ValueError(f"unbalanced double quote in table name {text!r}")
                name.append(text[j:k])
                if text[k + 1:k + 2] == '"':
                    name.append('"')
                    j = k + 2
                    continue
                break
            parts.append(("".join(name), True))
            i = k + 1
            if i < n and text[i] != ".":
                raise ValueError(f"a quoted name must be followed by '.' or end the table name {text!r}")
        else:
            k = text.find(".", i)
            k = n if k < 0 else k
            if '"' in text[i:k]:
                raise ValueError(f"a double quote may only start a part of table name {text!r}")
            parts.append((text[i:k], False))
            i = k
        if not parts[-1][0]:
            raise ValueError(f"empty part in table name {text!r}: use SCHEMA.TABLE or TABLE")
        i += 1  # past the dot (or past the end)
    if len(parts) == 1:
        return [(None, parts[0][0])]
    if len(parts) == 2:
        return [(parts[0][0], parts[1][0])]
    if any(quoted for _, quoted in parts):
        raise ValueError(f"table name {text!r} has more than two parts: quote a name holding a dot as a whole")
    names = [p for p, _ in parts]
    return [(".".join(names[:cut]), ".".join(names[cut:])) for cut in range(1, len(names))]


class State(StrEnum):
    """Where one table of a request stands."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (State.DONE, State.FAILED, State.CANCELLED)


class Mark(StrEnum):
    LOW = "low"
    HIGH = "high"


@dataclass(frozen=True)
class Watermark:
    """A low or high mark; ``token`` is new for every chunk, so marks of another process never match."""

    mark: Mark
    token: str
    task: int
    chunk: int

    def payload(self) -> str:
        return orjson.dumps({"mark": self.mark.value, "token": self.token, "task": self.task,
                             "chunk": self.chunk}).decode()

    @classmethod
    def parse(cls, content: bytes) -> Watermark | None:
        """The watermark a message carries; None for anything else (never raises)."""
        try:
            value = orjson.loads(content)
            return cls(Mark(value["mark"]), str(value["token"]), int(value["task"]), int(value["chunk"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


def new_token() -> str:
    return secrets.token_hex(8)


@dataclass(frozen=True)
class Task:
    """One table of a backfill request, as its row in the requests table says."""

    id: int
    request: int
    slot: str
    schema: str
    table: str
    where: str | None
    state: State
    last_key: tuple[str | None, ...] | None  # text of the key columns of the last confirmed row
    rows_sent: int = 0
    rows_estimated: int | None = None
    chunks: int = 0
    reason: str | None = None
    requested_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    shape: str | None = None  # TableSpec.signature() its last key was stored under

    @property
    def name(self) -> str:
        return display_name(self.schema, self.table)

    def as_json(self) -> dict[str, Any]:
        def time(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {"id": self.id, "request": self.request, "slot": self.slot, "table": self.name,
                "where": self.where, "state": self.state.value, "rows_sent": self.rows_sent,
                "rows_estimated": self.rows_estimated, "chunks": self.chunks, "reason": self.reason,
                "requested_at": time(self.requested_at), "started_at": time(self.started_at),
                "finished_at": time(self.finished_at)}


@dataclass(frozen=True)
class KeyColumn:
    """A column of the key index, and how that index orders it: the order a backfill pages in."""

    name: str
    collation: QualifiedName | None  # the index's collation for the column (None: not collatable)
    # The index's operator class's <, <=, =, >=, > (btree strategies 1 to 5) when it is not the type's
    # default class; None: the type's own operators.
    operators: tuple[QualifiedName, ...] | None
    identity: tuple[int, int]  # (collation OID, operator class OID): what the shape compares


@dataclass(frozen=True)
class TableSpec:
    """What a chunk select reads and how its rows become events: the published columns, the key, the filter."""

    oid: int
    schema: str
    table: str
    replica_identity: str
    columns: tuple[Column, ...]  # published columns, in attribute order (as pgoutput sends them)
    key: tuple[str, ...]  # the row identity (primary key, else replica identity index), in index order
    type_names: dict[int, str] = field(default_factory=dict)
    row_filter: str | None = None  # the publication's WHERE, as pg_publication_tables shows it
    key_index: int = 0  # OID of the index whose order the backfill pages in
    key_order: tuple[KeyColumn, ...] = ()  # its key columns (names as ``key``)
    only: bool = True  # read without inheritance children (they are published as tables of their own)

    @property
    def name(self) -> str:
        return display_name(self.schema, self.table)

    def relation(self) -> Relation:
        """The Relation pgoutput would send for this table, key flags on the identity columns."""
        key = set(self.key)
        columns = tuple(Column(c.name, c.type_oid, c.type_modifier, c.name in key) for c in self.columns)
        return Relation(self.oid, self.schema, self.table, self.replica_identity, columns)

    def shape(self) -> tuple[object, ...]:
        """What must not change while a table is backfilled: its name, columns, key and key order, filter."""
        return (self.oid, self.schema, self.table, tuple((c.name, c.type_oid) for c in self.columns), self.key,
                self.row_filter, self.key_index, tuple((k.name, *k.identity) for k in self.key_order))

    def same_but_key_order(self, other: TableSpec) -> bool:
        """Whether ``other`` differs from this only in how its key is ordered (index, collation, opclass)."""
        return self.shape()[:6] == other.shape()[:6]

    def signature(self) -> str:
        """The shape as stored with a request's progress: a last key means something only under it."""
        return hashlib.sha256(orjson.dumps(self.shape())).hexdigest()[:32]
