"""Giving up without losing: status classes, the parked rows, and the deliverer's narrowing and limits."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.exposition import generate_latest

from wal2http.config.outcomes import Action, StatusClasses, parse_statuses, status_classes
from wal2http.config.rules import validate
from wal2http.config.secrets import Secret
from wal2http.config.sections import DeliveryConfig, HttpConfig, OnReject, SinkKind, SourceConfig
from wal2http.config.settings import Config, SinkConfig
from wal2http.decode.events import Event, encode
from wal2http.decode.values import JsonText
from wal2http.delivery.batch import Batch
from wal2http.delivery.breaker import Breaker
from wal2http.delivery.deadletter import DeadLetterFile, parked_in
from wal2http.delivery.deliverer import Deliverer, GiveUpLimits
from wal2http.delivery.parking import ParkedRows, record_of, rows_of
from wal2http.errors import ConfigError, DiversionLimit, RejectedError, TransientDeliveryError
from wal2http.observe.endpoint import readiness
from wal2http.observe.metrics import Metrics

# -- status classes ------------------------------------------------------------------------------


def test_the_defaults_are_todays_classes() -> None:
    c = StatusClasses()
    assert c.action(200) == c.action(204) == Action.ACCEPTED
    assert all(c.action(s) == Action.RETRY for s in (100, 408, 425, 429, 500, 503, 599))
    assert all(c.action(s) == Action.HALT for s in (401, 403, 404, 410))
    assert c.action(413) == Action.SMALLER
    assert all(c.action(s) == Action.REJECT for s in (301, 400, 409, 422, 451))


def test_operator_lists_move_statuses_between_retry_and_reject() -> None:
    c = status_classes("500,503", "409,450-452")
    assert c.action(409) == c.action(451) == Action.RETRY
    assert c.action(500) == c.action(503) == Action.REJECT
    assert c.action(502) == Action.RETRY and c.action(422) == Action.REJECT
    assert 409 in c.retried and 500 not in c.retried and 502 in c.retried


@pytest.mark.parametrize(("text", "message"), [
    ("204", "2xx is always accepted"),
    ("199", "from 300 to 599"),
    ("600", "from 300 to 599"),
    ("410", "always halt"),
    ("400-405", "always halt"),  # the range holds 401, 403, 404
    ("413", "413 cannot be listed"),
    ("40x", "expected statuses or ranges"),
    ("500-", "expected statuses or ranges"),
    ("503-500", "low to high"),
])
def test_bad_lists_are_refused_naming_the_option(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        parse_statuses(text, "--retry-status")
    assert "--retry-status" in str(error.value)


def test_a_status_in_both_lists_is_refused_and_empty_lists_change_nothing() -> None:
    with pytest.raises(ConfigError, match="both list 409"):
        status_classes("409,422", "409")
    assert status_classes(None, "") == StatusClasses()
    assert parse_statuses(" 400 , 422 ,", "--reject-status") == {400, 422}


def test_the_table_covers_every_status_once_in_ranges() -> None:
    table = status_classes("422", "409").table()
    assert table[0] == ("2xx", Action.ACCEPTED)
    assert ("409", Action.RETRY) not in table and ("408-409", Action.RETRY) in table
    assert ("401", Action.HALT) in table and ("500-599", Action.RETRY) in table
    covered = []
    for statuses, _ in table[1:]:
        low, _, high = statuses.partition("-")
        covered.extend(range(int(low), int(high or low) + 1))
    assert covered == list(range(300, 600))


def test_give_up_is_for_receivers_and_needs_a_dead_letter_file() -> None:
    source = SourceConfig(dsn=Secret("postgresql://db/app"))
    http = SinkConfig(SinkKind.HTTP, HttpConfig("https://hooks.example.com/pg"))
    give_up = DeliveryConfig(give_up_after_s=60, dead_letter_path="/tmp/dead.jsonl")
    assert validate(Config(source, http, delivery=give_up))
    with pytest.raises(ConfigError, match="not --sink file: a full disk is waited out"):
        validate(Config(source, SinkConfig(SinkKind.FILE, file_path="/tmp/x"), delivery=give_up))
    for delivery in (DeliveryConfig(give_up_attempts=3), DeliveryConfig(max_dead_letters=10)):
        with pytest.raises(ConfigError, match="needs --dead-letter-path"):
            validate(Config(source, http, delivery=delivery))


# -- parked rows ---------------------------------------------------------------------------------


def record(op: str, key: dict[str, Any] | None, old: dict[str, Any] | None = None,
           table: str = "t") -> dict[str, Any]:
    return {"op": op, "schema": "public", "table": table, "key": key, "new": None, "old": old}


def test_rows_of_an_event() -> None:
    assert rows_of({"op": "message", "schema": None, "table": None}) is None
    assert rows_of(record("insert", {"id": 1})).keys == ('{"id":1}',)  # type: ignore[union-attr]
    two = rows_of(record("update", {"a": 1, "b": 2}, {"b": 2, "a": 1, "v": "x"}))
    assert two is not None and two.keys == ('{"a":1,"b":2}',)  # same key, any column order
    moved = rows_of(record("update", {"id": 40}, {"id": 4}))
    assert moved is not None and moved.keys == ('{"id":40}', '{"id":4}')
    truncate = rows_of(record("truncate", None))
    assert truncate is not None and truncate.whole_table
    assert rows_of(record("insert", {})).keys == ("{}",)  # type: ignore[union-attr]  # keyless: one row


def test_parked_rows_hold_their_rows_only() -> None:
    parked = ParkedRows()
    parked.written("e1", record("update", {"id": 40}, {"id": 4}))
    assert len(parked) == 2 and parked.lines == 1 and parked.ids == {"e1"}
    for key in (4, 40):
        assert parked.holds(rows_of(record("delete", {"id": key})))  # type: ignore[arg-type]
    assert not parked.holds(rows_of(record("insert", {"id": 5})))  # type: ignore[arg-type]
    assert not parked.holds(rows_of(record("insert", {"id": 4}, table="u")))  # type: ignore[arg-type]
    assert not parked.touches(("public", "u")) and parked.touches(("public", "t"))
    # A truncate of a table with parked rows waits too, and parks the whole table.
    assert parked.holds(rows_of(record("truncate", None)))  # type: ignore[arg-type]
    parked.written("e2", record("truncate", None))
    assert parked.holds(rows_of(record("insert", {"id": 5})))  # type: ignore[arg-type]
    assert len(parked) == 3
    parked.written("e3", record("insert", {"id": 6}))  # inside a parked table: no new entry
    assert len(parked) == 3 and parked.lines == 3
    assert parked.new_rows(rows_of(record("insert", {"id": 1}, table="u"))) == 1  # type: ignore[arg-type]


def test_a_key_read_back_from_the_file_is_the_key_of_the_live_event(tmp_path: Path) -> None:
    def live(n: int, key: dict[str, Any], old: dict[str, Any] | None = None) -> Event:
        body = {"id": f"{n:016X}-1", "op": "update", "schema": "public", "table": "t", "key": key,
                "new": {**key, "doc": {"a": [1, 2]}}, "old": old}
        return Event(body["id"], "update", 1, n, 0, 1, body, encode(body))

    keys: list[dict[str, Any]] = [{"id": 7}, {"n": JsonText("1.50")}, {"t": "x\u00e9", "b": True},
                                  {"big": JsonText("123456789012345678901234567890")},
                                  {"doc": JsonText('{"k": 1}')}]
    path = tmp_path / "dead.jsonl"
    dead = DeadLetterFile(str(path))
    for n, key in enumerate(keys, start=1):
        dead.append(live(n, key), "refused", 400, "")
    dead.close()
    reread = parked_in(str(path))
    assert len(reread) == len(keys) == len(dead.parked)
    for n, key in enumerate(keys, start=10):
        later = rows_of(record_of(live(n, key, old={**key, "doc": JsonText("[]")})))
        assert later is not None and reread.holds(later) and dead.parked.holds(later), key
    assert not reread.holds(rows_of(record_of(live(20, {"id": 8}))))  # type: ignore[arg-type]
    path.write_text('{"not": "a dead letter"}\n')
    with pytest.raises(ConfigError, match=r"dead\.jsonl:1: not a dead letter"):
        DeadLetterFile(str(path))


# -- the deliverer -------------------------------------------------------------------------------


def event(n: int, key: int, v: str = "ok", old: int | None = None, op: str = "insert") -> Event:
    body = {"id": f"{n:016X}-1", "op": op, "schema": "public", "table": "t", "key": {"id": key},
            "new": {"id": key, "v": v}, "old": None if old is None else {"id": old}}
    return Event(body["id"], op, 1, n, 0, 1, body, orjson.dumps(body))


class ScriptedReceiver:
    """Fails (503) every request holding an event ``failing`` says fails; records what it accepted."""

    def __init__(self, failing: Callable[[Event], bool], error: type[Exception] = TransientDeliveryError) -> None:
        self.failing = failing
        self.error = error
        self.requests: list[list[str]] = []
        self.accepted: list[str] = []

    def send(self, batch: Batch) -> int:
        self.requests.append([e.id for e in batch.events])
        if any(self.failing(e) for e in batch.events):
            raise self.error("receiver answered 503 Service Unavailable", status=503)  # type: ignore[call-arg]
        self.accepted.extend(e.id for e in batch.events)
        return 200

    def close(self) -> None:
        pass


class Clock:
    """Each wait moves time on; the deliverer reads time.monotonic, patched to this."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += max(seconds, 0.01)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr("wal2http.delivery.deliverer.time.monotonic", lambda: c.now)
    return c


