"""The Hook0 outbox columns and event types ``check-config`` judges, without a server."""

from __future__ import annotations

import pytest

from wal2http.checklist import Status
from wal2http.config.hook0 import Hook0Config
from wal2http.config.secrets import Secret
from wal2http.config.sections import HttpConfig, SourceConfig
from wal2http.hook0.checks import (
    Published,
    create_command,
    event_types_check,
    outbox_table_check,
)
from wal2http.pg.outbox import COLUMNS, Column, Table

APP = "6f1c8a52-0d3e-4b7a-9c2f-5e8d1a4b7c90"
TYPES = {"uuid": "uuid", "text": "text", "jsonb": "jsonb", "timestamptz": "timestamp with time zone",
         "xid8": "xid8"}


def readme_table(**changes: str | None) -> Table:
    """The README's outbox table, with some columns retyped (or dropped with None)."""
    columns = []
    for name, definition in COLUMNS:
        kind = changes[name] if name in changes else TYPES[definition.split()[0]]
        if kind is not None:
            columns.append(Column(name, kind, "NOT NULL" in definition or "PRIMARY KEY" in definition, False))
    return Table("public.hook0_outbox", "r", tuple(columns))


def judge(table: Table | None, messages: bool = False) -> tuple[Status, str, str | None]:
    check = outbox_table_check(table, "public.hook0_outbox", messages=messages, prefix="hook0",
                               create="wal2http slot create --hook0-outbox --if-not-exists")
    return check.status, check.detail, check.fix


def test_the_readme_table_is_ok() -> None:
    status, detail, _ = judge(readme_table())
    assert status is Status.OK
    assert detail.endswith("occurred_at timestamp with time zone")
    assert "txid" not in detail  # not read by the sink


@pytest.mark.parametrize(("changes", "status", "words"), [
    ({"labels": "text"}, Status.FAILED, "column labels is text, so every row would be rejected: the Hook0 "
                                        "sink needs json or jsonb"),
    ({"occurred_at": "timestamp without time zone"}, Status.FAILED, "needs timestamp with time zone"),
    ({"event_id": "bigint"}, Status.FAILED, "column event_id is bigint, so every row would be rejected"),
    ({"metadata": "text"}, Status.FAILED, "column metadata is text"),
    ({"event_id": "text"}, Status.WARNING, "a row whose event_id is not a UUID is rejected"),
    ({"occurred_at": "text"}, Status.WARNING, "is not a timestamp with a time zone is rejected"),
    ({"payload": "bytea"}, Status.WARNING, "its values are sent as their JSON or text form"),
    ({"payload": "json", "labels": "json", "metadata": None, "occurred_at": None, "event_id": None,
      "payload_content_type": None}, Status.OK, "has the columns"),
    ({"event_type": None}, Status.FAILED, "no column event_type, which every row needs"),
])
def test_columns_are_judged_by_what_the_sink_does_with_them(changes: dict[str, str | None], status: Status,
                                                             words: str) -> None:
    found, detail, fix = judge(readme_table(**changes))
    assert found is status and words in detail
    assert (fix is None) == (status is Status.OK)


def test_created_at_stands_for_occurred_at_and_enums_are_text() -> None:
    table = readme_table(occurred_at=None)
    table = Table(table.name, "r", (*table.columns, Column("created_at", "timestamp without time zone", True, False)))
    status, detail, fix = judge(table)
    assert status is Status.FAILED and "column created_at is timestamp without time zone" in detail
    assert fix == ("ALTER TABLE public.hook0_outbox ALTER COLUMN created_at TYPE timestamptz "
                   "USING created_at::timestamptz;")
    enum = Table("public.hook0_outbox", "r", tuple(
        Column(c.name, "event_kind", c.not_null, True) if c.name == "event_type" else c
        for c in readme_table().columns))
    assert judge(enum)[0] is Status.OK


def test_nullable_required_columns_warn_and_views_fail() -> None:
    nullable = Table("public.hook0_outbox", "r", tuple(
        Column(c.name, c.type, False, c.enum) for c in readme_table().columns))
    status, detail, fix = judge(nullable)
    assert status is Status.WARNING
    assert "column event_type accepts NULL" in detail and "column labels accepts NULL" in detail
    assert fix is not None and "ALTER TABLE public.hook0_outbox ALTER COLUMN labels SET NOT NULL;" in fix
    view = Table("public.hook0_outbox", "v", readme_table().columns)
    assert judge(view)[0] is Status.FAILED


def test_a_missing_table_fails_unless_messages_are_the_outbox() -> None:
    assert judge(None)[0] is Status.FAILED
    status, detail, _ = judge(None, messages=True)
    assert status is Status.WARNING and "messages prefixed 'hook0'" in detail


def test_the_create_command_names_non_default_settings() -> None:
    source = SourceConfig(Secret(""), publication="events")
    assert create_command(("app", "Outbox"), source) == (
        "wal2http slot create --hook0-outbox --publication events --hook0-outbox-table app.Outbox --if-not-exists")
    assert create_command(("public", "hook0_outbox"), SourceConfig(Secret(""))) == (
        "wal2http slot create --hook0-outbox --if-not-exists")


def hook0(**settings: object) -> Hook0Config:
    return Hook0Config(HttpConfig("https://app.hook0.com/api/v1"), APP, Secret("t"),  # type: ignore[arg-type]
                       mode="changes", **settings)


def test_event_types_follow_the_published_tables_and_operations() -> None:
    changes = Published("Shop-DB", (("public", "orders"), ("audit", "orders"), ("public", "line items")),
                        ("insert", "delete"))
    check = event_types_check(hook0(), changes, {"Shop_DB.orders.inserted"})
    assert check.status is Status.FAILED
    assert check.detail.startswith(f"application {APP} lacks 3 of the 4 event types of the published tables: "
                                   "Shop_DB.line_items.deleted, Shop_DB.line_items.inserted, "
                                   "Shop_DB.orders.deleted;")
    assert event_types_check(hook0(service="shop"), changes, set()).detail.count("shop.") == 4
    assert event_types_check(hook0(ensure_event_types=True), changes, set()).status is Status.OK
    nothing = Published("db", (), ("insert",))
    assert event_types_check(hook0(), nothing, set()).status is Status.OK
