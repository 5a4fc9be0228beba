"""Rows read again for their large values: which rows a chunk names, and how long the stream is held."""

from __future__ import annotations

from typing import Any

from wal2http.backfill.chunk import Chunk, key_text
from wal2http.backfill.driver import Backfill, _Table
from wal2http.decode.events import Event, EventBuilder, RelationFacts
from wal2http.decode.pgoutput import UNCHANGED, Begin, Column, Update
from wal2http.observe.metrics import Metrics
from wal2http.pg.backfill_model import Mark, State, TableSpec, Task, Watermark
from wal2http.pg.connection import LazyConnection

INT4, TEXT = 23, 25


def spec() -> TableSpec:
    columns = (Column("v", TEXT, -1, False), Column("id", INT4, -1, False), Column("n", INT4, -1, False))
    return TableSpec(16_400, "public", "items", "d", columns, ("id",))


def task() -> Task:
    return Task(1, 1, "wal2http", "public", "items", None, State.RUNNING, None)


def update(key: int, toast: list[str], commit_lsn: int = 100) -> tuple[Event, Update]:
    record: dict[str, Any] = {"op": "update", "schema": "public", "table": "items", "key": {"id": key},
                              "old": {"id": key}, "unchanged_toast": toast}
    change = Update(spec().oid, None, None, (UNCHANGED if toast else "big", str(key), "1"))
    return Event(f"e{key}", "update", 1, commit_lsn, 0, 1, record, b"{}"), change


def test_a_chunk_names_the_rows_an_update_lacking_their_large_value_dropped() -> None:
    chunk = Chunk(task(), spec(), 1, "t", [("a", "1", "0"), ("b", "2", "0"), ("c", "3", "0")], complete=True)
    for key, toast in ((1, ["v"]), (2, [])):
        event, change = update(key, toast)
        chunk.observe(event.record, change.new)
    assert [chunk.keep({"id": n}) for n in (1, 2, 3)] == [False, False, True]
    again = chunk.to_read_again({"id": 1})
    assert again is not None and key_text(spec(), again[1]) == ("1",)
    assert chunk.to_read_again({"id": 2}) is None  # its update carried the whole row


def test_a_key_text_is_none_for_a_row_of_another_shape_or_an_unchanged_key() -> None:
    assert key_text(spec(), ("x", "7", "1")) == ("7",)
    assert key_text(spec(), ("x", "7")) is None
    assert key_text(spec(), ("x", UNCHANGED, "1")) is None


def test_reselect_holds_the_stream_until_the_read_is_confirmed_and_requeues_after_a_reset() -> None:
    driver = Backfill(LazyConnection("dbname=unused"), "wal2http", "wal2http", 10, Metrics(), reselect_toast=True)
    assert driver.watching
    for key, lsn in ((1, 100), (2, 200), (1, 300)):
        event, change = update(key, ["v"], lsn)
        driver.observe([event], change)
    whole, change = update(3, [], 400)
    driver.observe([whole], change)  # it carried the whole row: nothing to read again
    assert driver.hold_lsn() == 100
    assert driver._again.count(spec().oid) == 2
    ids, keys, unreadable = driver._again.keys(spec(), 10)
    assert keys == [("1",), ("2",)] and not unreadable
    # A window took both; its high mark releases their reads, which are not confirmed yet.
    driver._reading = _Table(spec(), RelationFacts(key=("id",)), spec().relation())
    driver.chunk = Chunk(None, spec(), 1, "tok", [], True, [("big", "1", "1"), ("big", "2", "1")], ids)
    builder = EventBuilder()
    builder.begin(Begin(commit_lsn=500, commit_time_us=0, xid=9))
    reads = list(driver.watermark(Watermark(Mark.HIGH, "tok", 0, 1).payload().encode(), builder, 500))
    assert [r.record["key"] for r in reads] == [{"id": 1}, {"id": 2}]
    assert driver._again.count(spec().oid) == 0 and driver.hold_lsn() == 100
    driver.reset()  # the stream restarts before they were confirmed: read them again
    assert driver.hold_lsn() == 100 and driver._again.count(spec().oid) == 2


def test_the_hold_ends_once_the_reads_are_confirmed() -> None:
    driver = Backfill(LazyConnection("dbname=unused"), "wal2http", "wal2http", 10, Metrics(), reselect_toast=True)
    event, change = update(1, ["v"], 100)
    driver.observe([event], change)
    ids, _, _ = driver._again.keys(spec(), 10)
    driver._reading = _Table(spec(), RelationFacts(key=("id",)), spec().relation())
    driver.chunk = Chunk(None, spec(), 1, "tok", [], True, [("big", "1", "1")], ids)
    builder = EventBuilder()
    builder.begin(Begin(commit_lsn=500, commit_time_us=0, xid=9))
    assert len(list(driver.watermark(Watermark(Mark.HIGH, "tok", 0, 1).payload().encode(), builder, 500))) == 1
    released = driver._released
    assert released is not None and driver.hold_lsn() == 100
    driver._record(released)
    assert driver.hold_lsn() is None and driver._released is None


class _Cursor:
    """Answers FETCH FORWARD n from a list of rows; records how many rows each FETCH asked for."""

    class connection:  # what execute() looks at
        async_ = False

    def __init__(self, rows: list[tuple[str | None, ...]]) -> None:
        self.rows = rows
        self.asked: list[int] = []
        self._last: list[tuple[str | None, ...]] = []

    def execute(self, statement: Any, params: Any = None) -> None:
        n = statement.seq[1].wrapped  # sql.Literal of FETCH FORWARD {} FROM {}
        self.asked.append(n)
        self._last, self.rows = self.rows[:n], self.rows[n:]

    def fetchall(self) -> list[tuple[str | None, ...]]:
        return self._last


def test_a_chunk_stops_at_its_byte_budget_and_fetches_what_the_rest_holds() -> None:
    from wal2http.pg.backfill_chunks import _take

    big = [(str(i), "x" * 999) for i in range(10)]  # 1,000 bytes a row (the key counts)
    cur = _Cursor(list(big))
    rows, ended = _take(cur, 100, 3500, "read")  # type: ignore[arg-type]
    assert rows == big[:3] and not ended
    assert cur.asked == [1, 2, 1]  # one row first, then what the budget holds at the largest row
    cur = _Cursor([("1", "x" * 5000), ("2", "y")])
    rows, ended = _take(cur, 100, 3500, "read")  # type: ignore[arg-type]
    assert rows == [("1", "x" * 5000)] and not ended  # a single larger row is read alone
    cur = _Cursor([("1", "a"), ("2", None)])
    rows, ended = _take(cur, 100, 3500, "read")  # type: ignore[arg-type]
    assert rows == [("1", "a"), ("2", None)] and ended
