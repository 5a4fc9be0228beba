"""--format cloudevents and cloudevents-binary: the HTTP binding of CloudEvents 1.0.2, judged by the SDK."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from cloudevents.core.formats.json import JSONFormat
from standardwebhooks import Webhook

from tests.support.pgcluster import Database
from tests.support.process import Start, run_once
from tests.support.receiver import Receiver, RecordedRequest
from tests.support.replication import publish
from wal2http.config.cloudevents import CloudEventsConfig, EventFormat
from wal2http.config.sections import HttpConfig
from wal2http.decode.events import Event as Change
from wal2http.decode.events import encode
from wal2http.delivery.batch import Batch
from wal2http.errors import RejectedError, TransientDeliveryError
from wal2http.sinks.http import HttpSink


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def http_sink(receiver: Receiver, *more: str) -> list[str]:
    return ["--create-slot", "--sink", "http", "--http-url", receiver.url, *more]


def parse(request: RecordedRequest) -> Any:
    """The CloudEvent of a single-event request, as the SDK reads it (binary or structured)."""
    return from_http_event(HTTPMessage(request.headers, request.body))


def test_structured_events_are_cloudevents_carrying_the_event_and_signed(
    db: Database, receiver: Receiver, start_wal2http: Start
) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY, note text)", tables="t")
    secret = new_secret()
    wal2http = start_wal2http(*http_sink(receiver, "--format", "cloudevents"),
                              env={"WAL2HTTP_SIGNING_SECRET": secret})
    db.execute("INSERT INTO t VALUES (1, 'é'), (2, NULL)")
    db.execute("UPDATE t SET note = 'x' WHERE id = 2")
    requests = receiver.wait_for_requests(3)
    assert wal2http.stop() == 0
    for request in requests:
        assert request.headers["content-type"] == "application/cloudevents+json"
        assert Webhook(secret).verify(request.body, request.headers)["specversion"] == "1.0"
    events = [parse(r) for r in requests]
    data = [e.get_data() for e in events]
    assert [(d["op"], d["new"]) for d in data] == [("insert", {"id": 1, "note": "é"}),
                                                   ("insert", {"id": 2, "note": None}),
                                                   ("update", {"id": 2, "note": "x"})]
    for event, d in zip(events, data, strict=True):
        assert event.get_id() == d["id"]
        assert event.get_source() == f"/wal2http/{db.name}/wal2http"
        assert event.get_type() == f"io.wal2http.public.t.{d['op']}"
        assert event.get_subject() == json.dumps(d["key"], separators=(",", ":"))
        assert event.get_time().isoformat().replace("+00:00", "Z") == d["commit_time"]


def test_structured_batches_are_cloudevents_batch_arrays(
    db: Database, receiver: Receiver, start_wal2http: Start
) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    secret = new_secret()
    wal2http = start_wal2http(*http_sink(receiver, "--format", "cloudevents", "--batch-size", "50",
                                         "--ce-source", "https://db.example.com/app", "--ce-type-prefix",
                                         "com.example.pg"),
                              env={"WAL2HTTP_SIGNING_SECRET": secret})
    db.execute("INSERT INTO t SELECT generate_series(1, 120)")
    ids: list[int] = []
    for _ in range(120):
        ids = [e["data"]["new"]["id"] for e in receiver.events()]
        if len(ids) >= 120:
            break
        receiver.wait_for_requests(len(receiver.requests) + 1)
    assert wal2http.stop() == 0
    assert ids == list(range(1, 121))
    assert len(receiver.requests) >= 3
    for request in receiver.requests:
        members = Webhook(secret).verify(request.body, request.headers)
        several = isinstance(members, list)
        assert request.headers["content-type"] == ("application/cloudevents-batch+json" if several
                                                   else "application/cloudevents+json")
        for member in members if several else [members]:
            event = JSONFormat().read(None, json.dumps(member).encode())
            assert event.get_source() == "https://db.example.com/app"
            assert event.get_type() == "com.example.pg.public.t.insert"
            assert event.get_id() == event.get_data()["id"]


def test_binary_mode_sends_one_event_per_request_with_encoded_headers(
    db: Database, receiver: Receiver, start_wal2http: Start
) -> None:
    publish(db, "CREATE TABLE t (code text PRIMARY KEY, n int)", tables="t")
    secret = new_secret()
    wal2http = start_wal2http(*http_sink(receiver, "--format", "cloudevents-binary", "--batch-size", "10"),
                              env={"WAL2HTTP_SIGNING_SECRET": secret})
    codes = ['é "x" 50%', "plain", "a b"]
    db.execute("INSERT INTO t SELECT c, 1 FROM unnest(%s::text[]) AS c", (codes,))
    db.execute("DELETE FROM t WHERE code = 'plain'")
    requests = receiver.wait_for_requests(4)
    assert wal2http.stop() == 0
    assert len(receiver.requests) == 4
    for request in requests:
        assert request.headers["content-type"] == "application/json"
        assert all(0x21 <= ord(c) <= 0x7E for name, value in request.headers.items() if name.startswith("ce-")
                   for c in value)
        payload = Webhook(secret).verify(request.body, request.headers)  # the body is the event JSON
        assert payload["id"] == request.headers["webhook-id"] == request.headers["ce-id"]
    events = [parse(r) for r in requests]
    assert [json.loads(e.get_subject())["code"] for e in events] == [*codes, "plain"]
    assert [e.get_type() for e in events] == ["io.wal2http.public.t.insert"] * 3 + ["io.wal2http.public.t.delete"]
    assert [e.get_data() for e in events] == [json.loads(r.body) for r in requests]


def change(n: int) -> Change:
    record = {"id": f"0000000001A2B3C8-{n}", "op": "insert", "schema": "public", "table": "t",
              "key": {"id": n}, "new": {"id": n}, "old": None, "commit_time": "2026-11-28T01:02:03.456789Z"}
    return Change(record["id"], "insert", 1, 0x1A2B3C8, 0, n, record, encode(record))


def test_binary_mode_resumes_a_failed_batch_after_its_accepted_events(receiver: Receiver) -> None:
    config = HttpConfig(url=receiver.url, format=EventFormat.CLOUDEVENTS_BINARY,
                        cloudevents=CloudEventsConfig(source="/test"))
    sink = HttpSink(config, as_array=True)
    batch = Batch([change(1), change(2), change(3)])
    receiver.reject_when(lambda e: e["id"] == "0000000001A2B3C8-2", status=503)
    try:
        with pytest.raises(TransientDeliveryError):
            sink.send(batch)
        receiver.reject_when(None)
        assert sink.send(batch) == 200
        # The deliverer sends a refused batch's events one by one: the accepted one is not sent again.
        receiver.reject_when(lambda e: e["id"] == "0000000001A2B3C8-5", status=422)
        with pytest.raises(RejectedError):
            sink.send(Batch([change(4), change(5)]))
        assert sink.send(Batch.of(change(4))) is None
        with pytest.raises(RejectedError):
            sink.send(Batch.of(change(5)))
    finally:
        sink.close()
    sent = [r.headers["ce-id"][-1] for r in receiver.requests]
    assert sent == ["1", "2", "2", "2", "2", "3", "4", "5", "5"]  # quick retries of a 503 included


def test_replay_sends_dead_letters_in_the_configured_format(
    db: Database, receiver: Receiver, start_wal2http: Start, wal2http_bin: str, tmp_path: Path
) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY)", tables="t")
    dead = tmp_path / "dead.jsonl"
    receiver.reject_when(lambda e: e["data"]["new"]["id"] == 2, status=422)
    wal2http = start_wal2http(*http_sink(receiver, "--format", "cloudevents", "--on-reject", "dead-letter",
                                         "--dead-letter-path", str(dead)))
    db.execute("INSERT INTO t SELECT generate_series(1, 3)")
    receiver.wait_for_events(2)
    assert wal2http.stop() == 0
    assert len(dead.read_text().splitlines()) == 1
    receiver.reject_when(None)
    args = ["replay", "--sink", "http", "--http-url", receiver.url, "--format", "cloudevents", str(dead)]
    code, _out, err = run_once(wal2http_bin, args)
    assert code == 2 and "--ce-source" in err
    source = f"/wal2http/{db.name}/wal2http"
    code, _out, err = run_once(wal2http_bin, [*args[:-1], "--ce-source", source, str(dead)])
    assert code == 0, err
    event = parse(receiver.requests[-1])
    assert event.get_source() == source and event.get_data()["new"] == {"id": 2}
    assert dead.read_text() == ""


@pytest.mark.parametrize("sink", ["stdout", "file"])
def test_a_cloudevents_format_is_refused_for_the_line_sinks(wal2http_bin: str, tmp_path: Path, sink: str) -> None:
    args = ["--sink", sink, "--file-path", str(tmp_path / "f"), "--format", "cloudevents"]
    refusal = f"--format cloudevents applies to --sink http only; --sink {sink} writes the events as JSON lines"
    code, _out, err = run_once(wal2http_bin, ["run", *args], env={"WAL2HTTP_DSN": "dbname=x"})
    assert code == 2 and err.strip().splitlines()[-1] == f"wal2http: error: {refusal}"
    code, out, _err = run_once(wal2http_bin, ["check-config", *args], env={"WAL2HTTP_DSN": "dbname=x"})
    assert code == 2 and f"FAILED   sink settings: {refusal}" in out
