"""Change events built from decoded messages: envelope, keys, TOAST, relation changes."""

from __future__ import annotations

import orjson
import pytest

from tests.support import pgbytes as pb
from wal2http.decode import pgoutput as po
from wal2http.decode.events import EventBuilder, event_id, format_timestamp_us
from wal2http.errors import DecodeError

T0 = 1_764_291_723_456_789
COLS = [("id", 23, True), ("body", 25, False), ("n", 1700, False)]


def builder_with(columns=COLS, replident: str = "d") -> EventBuilder:  # type: ignore[no-untyped-def]
    b = EventBuilder()
    b.relation(po.parse(pb.relation(10, "public", "orders", columns, replident)))  # type: ignore[arg-type]
    b.begin(po.Begin(0x16B3800, T0, 77))
    return b


def change(b: EventBuilder, payload: bytes, lsn: int = 0x16B3748) -> list[dict]:  # type: ignore[type-arg]
    events = b.changes(po.parse(payload), lsn)  # type: ignore[arg-type]
    for e in events:
        assert orjson.loads(e.body) == e.record
    return [e.record for e in events]


def test_insert_envelope() -> None:
    b = builder_with()
    (ev,) = change(b, pb.insert(10, ["42", "hi", "12345678901234567890.0123456789"]))
    assert ev == {
        "id": "00000000016B3800-1", "op": "insert", "schema": "public", "table": "orders",
        "key": {"id": 42}, "new": {"id": 42, "body": "hi", "n": "12345678901234567890.0123456789"},
        "old": None, "unchanged_toast": [], "lsn": "0/16B3748", "commit_lsn": "0/16B3800",
        "commit_time": "2025-11-28T01:02:03.456789Z", "xid": 77, "seq": 1,
    }


def test_ids_are_stable_and_url_safe() -> None:
    assert event_id(0x16B3800, 3) == "00000000016B3800-3"
    b1, b2 = builder_with(), builder_with()
    p = pb.insert(10, ["1", "a", "1"])
    assert change(b1, p)[0]["id"] == change(b2, p)[0]["id"]


def test_seq_counts_within_the_transaction_and_restarts_at_begin() -> None:
    b = builder_with()
    ids = [change(b, pb.insert(10, [str(i), "a", "1"]))[0]["seq"] for i in range(3)]
    assert ids == [1, 2, 3]
    b.begin(po.Begin(0x20000000, T0, 78))
    assert change(b, pb.insert(10, ["9", "a", "1"]))[0]["id"] == "0000000020000000-1"


def test_update_without_key_change_uses_key_from_new_row_as_old() -> None:
    (ev,) = change(builder_with(), pb.update(10, ["1", "b", "2"]))
    assert ev["key"] == {"id": 1} and ev["old"] == {"id": 1} and ev["new"]["body"] == "b"


def test_update_with_key_change_reports_old_key() -> None:
    (ev,) = change(builder_with(), pb.update(10, ["2", "b", "2"], key=["1", None, None]))
    assert ev["key"] == {"id": 2} and ev["old"] == {"id": 1}


def test_unchanged_toast_is_absent_and_named() -> None:
    (ev,) = change(builder_with(), pb.update(10, ["1", b"u", "3"]))
    assert "body" not in ev["new"] and ev["unchanged_toast"] == ["body"]


def test_replica_identity_full_fills_unchanged_toast_from_old_row() -> None:
    full = [("id", 23, True), ("body", 25, True), ("n", 1700, True)]
    (ev,) = change(builder_with(full, "f"), pb.update(10, ["1", b"u", "3"], old=["1", "big", "2"]))
    assert ev["new"] == {"id": 1, "body": "big", "n": "3"}
    assert ev["old"] == {"id": 1, "body": "big", "n": "2"}
    assert ev["unchanged_toast"] == []


def test_delete_with_key_tuple_and_with_full_old_row() -> None:
    (ev,) = change(builder_with(), pb.delete(10, key=["5", None, None]))
    assert ev["op"] == "delete" and ev["key"] == {"id": 5} and ev["old"] == {"id": 5} and ev["new"] is None
    full = [("id", 23, True), ("body", 25, True), ("n", 1700, True)]
    (ev,) = change(builder_with(full, "f"), pb.delete(10, old=["5", "x", None]))
    assert ev["old"] == {"id": 5, "body": "x", "n": None}


def test_truncate_gives_one_event_per_table() -> None:
    b = builder_with()
    b.relation(po.parse(pb.relation(11, "public", "lines", [("id", 23, True)])))  # type: ignore[arg-type]
    events = change(b, pb.truncate([10, 11], cascade=True))
    assert [(e["table"], e["op"], e["cascade"], e["restart_identity"], e["seq"]) for e in events] == [
        ("orders", "truncate", True, False, 1), ("lines", "truncate", True, False, 2)]


def test_relation_message_replaces_the_cached_definition() -> None:
    b = builder_with()
    b.relation(po.parse(pb.relation(10, "public", "orders", [*COLS, ("extra", 16, False)])))  # type: ignore[arg-type]
    (ev,) = change(b, pb.insert(10, ["1", "a", "1", "t"]))
    assert ev["new"]["extra"] is True


def test_messages_text_and_binary() -> None:
    b = builder_with()
    (ev,) = change(b, pb.message("app", b"hello", 5))
    assert (ev["op"], ev["prefix"], ev["content"], ev["content_base64"], ev["transactional"]) == (
        "message", "app", "hello", False, True)
    assert ev["id"] == "00000000016B3800-1"
    b.commit()
    (ev,) = change(b, pb.message("app", b"\xff\x00", 0x99, transactional=False))
    assert ev["content"] == "/wA=" and ev["content_base64"] is True and ev["id"] == "0000000000000099-0"


def test_unknown_relation_and_bad_values_raise_decode_error() -> None:
    b = builder_with()
    with pytest.raises(DecodeError, match="relation OID 99"):
        change(b, pb.insert(99, ["1"]))
    with pytest.raises(DecodeError, match=r"public\.orders"):
        change(b, pb.insert(10, ["not-an-int", "a", "1"]))


def test_timestamp_format() -> None:
    assert format_timestamp_us(0) == "1970-01-01T00:00:00.000000Z"


def test_full_identity_key_includes_toast_values_filled_from_old_row() -> None:
    full = [("id", 23, True), ("body", 25, True)]
    (ev,) = change(builder_with(full, "f"), pb.update(10, ["1", b"u"], old=["1", "big"]))
    assert ev["key"] == {"id": 1, "body": "big"}


def test_delete_key_tuple_keeps_only_key_columns() -> None:
    (ev,) = change(builder_with(), pb.delete(10, key=["5", None, None]))
    assert ev["old"] == {"id": 5}
