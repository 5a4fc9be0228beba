"""The pgoutput parser on byte fixtures, including malformed input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support import pgbytes as pb
from wal2http.decode import pgoutput as po
from wal2http.errors import DecodeError

T0 = 1_764_291_723_456_789  # 2025-11-28T01:02:03.456789Z in Unix microseconds


def test_begin_and_commit() -> None:
    assert po.parse(pb.begin(0x16B3800, T0, 1234)) == po.Begin(0x16B3800, T0, 1234)
    assert po.parse(pb.commit(0x16B3800, 0x16B3830, T0)) == po.Commit(0x16B3800, 0x16B3830, T0)


def test_relation_with_key_flags_and_pg_catalog_shorthand() -> None:
    msg = po.parse(pb.relation(16384, "", "orders", [("id", 23, True), ("note", 25, False)], "f"))
    assert isinstance(msg, po.Relation)
    assert (msg.oid, msg.schema, msg.table, msg.replica_identity) == (16384, "pg_catalog", "orders", "f")
    assert [(c.name, c.type_oid, c.is_key) for c in msg.columns] == [("id", 23, True), ("note", 25, False)]


def test_type_and_origin() -> None:
    assert po.parse(pb.type_message(70000, "public", "mood")) == po.Type(70000, "public", "mood")
    assert po.parse(pb.origin(42, "node_a")) == po.Origin(42, "node_a")


def test_insert_with_null_and_non_ascii() -> None:
    msg = po.parse(pb.insert(1, ["1", None, "zoë ✓"]))
    assert msg == po.Insert(1, ("1", None, "zoë ✓"))


def test_update_variants() -> None:
    plain = po.parse(pb.update(1, ["1", "x"]))
    assert plain == po.Update(1, None, None, ("1", "x"))
    keyed = po.parse(pb.update(1, ["2", "x"], key=["1", None]))
    assert keyed == po.Update(1, None, ("1", None), ("2", "x"))
    full = po.parse(pb.update(1, ["1", b"u"], old=["1", "big"]))
    assert isinstance(full, po.Update)
    assert full.old == ("1", "big")
    assert full.new[1] is po.UNCHANGED


def test_delete_variants() -> None:
    assert po.parse(pb.delete(1, key=["7", None])) == po.Delete(1, None, ("7", None))
    assert po.parse(pb.delete(1, old=["7", "x"])) == po.Delete(1, ("7", "x"), None)


def test_truncate_flags() -> None:
    assert po.parse(pb.truncate([1, 2], cascade=True)) == po.Truncate((1, 2), True, False)
    assert po.parse(pb.truncate([3], restart_identity=True)) == po.Truncate((3,), False, True)


def test_message() -> None:
    msg = po.parse(pb.message("app", b"\x00\xff", 99, transactional=False))
    assert msg == po.Message(False, 99, "app", b"\x00\xff")


def test_binary_column_is_bytes() -> None:
    assert po.parse(pb.insert(1, [b"\x00\x01"])) == po.Insert(1, (b"\x00\x01",))


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"Z",
        b"B\x00\x01",
        pb.insert(1, ["abc"])[:-1],
        pb.insert(1, ["abc"]) + b"junk",
        b"I\x00\x00\x00\x01X",
        pb.update(1, ["1"]).replace(b"N", b"Q", 1),
        b"I\x00\x00\x00\x01N\x00\x01q",
        pb.relation(1, "s", "t", [("a", 23, True)])[:-3],
    ],
)
def test_malformed_input_raises_decode_error_naming_the_lsn(payload: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        po.parse(payload, 0x16B3748)
    assert "0/16B3748" in str(info.value)
    assert info.value.lsn == 0x16B3748


@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_escape_as_anything_but_decode_error(payload: bytes) -> None:
    with contextlib.suppress(DecodeError):
        po.parse(payload, 1)


@given(st.lists(st.one_of(st.none(), st.text(max_size=20)), max_size=12))
def test_insert_round_trip(values: list[str | None]) -> None:
    assert po.parse(pb.insert(5, values)) == po.Insert(5, tuple(values))