def make(sink: ScriptedReceiver, clock: Clock, path: Path, *, give_up: GiveUpLimits | None = None,
         max_dead_letters: int | None = None, on_reject: OnReject = OnReject.DEAD_LETTER,
         metrics: Metrics | None = None) -> Deliverer:
    return Deliverer(sink, Breaker(3, 1, 4), clock.wait, on_reject=on_reject, dead_letters=DeadLetterFile(str(path)),
                     metrics=metrics, max_events=10, give_up=give_up, max_dead_letters=max_dead_letters)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_failing_batch_is_narrowed_to_the_failing_event_and_its_row_parked(clock: Clock, tmp_path: Path) -> None:
    dead = tmp_path / "dead.jsonl"
    sink = ScriptedReceiver(lambda e: e.record["new"]["v"] == "bad")
    metrics = Metrics()
    d = make(sink, clock, dead, give_up=GiveUpLimits(after_s=30), metrics=metrics)
    batch = [event(1, 1), event(2, 2, "bad"), event(3, 3), event(4, 2, "later"), event(5, 4)]
    d.deliver(Batch(batch))
    assert sink.accepted == [batch[0].id, batch[2].id, batch[4].id]  # in order, the others delivered
    entries = lines(dead)
    assert [e["event_id"] for e in entries] == [batch[1].id, batch[3].id]
    assert entries[0]["reason"].startswith(f"gave up on {batch[1].id} after ") and "--give-up-after 30" in \
        entries[0]["reason"] and entries[0]["status"] == 503
    assert entries[1]["reason"].startswith("parked")
    assert [batch[3].id] not in sink.requests  # a parked event is never sent
    assert d.given_up == 1 and d.dead_lettered == 2 and d.delivered == 3
    assert metrics.parked_rows == 1 and readiness(metrics)[1]["parked_rows"] == 1
    assert "wal2http_parked_rows 1.0" in generate_latest(metrics.registry()).decode()
    # The batch kept failing for 30 s before it was narrowed, then its bad event for 30 s more.
    assert 59 <= clock.now - 1000 <= 62
    # The next batch: row 2 still parked (a key change parks both keys), other rows go.
    d.deliver(Batch([event(6, 20, old=2, op="update"), event(7, 20), event(8, 5)]))
    assert sink.accepted[-1] == event(8, 5).id and len(lines(dead)) == 4
    assert metrics.parked_rows == 2


