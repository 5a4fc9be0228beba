"""Backfill's pure parts: watermarks, the chunk's key filter, read events through the streaming converters."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from tests.support.events import event
from wal2http.backfill.chunk import Chunk, identity
from wal2http.decode.events import EventBuilder, RelationFacts
from wal2http.decode.pgoutput import Begin, Column, Insert, Relation, Update
from wal2http.pg.backfill_model import (
    KeyColumn,
    Mark,
    State,
    TableSpec,
    Task,
    Watermark,
    display_name,
    parse_table_name,
)

INT4, TEXT, INT4_ARRAY = 23, 25, 1007
DOMAIN, DOMAIN_ARRAY = 16_500, 16_501  # a domain over int4 and its array type


def spec(key: tuple[str, ...] = ("id",)) -> TableSpec:
    columns = (Column("id", INT4, -1, False), Column("region", TEXT, -1, False), Column("v", TEXT, -1, False))
    return TableSpec(16_400, "public", "items", "d", columns, key)


def task(last_key: tuple[str | None, ...] | None = None) -> Task:
    return Task(1, 1, "wal2http", "public", "items", None, State.RUNNING, last_key)


def test_watermarks_round_trip_and_anything_else_is_none() -> None:
    mark = Watermark(Mark.HIGH, "ab12", 7, 3)
    assert Watermark.parse(mark.payload().encode()) == mark
    for other in (b"", b"not json", b"{}", b'{"mark": "middle", "token": "x", "task": 1, "chunk": 1}', b"[1]"):
        assert Watermark.parse(other) is None


def test_a_change_drops_its_old_and_new_keys_only() -> None:
    rows = [("1", "eu", "a"), ("2", "eu", "b"), ("3", "us", "c"), ("4", "us", "d")]
    chunk = Chunk(task(), spec(), 1, "t", rows, complete=False)
    chunk.observe({"key": {"id": 2}, "old": None})
    chunk.observe({"key": {"id": 9}, "old": {"id": 3}})  # a key change away from 3
    assert [chunk.keep({"id": n}) for n in (1, 2, 3, 4, 9)] == [True, False, False, True, False]
    assert chunk.changed == 3
    assert chunk.last_key == ("4",)


def test_full_old_rows_are_reduced_to_the_key() -> None:
    chunk = Chunk(task(), spec(("region", "id")), 1, "t", [("1", "eu", "a")], complete=True)
    chunk.observe({"key": {"id": 1, "region": "eu"}, "old": {"id": 1, "region": "eu", "v": "x"}})
    assert not chunk.keep({"region": "eu", "id": 1})
    assert chunk.keep({"region": "us", "id": 1})
    assert chunk.last_key == ("eu", "1")  # in key (index) order, not column order


def test_truncate_drops_the_whole_chunk_and_an_empty_chunk_keeps_the_position() -> None:
    chunk = Chunk(task(("7",)), spec(), 2, "t", [("8", "eu", "a")], complete=False)
    chunk.truncate()
    assert not chunk.keep({"id": 8})
    assert Chunk(task(("7",)), spec(), 2, "t", [], complete=True).last_key == ("7",)


def test_identity_tells_json_text_from_numbers() -> None:
    assert identity(["id"], {"id": 1}) != identity(["id"], {"id": "1"})
    assert identity(["a", "b"], {"b": 2, "a": 1}) == identity(["a", "b"], {"a": 1, "b": 2})


def _builder(facts: RelationFacts) -> EventBuilder:
    builder = EventBuilder(catalog=lambda _relation: facts)
    builder.begin(Begin(0x1000, 1_700_000_000_000_000, 42))
    return builder


def test_read_events_use_the_streaming_converters_and_envelope() -> None:
    columns = (Column("id", INT4, -1, True), Column("d", DOMAIN, -1, False), Column("ds", DOMAIN_ARRAY, -1, False))
    relation = Relation(16_400, "public", "items", "d", columns)
    facts = RelationFacts(key=("id",), base_types={DOMAIN: INT4, DOMAIN_ARRAY: INT4_ARRAY})
    streamed = _builder(facts)
    streamed.relation(relation)
    (insert,) = streamed.changes(Insert(relation.oid, ("5", "6", "{7,8}")), 0x0F00)
    read = _builder(facts)
    (event,) = read.reads(relation, facts, {}, [("5", "6", "{7,8}")], 0x0F00)
    assert event.record["new"] == insert.record["new"] == {"id": 5, "d": 6, "ds": [7, 8]}
    assert event.record["op"] == "read" and event.record["old"] is None and event.record["key"] == {"id": 5}
    same = {k: v for k, v in insert.record.items() if k not in ("op",)}
    assert {k: v for k, v in event.record.items() if k != "op"} == same
    assert orjson.loads(event.body) == event.record


def test_reads_skip_rows_the_filter_refuses_without_using_a_seq() -> None:
    relation = Relation(16_400, "public", "items", "d", (Column("id", INT4, -1, True),))
    builder = _builder(RelationFacts(key=("id",)))
    events = list(builder.reads(relation, RelationFacts(key=("id",)), {}, [("1",), ("2",), ("3",)], 0,
                                keep=lambda key: key["id"] != 2))
    assert [(e.record["key"], e.seq) for e in events] == [({"id": 1}, 1), ({"id": 3}, 2)]


def test_the_catalogue_key_replaces_full_identity_flags() -> None:
    # REPLICA IDENTITY FULL: pgoutput flags every column as key; the primary key is the identity.
    columns = (Column("id", INT4, -1, True), Column("note", TEXT, -1, True))
    relation = Relation(16_400, "public", "audit", "f", columns)
    builder = _builder(RelationFacts(key=("id",)))
    builder.relation(relation)
    (update,) = builder.changes(Update(relation.oid, ("1", "a"), None, ("1", "b")), 0)
    assert update.record["key"] == {"id": 1} and update.record["old"] == {"id": 1, "note": "a"}
    plain = EventBuilder()
    plain.begin(Begin(0x1000, 0, 1))
    plain.relation(relation)
    (today,) = plain.changes(Update(relation.oid, ("1", "a"), None, ("1", "b")), 0)
    assert today.record["key"] == {"id": 1, "note": "b"}  # without the catalogue: pgoutput's flags


def test_wal2http_own_table_is_hidden() -> None:
    relation = Relation(16_401, "wal2http", "wal2http_backfill", "d", (Column("id", INT4, -1, True),))
    builder = EventBuilder(hidden=[("wal2http", "wal2http_backfill")])
    builder.begin(Begin(0x1000, 0, 1))
    builder.relation(relation)
    assert builder.changes(Insert(relation.oid, ("1",)), 0) == []


@pytest.mark.parametrize("state", list(State))
def test_states_know_when_they_are_over(state: State) -> None:
    assert state.finished == (state in (State.DONE, State.FAILED, State.CANCELLED))
    assert Task(1, 1, "s", "a", "b", None, state, None, requested_at=datetime(2026, 1, 1, tzinfo=UTC)
                ).as_json()["requested_at"] == "2026-01-01T00:00:00+00:00"


def test_only_changes_of_the_chunk_table_drop_rows() -> None:
    from wal2http.backfill.driver import Backfill, _Active
    from wal2http.decode.events import Event
    from wal2http.observe.metrics import Metrics
    from wal2http.pg.connection import LazyConnection

    driver = Backfill(LazyConnection("dbname=unused"), "wal2http", "wal2http", 10, Metrics())
    driver._active = _Active(task(), spec(), RelationFacts(key=("id",)), spec().relation(), 0, 0)
    driver.chunk = Chunk(task(), spec(), 1, "t", [("1", "eu", "a"), ("2", "eu", "b")], complete=True)

    def change(table: str, key: int, op: str = "update") -> Event:
        return event(seq=key, op=op, record={"schema": "public", "table": table, "key": {"id": key}, "old": None})

    driver.observe([change("other", 1), change("items", 2)])
    assert driver.chunk.keep({"id": 1}) and not driver.chunk.keep({"id": 2})
    driver.observe([change("other", 0, "truncate")])
    assert driver.chunk.keep({"id": 1})
    driver.observe([change("items", 0, "truncate")])
    assert not driver.chunk.keep({"id": 1})


def test_the_readme_shows_the_requests_table_as_wal2http_creates_it() -> None:
    from pathlib import Path

    from wal2http.pg.backfill import _CREATE

    readme = (Path(__file__).resolve().parents[2] / "README.rst").read_text()
    ddl = "CREATE TABLE IF NOT EXISTS wal2http.wal2http_backfill" + _CREATE.seq[2].string + ";"
    assert "\n".join("    " + line if line else "" for line in ddl.splitlines()) in readme


def test_the_requests_table_allows_exactly_the_states() -> None:
    """The DDL is the one place the states are written as SQL; every statement passes State values."""
    import re

    from wal2http.pg.backfill import _CREATE

    ddl = _CREATE.seq[2].string
    allowed = re.search(r"CHECK \(state IN \(([^)]*)\)\)", ddl)
    assert allowed is not None and allowed.group(1) == ", ".join(f"'{s.value}'" for s in State)
    assert f"DEFAULT '{State.QUEUED.value}'" in ddl


class _Unreachable:
    """A connection that must not be asked for: the step was not due."""

    def __init__(self) -> None:
        self.asked = 0

    def get(self) -> object:
        self.asked += 1
        from wal2http.errors import DatabaseError

        raise DatabaseError("unreachable")

    def close(self) -> None:
        pass


def test_the_next_chunk_waits_for_a_quiet_stream_but_not_for_ever() -> None:
    from wal2http.backfill.driver import MAX_DEFER_S, Backfill
    from wal2http.observe.metrics import Metrics

    now = [100.0]
    connection = _Unreachable()
    driver = Backfill(connection, "wal2http", "wal2http", 10, Metrics(), clock=lambda: now[0])  # type: ignore[arg-type]
    driver.step(0)  # quiet: polls for requests (here: the database is down, so it pauses)
    assert connection.asked == 1
    now[0] += 10  # past the pause after the error
    driver.step(0, quiet=True)
    assert connection.asked == 2
    now[0] += 10
    driver._stepped_at = now[0] - MAX_DEFER_S / 2
    driver.step(0, quiet=False)  # busy stream, stepped recently: changes first
    assert connection.asked == 2
    now[0] += MAX_DEFER_S
    driver.step(0, quiet=False)  # busy for too long: the backfill gets its turn anyway
    assert connection.asked == 3


def test_a_snapshot_sees_what_committed_before_it() -> None:
    from wal2http.pg.snapshot import Snapshot

    snapshot = Snapshot.parse("100:105:101,103")
    assert [snapshot.sees(x) for x in (99, 100, 101, 102, 103, 104, 105, 200)] == [
        True, True, False, True, False, True, False, False]
    assert Snapshot.parse("7:7:").in_progress == frozenset()
    # 64-bit xids past a wraparound: pgoutput sends the low 32 bits.
    wrapped = Snapshot.parse(f"{(1 << 32) + 5}:{(1 << 32) + 10}:{(1 << 32) + 8}")
    assert wrapped.sees(4) and wrapped.sees((1 << 32) - 3) and not wrapped.sees(8) and not wrapped.sees(10)


@pytest.mark.parametrize(("text", "meant"), [
    ("public.items", [("public", "items")]),
    ("items", [(None, "items")]),
    ("Public.Orders", [("Public", "Orders")]),  # taken literally, case kept
    ('"eu.west".orders', [("eu.west", "orders")]),
    ('"eu.west"."a.b"', [("eu.west", "a.b")]),
    ('"a""b".c', [('a"b', "c")]),
    ("eu.west.orders", [("eu", "west.orders"), ("eu.west", "orders")]),  # looked up both ways
])
def test_table_names_parse_to_schema_and_table_pairs(text: str, meant: list[tuple[str | None, str]]) -> None:
    assert parse_table_name(text) == meant
    for schema, table in meant:
        if schema is not None and len(meant) == 1:
            assert parse_table_name(display_name(schema, table)) == meant  # what status shows, --table takes


@pytest.mark.parametrize("text", ["", "a.", ".a", '"a', 'a"b.c', '"a"b', '"a.b"."c".d'])
def test_a_table_name_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="table name"):
        parse_table_name(text)


def test_display_names_quote_only_a_part_that_needs_it() -> None:
    assert display_name("public", "items") == "public.items"
    assert display_name("eu.west", "Orders") == '"eu.west".Orders'
    assert display_name("public", 'a"b') == 'public."a""b"'


def test_a_key_order_change_alone_is_told_from_other_changes() -> None:
    c = KeyColumn("id", None, None, (0, 1978))
    before = TableSpec(16_400, "public", "items", "d", spec().columns, ("id",), key_index=1, key_order=(c,))
    collated = TableSpec(16_400, "public", "items", "d", spec().columns, ("id",), key_index=2,
                         key_order=(KeyColumn("id", ("pg_catalog", "C"), None, (950, 1978)),))
    renamed = TableSpec(16_400, "public", "goods", "d", spec().columns, ("id",), key_index=1, key_order=(c,))
    assert before.same_but_key_order(collated) and before.shape() != collated.shape()
    assert before.signature() != collated.signature() and before.signature() == before.signature()
    assert not before.same_but_key_order(renamed)
