"""Changes and outbox rows as Hook0 event requests: fields, deterministic ids, and Hook0's rules."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hook0.generated.models import EventPost

from tests.support import pgbytes as pb
from wal2http.config.hook0 import Hook0Config
from wal2http.config.secrets import Secret
from wal2http.config.sections import HttpConfig
from wal2http.decode import pgoutput as po
from wal2http.decode.events import Event, EventBuilder
from wal2http.errors import UnmappableEvent
from wal2http.hook0.mapping import (
    Hook0Event,
    Hook0Mapper,
    derived_event_id,
    sanitize_name,
)

APP = "7c1f0a7e-3b8e-4a51-9f0e-2d4b6c8a1e35"
T0 = 1_764_291_723_456_789
UUID_OID, TEXT_OID, JSONB_OID, JSON_OID, TSTZ_OID, INT_OID = 2950, 25, 3802, 114, 1184, 23
OUTBOX = [("event_id", UUID_OID, True), ("event_type", TEXT_OID, False), ("payload", JSONB_OID, False),
          ("labels", JSONB_OID, False), ("metadata", JSONB_OID, False), ("occurred_at", TSTZ_OID, False)]
ROW_ID = "0b9a3c55-9d43-4a4e-8d6a-6f6a7f2a0c11"
# Derived Hook0 event ids as wal2http 0.1 sends them, written out rather than computed: if the derivation
# changed, every redelivered change would get a new id after an upgrade and Hook0 would ingest it twice.
DERIVED_IDS = {
    ("shop", "00000000016B3800-1"): "216c042a-52fe-5f2e-ac0d-78c92dcce840",
    ("shop", "00000000016B3800-2"): "935a9880-488f-5922-8ab5-7582e4fefb96",
    ("shop", "00000000016B3800-3"): "e1317af5-f7f8-501c-844f-add2980de7d3",
    ("shop", "00000000016B3800-4"): "9333a994-d5e2-5a59-948b-8fb98f7b2f21",
    ("crm", "00000000016B3800-1"): "54194510-9328-55d4-96c5-ca98dc8f7fef",
}


def mapper(mode: str = "outbox", **kw: Any) -> Hook0Mapper:
    config = Hook0Config(http=HttpConfig(url="http://127.0.0.1:1/api/v1"), application_id=APP,
                         token=Secret("t"), mode=mode, **kw)
    return Hook0Mapper(config, "shop")


def events(columns: list[tuple[str, int, bool]], *changes: bytes, table: str = "hook0_outbox") -> list[Event]:
    b = EventBuilder()
    b.relation(po.parse(pb.relation(10, "public", table, columns, "d")))  # type: ignore[arg-type]
    b.begin(po.Begin(0x16B3800, T0, 77))
    return [e for c in changes for e in b.changes(po.parse(c), 0x16B3748)]  # type: ignore[arg-type]


def outbox_row(**values: str | None) -> Event:
    row = {"event_id": ROW_ID, "event_type": "billing.invoice.paid", "payload": '{"amount": 12.50}',
           "labels": '{"tenant": "acme"}', "metadata": None, "occurred_at": "2026-03-01 10:00:00.5+00"}
    row.update(values)
    (event,) = events(OUTBOX, pb.insert(10, list(row.values())))
    return event


def sent(hook0_event: Hook0Event | None) -> dict[str, Any]:
    assert hook0_event is not None
    EventPost.from_json(json.loads(hook0_event.body))  # the official SDK reads it
    body: dict[str, Any] = json.loads(hook0_event.body)
    return body


def test_outbox_row_becomes_the_event_it_describes() -> None:
    body = sent(mapper().map(outbox_row()))
    assert body == {
        "application_id": APP, "event_id": ROW_ID, "event_type": "billing.invoice.paid",
        "payload": '{"amount": 12.50}', "payload_content_type": "application/json",
        "labels": {"tenant": "acme"}, "occurred_at": "2026-03-01T10:00:00.500000Z",
    }


def test_outbox_text_payload_metadata_and_created_at_alias() -> None:
    columns = [("event_id", UUID_OID, True), ("event_type", TEXT_OID, False), ("payload", TEXT_OID, False),
               ("payload_content_type", TEXT_OID, False), ("labels", JSON_OID, False),
               ("metadata", JSONB_OID, False), ("created_at", TSTZ_OID, False)]
    (event,) = events(columns, pb.insert(10, [ROW_ID, "a.b.c", "aGVsbG8=", "application/octet-stream+base64",
                                             '{"n": 1, "ok": true}', '{"trace": "x1"}',
                                             "2026-03-01 10:00:00+02"]))
    body = sent(mapper().map(event))
    assert body["payload"] == "aGVsbG8=" and body["payload_content_type"] == "application/octet-stream+base64"
    assert body["labels"] == {"n": "1", "ok": "true"} and body["metadata"] == {"trace": "x1"}
    assert body["occurred_at"] == "2026-03-01T08:00:00.000000Z"
    (plain,) = events(columns[:3] + columns[4:5], pb.insert(10, [ROW_ID, "a.b.c", "hello", '{"k": "v"}']))
    body = sent(mapper().map(plain))
    assert body["payload"] == "hello" and body["payload_content_type"] == "text/plain"
    assert body["occurred_at"] == "2025-11-28T01:02:03.456789Z"  # no occurred_at column: the commit time


def test_json_payload_is_sent_exactly_as_stored() -> None:
    payload = '{"big": 12345678901234567890123, "x": 1e400, "s": "\\u00e9"}'
    assert sent(mapper().map(outbox_row(payload=payload)))["payload"] == payload


@pytest.mark.parametrize(("values", "message"), [
    ({"event_type": "invoice"}, "event_type 'invoice' is not service.resource_type.verb"),
    ({"event_type": "a..c"}, "is not service.resource_type.verb"),
    ({"event_type": None}, "column event_type is null"),
    ({"labels": "{}"}, "column labels has 0 entries; Hook0 takes 1 to 10"),
    ({"labels": json.dumps({f"k{i}": "v" for i in range(11)})}, "column labels has 11 entries"),
    ({"labels": json.dumps({"tenant": "x" * 51})}, "column labels 'tenant' has a value of 51 bytes"),
    ({"labels": json.dumps({"tenant": {"id": 1}})},
     "column labels 'tenant' must be a string, number or boolean"),
    ({"labels": "[1]"}, "column labels must be a JSON object, not an array"),
    ({"labels": None}, "column labels is null"),
    ({"metadata": json.dumps({"k": ""})}, "column metadata 'k' has a value of 0 bytes"),
    ({"payload": None}, "column payload is null"),
    ({"payload": json.dumps("x" * 699_051)}, "above Hook0's limit of 699050"),
    ({"occurred_at": "infinity"}, "column occurred_at 'infinity' is not a timestamp"),
])
def test_rows_hook0_would_refuse_are_rejected_naming_the_column_and_rule(values: dict[str, str],
                                                                         message: str) -> None:
    with pytest.raises(UnmappableEvent, match=re.escape(message)):
        mapper().map(outbox_row(**values))


def test_missing_columns_and_bad_ids_in_a_text_outbox() -> None:
    columns = [("event_id", TEXT_OID, True), ("event_type", TEXT_OID, False), ("payload", TEXT_OID, False),
               ("payload_content_type", TEXT_OID, False)]
    (bad_id,) = events(columns, pb.insert(10, ["42", "a.b.c", "{}", None]))
    with pytest.raises(UnmappableEvent, match="column event_id '42' is not a UUID"):
        mapper().map(bad_id)
    (no_labels,) = events(columns, pb.insert(10, [ROW_ID, "a.b.c", "{}", None]))
    with pytest.raises(UnmappableEvent, match="no labels column in the outbox table"):
        mapper().map(no_labels)
    (bad_json,) = events([*columns, ("labels", JSONB_OID, False)],
                         pb.insert(10, [ROW_ID, "a.b.c", "{oops", "application/json", '{"a": "b"}']))
    with pytest.raises(UnmappableEvent, match="payload is not valid JSON"):
        mapper().map(bad_json)
    (bad_type,) = events([*columns, ("labels", JSONB_OID, False)],
                         pb.insert(10, [ROW_ID, "a.b.c", "x", "text/html", '{"a": "b"}']))
    with pytest.raises(UnmappableEvent, match="payload_content_type 'text/html' is not one of"):
        mapper().map(bad_type)


def test_outbox_mode_ignores_everything_but_inserts_into_the_outbox_and_its_messages() -> None:
    m = mapper()
    row = [ROW_ID, "a.b.c", "{}", '{"a": "b"}', None, None]
    update, delete = events(OUTBOX, pb.update(10, row), pb.delete(10, key=[ROW_ID] + [None] * 5))
    (other,) = events(OUTBOX, pb.insert(10, row), table="orders")
    (foreign_message,) = events(OUTBOX, pb.message("audit", b'{"x": 1}', 0x16B3700))
    assert [m.map(e) for e in (update, delete, other, foreign_message)] == [None] * 4
    assert mapper(outbox_table="billing.hook0_outbox").map(outbox_row()) is None


def test_message_outbox_with_and_without_an_event_id() -> None:
    content = {"event_type": "billing.invoice.paid", "payload": {"amount": 1.10, "n": 2**70},
               "labels": {"tenant": "acme"}, "metadata": {"source": "sql"}}
    (without_id,) = events(OUTBOX, pb.message("hook0", json.dumps(content).encode(), 0x16B3700))
    body = sent(mapper().map(without_id))
    assert without_id.id == "00000000016B3800-1"
    assert body["event_id"] == "216c042a-52fe-5f2e-ac0d-78c92dcce840"  # stable across restarts and upgrades
    assert body["payload"] == '{"amount":1.1,"n":1180591620717411303424}'
    assert body["payload_content_type"] == "application/json"
    assert body["occurred_at"] == "2025-11-28T01:02:03.456789Z"
    (with_id,) = events(OUTBOX, pb.message("hook0", json.dumps({**content, "event_id": ROW_ID,
                                                               "payload": "plain"}).encode(), 0x16B3700))
    body = sent(mapper("changes").map(with_id))  # the message outbox works in changes mode too
    assert body["event_id"] == ROW_ID and body["payload"] == "plain"
    assert body["payload_content_type"] == "text/plain"


@pytest.mark.parametrize(("content", "message"), [
    (b"not json", "message content is not JSON"),
    (b"[1, 2]", "message content must be a JSON object"),
    (b"\xff\xfe", "message content is not UTF-8 text"),
    (b'{"payload": 1, "labels": {"a": "b"}}', "no event_type field"),
    (b'{"event_type": "a.b.c", "payload": 1, "labels": {"a": "b"}, "event_id": "nope"}',
     "field event_id 'nope' is not a UUID"),
])
def test_invalid_messages_are_rejected(content: bytes, message: str) -> None:
    (event,) = events(OUTBOX, pb.message("hook0", content, 0x16B3700))
    with pytest.raises(UnmappableEvent, match=message):
        mapper().map(event)


def test_changes_mode_types_ids_labels_and_payload() -> None:
    columns = [("id", INT_OID, True), ("tenant_id", INT_OID, False), ("note", TEXT_OID, False)]
    m = mapper("changes", labels=(("tenant", "tenant_id"), ("missing", "no_such_column")))
    changes = events(columns, pb.insert(10, ["1", "7", "a"]), pb.update(10, ["1", "8", "b"]),
                     pb.delete(10, key=["1", None, None]), pb.truncate([10]), table="Order Lines")
    bodies = [sent(m.map(e)) for e in changes]
    assert [b["event_type"] for b in bodies] == [f"shop.Order_Lines.{v}"
                                                 for v in ("inserted", "updated", "deleted", "truncated")]
    assert [b["labels"] for b in bodies] == [
        {"schema": "public", "table": "Order Lines", "tenant": "7"},
        {"schema": "public", "table": "Order Lines", "tenant": "8"},
        {"schema": "public", "table": "Order Lines"},  # the key-only old row has no tenant_id
        {"schema": "public", "table": "Order Lines"},
    ]
    assert [b["event_id"] for b in bodies] == [DERIVED_IDS["shop", f"00000000016B3800-{n}"] for n in (1, 2, 3, 4)]
    for body, event in zip(bodies, changes, strict=True):
        assert json.loads(body["payload"]) == event.record
        assert body["payload_content_type"] == "application/json"
        assert body["occurred_at"] == "2025-11-28T01:02:03.456789Z"
    assert m.event_types_for("Order Lines")[0] == "shop.Order_Lines.inserted"


@pytest.mark.parametrize(("service", "change_id"), list(DERIVED_IDS))
def test_derived_ids_are_the_ones_already_sent(service: str, change_id: str) -> None:
    assert derived_event_id(service, change_id) == DERIVED_IDS[service, change_id]


def test_derived_ids_are_distinct() -> None:
    assert len(set(DERIVED_IDS.values())) == len(DERIVED_IDS)


@pytest.mark.parametrize(("name", "sanitized"), [("app", "app"), ("my-db.prod", "my_db_prod"),
                                                  ("--", "_"), ("x" * 60, "x" * 50), ("Ünïcode", "n_code")])
def test_sanitize_name(name: str, sanitized: str) -> None:
    assert sanitize_name(name) == sanitized