def test_give_up_after_attempts_and_without_a_limit_never(clock: Clock, tmp_path: Path) -> None:
    sink = ScriptedReceiver(lambda e: e.record["new"]["v"] == "bad")
    d = make(sink, clock, tmp_path / "a.jsonl", give_up=GiveUpLimits(attempts=3))
    d.deliver(Batch([event(1, 1, "bad")]))
    assert len(sink.requests) == 3 and "after 3 attempts" in lines(tmp_path / "a.jsonl")[0]["reason"]

    class Enough(Exception):
        pass

    def wait(seconds: float) -> None:
        if len(sink.requests) >= 50:
            raise Enough
    sink.requests.clear()
    forever = Deliverer(sink, Breaker(3, 1, 4), wait, max_events=10)
    with pytest.raises(Enough):
        forever.deliver(Batch([event(1, 1, "bad")]))
    assert len(sink.requests) == 50


def test_a_refusal_parks_the_row_too_and_halt_still_halts(clock: Clock, tmp_path: Path) -> None:
    dead = tmp_path / "dead.jsonl"
    sink = ScriptedReceiver(lambda e: e.record["new"]["v"] == "bad", RejectedError)
    d = make(sink, clock, dead)
    d.deliver(Batch([event(1, 1, "bad"), event(2, 1, "fixed"), event(3, 2)]))
    assert [e["event_id"] for e in lines(dead)] == [event(1, 1).id, event(2, 1).id]
    assert sink.accepted == [event(3, 2).id]
    with pytest.raises(RejectedError):
        make(sink, clock, tmp_path / "h.jsonl", on_reject=OnReject.HALT).deliver(Batch([event(4, 3, "bad")]))


