"""Backfill records: request states, watermarks, and the table description a chunk select needs."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from wal2http.decode.pgoutput import Column, Relation

# pg_logical_emit_message() prefix of the watermarks; never delivered as a 'message' event.
WATERMARK_PREFIX = "wal2http.backfill"
# The table requests and progress live in; created by whoever requests a backfill first.
REQUESTS_SCHEMA, REQUESTS_TABLE = "public", "wal2http_backfill"

Row = tuple[str | None, ...]  # a selected row: column texts as PostgreSQL prints them, None for NULL


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

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"

    def as_json(self) -> dict[str, Any]:
        def time(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {"id": self.id, "request": self.request, "slot": self.slot, "table": self.name,
                "where": self.where, "state": self.state.value, "rows_sent": self.rows_sent,
                "rows_estimated": self.rows_estimated, "chunks": self.chunks, "reason": self.reason,
                "requested_at": time(self.requested_at), "started_at": time(self.started_at),
                "finished_at": time(self.finished_at)}


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

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"

    def relation(self) -> Relation:
        """The Relation pgoutput would send for this table, key flags on the identity columns."""
        key = set(self.key)
        columns = tuple(Column(c.name, c.type_oid, c.type_modifier, c.name in key) for c in self.columns)
        return Relation(self.oid, self.schema, self.table, self.replica_identity, columns)

    def shape(self) -> tuple[object, ...]:
        """What must not change while a table is backfilled."""
        return (self.oid, tuple((c.name, c.type_oid) for c in self.columns), self.key, self.row_filter)
