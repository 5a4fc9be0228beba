"""Filters, column selections, destination templates and the routes file, without a server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.events import event
from wal2http.config.headers import Header
from wal2http.config.routes_file import load_routes
from wal2http.config.routing import (
    Columns,
    RoutingConfig,
    compile_expression,
    parse_columns,
    parse_template,
    url_template_example,
)
from wal2http.config.sections import HttpConfig, OnReject
from wal2http.decode.events import Event
from wal2http.errors import ConfigError
from wal2http.routing.destination import Destination, Unroutable
from wal2http.routing.selection import Selection


def change(op: str = "update", table: str = "orders", new: dict[str, Any] | None = None,
           old: dict[str, Any] | None = None, toast: list[str] | None = None, key: dict[str, Any] | None = None,
           schema: str = "public") -> Event:
    """A row change as the decoder makes it, with the fields a filter reads."""
    record = {"id": "0000000000000001-1", "op": op, "schema": schema, "table": table, "key": key or {"id": 1},
              "new": new, "old": old, "unchanged_toast": toast or [], "lsn": "0/1", "commit_lsn": "0/1",
              "commit_time": None, "xid": 1, "seq": 1}
    return event(op=op, record=record)


def selects(expression: str, e: Event) -> bool:
    return Selection(RoutingConfig(filter=compile_expression(expression))).apply(e) is not None


def test_a_table_and_op_filter() -> None:
    expression = 'table == "orders" && op in ["insert", "update"]'
    assert selects(expression, change("insert", new={"id": 1}))
    assert not selects(expression, change("delete", old={"id": 1}))
    assert not selects(expression, change("insert", table="lines", new={"id": 1}))
    assert compile_expression(expression).variables == ("op", "table")


def test_entering_and_leaving_a_condition() -> None:
    enters = 'op == "update" && old.status != "paid" && new.status == "paid"'
    leaves = 'op == "update" && old.status == "paid" && new.status != "paid"'
    became = change(new={"id": 1, "status": "paid"}, old={"id": 1, "status": "new"})
    stayed = change(new={"id": 1, "status": "paid"}, old={"id": 1, "status": "paid"})
    left = change(new={"id": 1, "status": "refunded"}, old={"id": 1, "status": "paid"})
    assert [selects(enters, e) for e in (became, stayed, left)] == [True, False, False]
    assert [selects(leaves, e) for e in (became, stayed, left)] == [False, False, True]
    assert compile_expression(enters).needs_old_row


def test_changed_lists_the_columns_whose_value_differs() -> None:
    expression = '"status" in changed'
    assert selects(expression, change(new={"id": 1, "status": "paid", "n": 1}, old={"id": 1, "status": "new", "n": 1}))
    assert not selects(expression, change(new={"id": 1, "status": "new", "n": 2},
                                         old={"id": 1, "status": "new", "n": 1}))
    assert selects(expression, change("insert", new={"id": 1, "status": "new"}))
    assert compile_expression(expression).needs_old_row


def test_an_unchanged_toast_value_is_unknown_not_equal() -> None:
    # "doc" was not sent: comparing it is an error, which does not match, whether == or !=.
    e = change(new={"id": 1}, old=None, toast=["doc"])
    assert not selects('new.doc == "x"', e)
    assert not selects('new.doc != "x"', e)
    assert selects('"doc" in unchanged_toast', e)
    assert selects('!has(new.doc)', e)


def test_an_error_on_one_event_does_not_match_and_does_not_raise() -> None:
    assert not selects('new.status == "paid"', change("delete", old={"id": 1}))  # new is null
    assert not selects('table', change())  # not a bool


def test_a_bad_expression_names_the_expression_and_the_position() -> None:
    with pytest.raises(ConfigError, match=r"--filter 'op == \"a\" &&& table' does not compile at line 1, column"):
        compile_expression('op == "a" &&& table')
    with pytest.raises(ConfigError, match="reads tabel, which an event does not have"):
        compile_expression('tabel == "orders"')


def test_columns_keep_the_named_columns_and_the_whole_key() -> None:
    selection = Selection(RoutingConfig(columns=(Columns("public", "orders", ("status",)),)))
    e = selection.apply(change(new={"id": 1, "status": "paid", "doc": "x"}, old={"id": 1, "status": "new", "doc": "x"},
                              toast=["status", "big"]))
    assert e is not None
    assert (e.record["key"], e.record["new"], e.record["old"], e.record["unchanged_toast"]) == (
        {"id": 1}, {"status": "paid"}, {"status": "new"}, ["status"])
    assert b'"doc"' not in e.body
    other = change(table="lines", new={"id": 1, "doc": "x"})
    assert selection.apply(other) is other


def test_the_filter_reads_columns_that_columns_drop() -> None:
    config = RoutingConfig(filter=compile_expression('new.doc == "x"'), columns=(Columns("public", "orders", ("id",)),))
    e = Selection(config).apply(change(new={"id": 1, "doc": "x"}))
    assert e is not None and e.record["new"] == {"id": 1}


@pytest.mark.parametrize(("spec", "message"), [
    ("orders=a", "SCHEMA.TABLE=COLUMN"), ("public.orders", "SCHEMA.TABLE=COLUMN"), ("public.orders=", "SCHEMA"),
])
def test_bad_columns(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_columns([spec])


def test_columns_of_one_table_twice() -> None:
    with pytest.raises(ConfigError, match="twice"):
        parse_columns(["public.t=a", "public.t=b"])


def test_url_templates_are_percent_encoded_and_headers_are_not() -> None:
    destination = Destination("http://h/{schema}/{table}/{key.id}?op={op}",
                              (Header("X-Table", "{schema}.{table}"), Header("X-Fixed", "f")))
    where = destination.of(change(table="we ird", key={"id": "a/b?c"}).record)
    assert where == ("http://h/public/we%20ird/a%2Fb%3Fc?op=update", (("X-Table", "public.we ird"),))
    assert Destination("http://h/x").templated is False


def test_a_missing_template_value_is_unroutable() -> None:
    destination = Destination("http://h/{key.tenant}")
    with pytest.raises(Unroutable, match=r"no value for \{key.tenant\}"):
        destination.of(change().record)
    with pytest.raises(Unroutable, match="printable"):
        Destination("http://h/", (Header("X-Key", "{key.id}"),)).of(change(key={"id": "a\nb"}).record)


@pytest.mark.parametrize(("url", "message"), [
    ("http://h/{tabel}", "unknown placeholder"), ("http://h/{key.}", "unknown placeholder"),
    ("http://h/{table", "unmatched brace"), ("http://{table}.example/", "not in the host"),
])
def test_bad_templates(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        url_template_example(url)


def test_template_key_columns() -> None:
    assert parse_template("http://h/{key.a}/{table}/{key.b}", "x").key_columns == ("a", "b")


ROUTES = '''
[[route]]
name = "paid"
filter = 'op == "update" && new.status == "paid"'
url = "https://billing.example/orders/{key.id}"
headers = ["X-Source: wal2http", "Authorization: env:BILLING_TOKEN"]
columns = ["public.orders=status"]
format = "cloudevents"
on_reject = "dead-letter"
dead_letter_path = "/tmp/paid.jsonl"

[[route]]
name = "all"
url = "https://archive.example/"
'''


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Any:
    path = tmp_path / "routes.toml"
    path.write_text(text)
    return load_routes(str(path), HttpConfig(url="", timeout_s=3.0), environ or {"BILLING_TOKEN": "t0ken"})


def test_a_routes_file(tmp_path: Path) -> None:
    paid, everything = load(tmp_path, ROUTES)
    assert paid.name == "paid" and paid.on_reject == OnReject.DEAD_LETTER
    assert paid.http.url == "https://billing.example/orders/{key.id}" and paid.http.timeout_s == 3.0
    assert paid.http.format == "cloudevents" and paid.columns == (Columns("public", "orders", ("status",)),)
    assert [h.reveal() for h in paid.http.headers] == ["wal2http", "t0ken"]
    assert paid.filter is not None and paid.filter.variables == ("new", "op")
    assert everything.filter is None and everything.on_reject == OnReject.HALT


@pytest.mark.parametrize(("text", "message"), [
    ("[[route]]\nname = 'a'\n", "url missing"),
    ("[[route]]\nname = 'a'\nurl = 'http://h/'\nfilter = 'op ==='\n", "route 'a': filter 'op ===' does not compile"),
    ("[[route]]\nname = 'a'\nurl = 'http://h/'\nformat = 'xml'\n", "format must be one of json, cloudevents"),
    ("[[route]]\nname = 'a'\nurl = 'http://h/'\non_reject = 'dead-letter'\n", "needs dead_letter_path"),
    ("[[route]]\nname = 'a'\nurl = 'http://h/'\ncolour = 'red'\n", "unknown key 'colour'"),
    ("[[route]]\nname = 'a'\nurl = 'http://h/'\n[[route]]\nname = 'a'\nurl = 'http://i/'\n", "used twice"),
    ("[[route]]\nname = 'a'\nurl = 'http://h/'\nheaders = 'X: y'\n", "headers must be a list of strings"),
    ("[[route]]\nname = 'a'\nurl = 'http://h/'\nheaders = ['Authorization: s3cret']\n", "looks like a secret"),
    ("route = 1\n", "no route"),
    ("[[route]\n", "not valid TOML"),
    ("[other]\n", "unknown table or key other"),
])
def test_bad_routes_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load(tmp_path, text)
    assert "s3cret" not in str(caught.value)


def test_a_table_and_op_answer_is_remembered_per_table_and_op() -> None:
    selection = Selection(RoutingConfig(filter=compile_expression('table == "orders" && op != "delete"')))
    assert selection.filter is not None
    answers = [selection.apply(e) is not None for e in (
        change("insert", new={"id": 1}), change("insert", new={"id": 2}), change("delete", old={"id": 1}),
        change("insert", table="lines", new={"id": 1}), change("insert", schema="other", new={"id": 1}))]
    assert answers == [True, True, False, False, True]
    assert len(selection.filter._answers or {}) == 3  # (op, table): the schema is not read
    # An expression of the row is asked each time.
    assert Selection(RoutingConfig(filter=compile_expression("key.id > 1"))).filter._answers is None  # type: ignore[union-attr]
