"""CloudEvents requests for a batch, judged by the CloudEvents SDK: structured, batch and binary mode."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from cloudevents.core.formats.json import JSONFormat

from wal2http.config.cloudevents import CloudEventsConfig, EventFormat, default_source
from wal2http.decode.events import Event, encode
from wal2http.delivery.batch import Batch
from wal2http.sinks.cloudevents import BATCH, STRUCTURED, Formatter, header_value

SETTINGS = CloudEventsConfig(source="/wal2http/app/main", type_prefix="io.wal2http")


def event(n: int, key: Any = None, op: str = "insert", table: str | None = "orders") -> Event:
    record = {"id": f"00000000016B3748-{n}", "op": op, "schema": "public" if table else None, "table": table,
              "key": {"id": n} if key is None else key, "new": {"id": n, "note": "é \"q\""}, "old": None,
              "commit_time": "2026-12-06T16:01:02.123456Z"}
    return Event(record["id"], op, 7, 0x16B3748, 0, n, record, encode(record))


def parse(headers: dict[str, str], body: bytes) -> Any:
    return from_http_event(HTTPMessage({k.lower(): v for k, v in headers.items()}, body))


def test_json_is_todays_body_in_one_request() -> None:
    batch = Batch([event(1), event(2)])
    [request] = Formatter(EventFormat.JSON, SETTINGS, as_array=True).requests(batch)
    assert request.body == batch.body(True) and request.headers == {} and request.batch is batch


def test_structured_single_event_carries_the_event_as_data() -> None:
    e = event(1)
    [request] = Formatter(EventFormat.CLOUDEVENTS, SETTINGS, as_array=True).requests(Batch([e]))
    assert request.headers == {"Content-Type": STRUCTURED}
    ce = parse(request.headers, request.body)
    assert ce.get_id() == e.id
    assert ce.get_source() == "/wal2http/app/main"
    assert ce.get_type() == "io.wal2http.public.orders.insert"
    assert ce.get_subject() == '{"id":1}'
    assert ce.get_time().isoformat() == "2026-12-06T16:01:02.123456+00:00"
    assert ce.get_specversion() == "1.0"
    assert ce.get_data() == json.loads(e.body)


def test_structured_batch_is_an_array_each_a_valid_event() -> None:
    events = [event(n) for n in range(1, 4)]
    [request] = Formatter(EventFormat.CLOUDEVENTS, SETTINGS, as_array=True).requests(Batch(events))
    assert request.headers == {"Content-Type": BATCH}
    members = json.loads(request.body)
    assert [m["id"] for m in members] == [e.id for e in events]
    for member, e in zip(members, events, strict=True):
        ce = JSONFormat().read(None, json.dumps(member).encode())
        assert ce.get_id() == e.id and ce.get_data() == json.loads(e.body)


def test_binary_sends_one_request_per_event_with_percent_encoded_headers() -> None:
    odd = event(1, key={"code": 'é "x" 50%'})
    plain = event(2, op="delete")
    requests = Formatter(EventFormat.CLOUDEVENTS_BINARY, SETTINGS, as_array=True).requests(Batch([odd, plain]))
    assert [r.batch.events for r in requests] == [[odd], [plain]]
    first = requests[0]
    assert first.body == odd.body
    assert first.headers["Content-Type"] == "application/json"
    assert first.headers["ce-subject"] == '{%22code%22:%22%C3%A9%20\\%22x\\%22%2050%25%22}'
    assert all(0x21 <= ord(c) <= 0x7E for value in first.headers.values() for c in value if c != " ")
    ce = parse(first.headers, first.body)
    assert ce.get_subject() == '{"code":"é \\"x\\" 50%"}'
    assert ce.get_id() == odd.id and ce.get_type() == "io.wal2http.public.orders.insert"
    assert ce.get_data() == json.loads(odd.body)
    assert parse(requests[1].headers, requests[1].body).get_type() == "io.wal2http.public.orders.delete"


def test_an_event_without_table_or_key_names_its_op_only() -> None:
    e = event(1, op="message", table=None)
    e.record["key"] = None
    [request] = Formatter(EventFormat.CLOUDEVENTS_BINARY, SETTINGS, as_array=False).requests(Batch([e]))
    assert request.headers["ce-type"] == "io.wal2http.message"
    assert "ce-subject" not in request.headers


@pytest.mark.parametrize(("value", "sent"), [("abc", "abc"), ("a b", "a%20b"), ('"%', "%22%25"), ("é", "%C3%A9")])
def test_header_values_are_percent_encoded_as_the_http_binding_says(value: str, sent: str) -> None:
    assert header_value(value) == sent


def test_the_default_source_names_database_and_slot() -> None:
    assert default_source("app db", "main") == "/wal2http/app%20db/main"