def test_the_file_is_the_parked_set_after_a_restart(clock: Clock, tmp_path: Path) -> None:
    dead = tmp_path / "dead.jsonl"
    sink = ScriptedReceiver(lambda e: e.record["new"]["v"] == "bad")
    first = make(sink, clock, dead, give_up=GiveUpLimits(attempts=1))
    first.deliver(Batch([event(1, 1, "bad")]))
    assert first.dead_letters is not None
    first.dead_letters.close()
    # After a crash before the confirmation, the same event comes again: parked, not written twice.
    again = make(ScriptedReceiver(lambda e: False), clock, dead, give_up=GiveUpLimits(attempts=1))
    again.deliver(Batch([event(1, 1, "bad"), event(2, 1, "fixed"), event(3, 2)]))
    assert [e["event_id"] for e in lines(dead)] == [event(1, 1).id, event(2, 1).id]
    assert again.sink.accepted == [event(3, 2).id]  # type: ignore[attr-defined]
    assert len(parked_in(str(dead))) == 1 and parked_in(str(tmp_path / "none.jsonl")).lines == 0
    # Once replay emptied the file, nothing is parked at the next start.
    assert again.dead_letters is not None
    again.dead_letters.close()
    dead.write_text("")
    last = make(ScriptedReceiver(lambda e: False), clock, dead)
    last.deliver(Batch([event(4, 1, "new")]))
    assert last.sink.accepted == [event(4, 1).id]  # type: ignore[attr-defined]


def test_the_diversion_limit_halts_before_writing_past_it(clock: Clock, tmp_path: Path) -> None:
    dead = tmp_path / "dead.jsonl"
    sink = ScriptedReceiver(lambda e: True, RejectedError)
    d = make(sink, clock, dead, max_dead_letters=2)
    d.deliver(Batch([event(1, 1), event(2, 2)]))
    with pytest.raises(DiversionLimit, match=f"2 events are in the dead-letter file {dead}.*--max-dead-letters 2"):
        d.deliver(Batch([event(3, 3)]))
    assert len(lines(dead)) == 2


def test_the_parked_rows_are_bounded(clock: Clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("wal2http.delivery.deliverer.PARKED_ROWS_MAX", 2)
    dead = tmp_path / "dead.jsonl"
    d = make(ScriptedReceiver(lambda e: True, RejectedError), clock, dead)
    d.deliver(Batch([event(1, 1), event(2, 2), event(3, 1)]))  # two rows; row 1 again adds none
    with pytest.raises(DiversionLimit, match="2 rows parked behind dead letters"):
        d.deliver(Batch([event(4, 3)]))
    assert len(lines(dead)) == 3
