"""The queue of rows to read again: which commits it holds, and when a hold ends."""

from __future__ import annotations

from wal2http.backfill.rereads import Queued, Rereads, pending_id
from wal2http.decode.pgoutput import UNCHANGED, Column
from wal2http.pg.backfill_model import TableSpec

INT4, TEXT = 23, 25
OID, OTHER = 16_400, 16_401


def spec() -> TableSpec:
    columns = (Column("v", TEXT, -1, False), Column("id", INT4, -1, False))
    return TableSpec(OID, "public", "items", "d", columns, ("id",))


def row(key: int | None, commit_lsn: int) -> Queued:
    return Queued((UNCHANGED, UNCHANGED if key is None else str(key)), commit_lsn)


def test_a_row_queued_twice_keeps_its_newest_values_and_its_oldest_hold() -> None:
    rereads = Rereads()
    rereads.add(OID, {"id": 1}, row(1, 200))
    rereads.add(OID, {"id": 1}, Queued(("x", "1"), 300))
    rereads.add(OID, {"id": 2}, row(2, 400))
    rereads.add(OID, {"id": 2}, row(2, 350))  # queued out of order (put back after a restart)
    assert rereads.count(OID) == 2 and rereads.hold_lsn() == 200
    ids, _, _ = rereads.keys(spec(), 10)
    taken = rereads.take(OID, ids)
    assert [(queued.new[0], queued.commit_lsn) for _, _, queued in taken] == [("x", 200), (UNCHANGED, 350)]
    assert rereads.count(OID) == 0 and rereads.hold_lsn() == 200  # taken, not confirmed
    rereads.confirmed(taken)
    assert rereads.hold_lsn() is None


def test_a_window_takes_at_most_its_limit_and_the_rest_keeps_holding() -> None:
    rereads = Rereads()
    for key in range(5):
        rereads.add(OID, {"id": key}, row(key, 100 + key))
    ids, keys, unreadable = rereads.keys(spec(), 2)
    assert keys == [("0",), ("1",)] and not unreadable
    rereads.confirmed(rereads.take(OID, ids))
    assert rereads.count(OID) == 3 and rereads.hold_lsn() == 102


def test_a_row_without_a_key_text_leaves_the_queue_and_its_hold() -> None:
    rereads = Rereads()
    rereads.add(OID, {"id": 1}, row(None, 100))  # its key value was not streamed
    rereads.add(OID, {"id": 2}, row(2, 200))
    _, keys, unreadable = rereads.keys(spec(), 10)
    assert keys == [("2",)] and unreadable == [pending_id({"id": 1})]
    assert rereads.count(OID) == 1 and rereads.hold_lsn() == 200


def test_put_back_after_a_restart_holds_again_and_keeps_a_newer_queueing() -> None:
    rereads = Rereads()
    rereads.add(OID, {"id": 1}, row(1, 100))
    rereads.add(OID, {"id": 2}, row(2, 150))
    taken = rereads.take(OID, rereads.keys(spec(), 10)[0])
    rereads.add(OID, {"id": 1}, Queued(("x", "1"), 300))  # updated again after the window took it
    rereads.put_back(taken)
    assert rereads.count(OID) == 2 and rereads.hold_lsn() == 100
    ids, _, _ = rereads.keys(spec(), 10)
    again = rereads.take(OID, ids)
    by_key = {q.new[1]: q for _, _, q in again}
    assert (by_key["1"].new[0], by_key["1"].commit_lsn) == ("x", 100)  # the newer values, the older hold
    assert by_key["2"].commit_lsn == 150
    rereads.confirmed(again)
    assert rereads.hold_lsn() is None


def test_other_tables_go_first_and_a_dropped_table_holds_nothing() -> None:
    rereads = Rereads()
    rereads.add(OID, {"id": 1}, row(1, 100))
    rereads.add(OTHER, {"id": 1}, row(1, 50))
    assert rereads.next_table(besides=OID) == OTHER
    assert rereads.drop(OTHER) == 1
    assert rereads.next_table(besides=OID) is None and rereads.next_table() == OID
    assert rereads.hold_lsn() == 100
    assert rereads.take(OTHER, [pending_id({"id": 1})]) == []
