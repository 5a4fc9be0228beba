"""Setting up Hook0 from the CLI: ``slot create --hook0-outbox`` and ``check-config --sink hook0``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.fake_hook0 import OUTBOX_DDL, FakeHook0, hook0_args, token_env
from tests.support.pgcluster import Database
from tests.support.process import Start, check, cli, failures
from tests.support.replication import publish, published, slot_row

TOKEN = "hook0-t0ken-never-printed"


@pytest.fixture
def hook0() -> Iterator[FakeHook0]:
    with FakeHook0(token=TOKEN) as fake:
        yield fake


def table_shape(db: Database, schema: str, table: str) -> dict[str, Any]:
    """Everything that makes the table what it is: columns, constraints, comment."""
    oid = db.execute("SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                     "WHERE n.nspname = %s AND c.relname = %s", (schema, table))[0][0]
    columns = db.execute("SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
                         "pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a "
                         "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                         "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum", (oid,))
    constraints = db.execute("SELECT contype, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s "
                             "ORDER BY 1, 2", (oid,))
    comment = db.execute("SELECT obj_description(%s, 'pg_class')", (oid,))[0][0]
    return {"columns": columns, "constraints": constraints, "comment": comment}


def publishes(db: Database, publication: str = "wal2http") -> tuple[bool, ...]:
    return db.execute("SELECT pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication "
                      "WHERE pubname = %s", (publication,))[0]


def hook0_check(binary: str, db: Database, fake: FakeHook0, *args: str, token: str = TOKEN,
                application_id: str | None = None) -> tuple[Any, dict[str, Any]]:
    """check-config --sink hook0 against the fake, text and JSON; no secret may show in either."""
    result, checks = check(
        binary, db.dsn, "--sink", "hook0", "--hook0-api-url", fake.url,
        "--hook0-application-id", application_id or fake.application_id, *args,
        env={"HOOK0_API_TOKEN": token},
    )
    assert token not in result.out + result.err
    return result, checks


# -- slot create --hook0-outbox ----------------------------------------------------------------------


def test_hook0_outbox_is_the_readme_table_published_and_delivered(db: Database, hook0: FakeHook0,
                                                                   wal2http_bin: str, start_wal2http: Start) -> None:
    created = cli(wal2http_bin, "slot", "create", "--hook0-outbox", dsn=db.dsn)
    assert created.code == 0, created.err
    lines = created.out.splitlines()
    assert lines[:2] == ["outbox table public.hook0_outbox created",
                         "publication wal2http created: publishes insert for 1 table: public.hook0_outbox"]
    assert lines[2].startswith("slot wal2http created: plugin pgoutput")
    assert created.err == ""
    assert publishes(db) == (True, False, False, False)  # the sink reads inserts only

    # The very table README.rst shows: same columns, types, defaults, key and comment.
    db.execute("CREATE SCHEMA readme")
    db.execute(OUTBOX_DDL.replace("public.hook0_outbox", "readme.hook0_outbox"))
    made, documented = table_shape(db, "public", "hook0_outbox"), table_shape(db, "readme", "hook0_outbox")
    assert made == documented
    assert "Transactional outbox relayed to Hook0" in made["comment"]
    assert "never deletes them" in made["comment"]

    again = cli(wal2http_bin, "slot", "create", "--hook0-outbox", "--if-not-exists", dsn=db.dsn)
    assert again.code == 0 and again.err == ""
    assert again.out.splitlines()[0] == "outbox table public.hook0_outbox already exists"
    assert cli(wal2http_bin, "slot", "create", "--hook0-outbox", dsn=db.dsn).code == 2  # the slot exists
    refused = cli(wal2http_bin, "slot", "create", "--hook0-outbox", "--slot", "other", dsn=db.dsn)
    assert refused.code == 2
    assert "table public.hook0_outbox already exists; pass --if-not-exists" in refused.err
    assert slot_row(db, "other") is None

    # What the sink reads from it, end to end.
    hook0.add_event_type("billing.invoice.paid")
    wal2http = start_wal2http(*hook0_args(hook0), env=token_env(hook0))
    db.execute("INSERT INTO hook0_outbox (event_type, payload, labels) "
               "VALUES ('billing.invoice.paid', '{\"invoice_id\": 42}', '{\"tenant\": \"acme\"}')")
    (event,) = hook0.wait_for_events(1)
    assert wal2http.stop() == 0
    row_id = db.execute("SELECT event_id::text FROM hook0_outbox")[0][0]
    assert event.raw["event_id"] == row_id and event.raw["labels"] == {"tenant": "acme"}
    assert event.raw["payload"] == '{"invoice_id": 42}'


def test_hook0_outbox_is_added_to_an_existing_publication(db: Database, wal2http_bin: str) -> None:
    publish(db, "CREATE TABLE orders (id int PRIMARY KEY)", 'CREATE SCHEMA "Shop"', tables="orders")
    created = cli(wal2http_bin, "slot", "create", "--hook0-outbox", "--hook0-outbox-table", "Shop.Events",
                  "--json", dsn=db.dsn)
    assert created.code == 0, created.err
    result = created.json()
    assert result["outbox"] == {"table": '"Shop"."Events"', "created": True, "added_to_publication": True}
    assert published(db) == ["Shop.Events", "public.orders"]
    assert publishes(db) == (True, True, True, True)  # otherwise unchanged
    assert "Transactional outbox" in table_shape(db, "Shop", "Events")["comment"]

    text = cli(wal2http_bin, "slot", "create", "--hook0-outbox", "--hook0-outbox-table", "Shop.Events",
               "--if-not-exists", dsn=db.dsn)
    assert text.code == 0
    assert text.out.splitlines()[0] == 'outbox table "Shop"."Events" already exists'
    assert "added to publication" not in text.out  # it is in it now

    # A publication that does not stream inserts is not changed (other tables depend on it): said.
    db.execute("CREATE PUBLICATION deletes FOR TABLE orders WITH (publish = 'delete')")
    deletes = cli(wal2http_bin, "slot", "create", "--slot", "deletes", "--publication", "deletes",
                  "--hook0-outbox", dsn=db.dsn)
    assert deletes.code == 0
    assert deletes.out.splitlines()[2] == ("outbox table public.hook0_outbox added to publication deletes, "
                                           "which did not publish it")
    assert ("warning: publication deletes does not publish insert: outbox rows would not be streamed; "
            "ALTER PUBLICATION deletes SET (publish = 'insert, delete');") in deletes.err
    assert published(db, "deletes") == ["public.hook0_outbox", "public.orders"]


def test_hook0_outbox_with_other_tables_publishes_every_operation(db: Database, wal2http_bin: str) -> None:
    db.execute("CREATE SCHEMA app")
    db.execute("CREATE TABLE app.orders (id int PRIMARY KEY)")
    created = cli(wal2http_bin, "slot", "create", "--table", "app.orders", "--hook0-outbox", "--hook0-outbox-table",
                  "app.outbox", dsn=db.dsn)
    assert created.code == 0, created.err
    assert created.out.splitlines()[:2] == [
        "outbox table app.outbox created",
        "publication wal2http created: publishes insert, update, delete, truncate for 2 tables: app.orders, app.outbox"]
    assert publishes(db) == (True, True, True, True)  # other tables: the default stays all four


def test_hook0_outbox_without_the_columns_the_sink_reads_is_refused(db: Database, wal2http_bin: str) -> None:
    db.execute("CREATE TABLE hook0_outbox (event_id uuid PRIMARY KEY, event_type text NOT NULL, payload text)")
    refused = cli(wal2http_bin, "slot", "create", "--hook0-outbox", "--if-not-exists", dsn=db.dsn)
    assert refused.code == 2
    assert "public.hook0_outbox: column payload accepts NULL" in refused.err
    assert "no column labels, which every row needs" in refused.err
    assert "ALTER TABLE public.hook0_outbox ADD COLUMN labels jsonb NOT NULL;" in refused.err
    assert slot_row(db) is None and not db.execute("SELECT 1 FROM pg_publication")


# -- check-config --sink hook0 -----------------------------------------------------------------------


def test_a_ready_outbox_passes_every_hook0_check_and_sends_no_event(db: Database, hook0: FakeHook0,
                                                                    wal2http_bin: str) -> None:
    assert cli(wal2http_bin, "slot", "create", "--hook0-outbox", dsn=db.dsn).code == 0
    result, checks = hook0_check(wal2http_bin, db, hook0)
    assert result.code == 0, result.out
    assert failures(checks) == []
    for name in ("hook0 outbox table", "hook0 outbox publication", "hook0 api", "hook0 token"):
        assert checks[name]["status"] == "ok", checks[name]
    assert "labels jsonb" in checks["hook0 outbox table"]["detail"]
    assert checks["hook0 token"]["detail"].startswith(f"accepted for application {hook0.application_id}")
    assert "hook0 event types" not in checks  # outbox rows name their own types
    assert {(r.method, r.path.split("?")[0]) for r in hook0.requests} == {
        ("GET", "/api/v1/instance"), ("GET", "/api/v1/event_types")}
    assert all("authorization" not in r.headers for r in hook0.requests if r.path == "/api/v1/instance")
    assert hook0.events() == []

    offline, _ = hook0_check(wal2http_bin, db, hook0, "--offline")
    assert offline.code == 0 and len(hook0.requests) == 4  # the two runs above, nothing more


def test_a_bad_token_fails_without_being_shown(db: Database, hook0: FakeHook0, wal2http_bin: str) -> None:
    assert cli(wal2http_bin, "slot", "create", "--hook0-outbox", dsn=db.dsn).code == 0
    result, checks = hook0_check(wal2http_bin, db, hook0, token="wrong-t0ken-value")
    assert result.code == 2 and failures(checks) == ["hook0 token"]
    token = checks["hook0 token"]
    assert token["detail"] == ("Hook0 refused the API token (403 AuthInvalidBiscuit: The provided token is "
                               "not valid.)")
    assert "WAL2HTTP_HOOK0_API_TOKEN or --hook0-api-token-file" in token["fix"]
    assert "FAILED   hook0 token: Hook0 refused the API token" in result.out


def test_a_token_of_another_application(db: Database, hook0: FakeHook0, wal2http_bin: str) -> None:
    assert cli(wal2http_bin, "slot", "create", "--hook0-outbox", dsn=db.dsn).code == 0
    other = str(uuid.uuid4())
    # Changes mode lists event types: failed. Outbox mode may use a token restricted to ingesting: warned.
    result, checks = hook0_check(wal2http_bin, db, hook0, "--hook0-mode", "changes", application_id=other)
    assert result.code == 2 and failures(checks) == ["hook0 token"]
    assert f"refused it application {other} (403 Forbidden" in checks["hook0 token"]["detail"]
    result, checks = hook0_check(wal2http_bin, db, hook0, application_id=other)
    assert result.code == 0 and checks["hook0 token"]["status"] == "warning"


def test_an_api_url_that_is_not_hook0s_api(db: Database, hook0: FakeHook0, wal2http_bin: str) -> None:
    assert cli(wal2http_bin, "slot", "create", "--hook0-outbox", dsn=db.dsn).code == 0
    result, checks = check(
        wal2http_bin, db.dsn, "--sink", "hook0", "--hook0-api-url", hook0.url.removesuffix("/api/v1"),
        "--hook0-application-id", hook0.application_id, env={"HOOK0_API_TOKEN": TOKEN})
    assert result.code == 2 and failures(checks) == ["hook0 api"]
    assert checks["hook0 api"]["detail"].endswith("/instance answered 404 NotFound: no route for GET /instance: "
                                                  "not Hook0's API")
    assert "hook0 token" not in checks  # the token is not sent to what is not the API
    assert all("authorization" not in r.headers for r in hook0.requests)


def test_a_missing_outbox_column(db: Database, hook0: FakeHook0, wal2http_bin: str) -> None:
    assert cli(wal2http_bin, "slot", "create", "--hook0-outbox", dsn=db.dsn).code == 0
    db.execute("ALTER TABLE hook0_outbox DROP COLUMN labels")
    result, checks = hook0_check(wal2http_bin, db, hook0)
    assert result.code == 2 and failures(checks) == ["hook0 outbox table"]
    table = checks["hook0 outbox table"]
    assert table["detail"] == "public.hook0_outbox: no column labels, which every row needs"
    assert table["fix"] == "ALTER TABLE public.hook0_outbox ADD COLUMN labels jsonb NOT NULL;"
    db.execute(table["fix"])  # the fix as given works
    assert hook0_check(wal2http_bin, db, hook0)[0].code == 0


def test_an_outbox_table_not_in_the_publication(db: Database, hook0: FakeHook0, wal2http_bin: str) -> None:
    publish(db, OUTBOX_DDL, "CREATE TABLE orders (id int PRIMARY KEY)", tables="orders")
    db.execute("SELECT pg_create_logical_replication_slot('wal2http', 'pgoutput')")
    result, checks = hook0_check(wal2http_bin, db, hook0)
    assert result.code == 2 and failures(checks) == ["hook0 outbox publication"]
    publication = checks["hook0 outbox publication"]
    assert publication["detail"] == ("public.hook0_outbox is not in publication wal2http: its rows would not "
                                     "be streamed")
    command = "wal2http slot create --hook0-outbox --if-not-exists"
    assert publication["fix"] == f"ALTER PUBLICATION wal2http ADD TABLE public.hook0_outbox; or {command}"
    fixed = cli(wal2http_bin, *command.split()[1:], dsn=db.dsn)  # the suggested command works
    assert fixed.code == 0 and "added to publication wal2http" in fixed.out
    assert hook0_check(wal2http_bin, db, hook0)[0].code == 0


def test_a_missing_outbox_table(db: Database, hook0: FakeHook0, wal2http_bin: str) -> None:
    publish(db, "CREATE TABLE orders (id int PRIMARY KEY)", tables="orders")
    db.execute("SELECT pg_create_logical_replication_slot('wal2http', 'pgoutput')")
    result, checks = hook0_check(wal2http_bin, db, hook0, "--hook0-outbox-table", "app.outbox")
    assert result.code == 2 and failures(checks) == ["hook0 outbox table"]
    assert checks["hook0 outbox table"]["detail"] == ("app.outbox does not exist: no change would become a "
                                                      "Hook0 event")
    assert "wal2http slot create --hook0-outbox --hook0-outbox-table app.outbox --if-not-exists" in (
        checks["hook0 outbox table"]["fix"])
    # With --messages, pg_logical_emit_message() is the outbox: a warning only.
    result, checks = hook0_check(wal2http_bin, db, hook0, "--messages")
    assert result.code == 0 and checks["hook0 outbox table"]["status"] == "warning"
    assert "only pg_logical_emit_message() messages prefixed 'hook0'" in checks["hook0 outbox table"]["detail"]


def test_changes_mode_needs_the_event_types_of_published_tables(db: Database, hook0: FakeHook0,
                                                               wal2http_bin: str) -> None:
    publish(db, "CREATE TABLE orders (id int PRIMARY KEY)", "CREATE TABLE customers (id int PRIMARY KEY)",
            tables="orders, customers")
    db.execute("ALTER PUBLICATION wal2http SET (publish = 'insert, update')")
    db.execute("SELECT pg_create_logical_replication_slot('wal2http', 'pgoutput')")
    hook0.add_event_type("shop.orders.inserted")
    hook0.add_event_type("shop.orders.updated")
    changes = ("--hook0-mode", "changes", "--hook0-service", "shop")
    result, checks = hook0_check(wal2http_bin, db, hook0, *changes)
    assert result.code == 2 and failures(checks) == ["hook0 event types"]
    types = checks["hook0 event types"]
    assert types["detail"] == (f"application {hook0.application_id} lacks 2 of the 4 event types of the "
                               "published tables: shop.customers.inserted, shop.customers.updated; their events "
                               "would be rejected (EventTypeDoesNotExist)")
    assert types["fix"] == "pass --hook0-ensure-event-types, or create them in Hook0"

    ensured, checks = hook0_check(wal2http_bin, db, hook0, *changes, "--hook0-ensure-event-types")
    assert ensured.code == 0
    assert "--hook0-ensure-event-types creates them at start" in checks["hook0 event types"]["detail"]
    assert hook0.event_types() == {"shop.orders.inserted", "shop.orders.updated"}  # check-config creates nothing

    hook0.add_event_type("shop.customers.inserted")
    hook0.add_event_type("shop.customers.updated")
    complete, checks = hook0_check(wal2http_bin, db, hook0, *changes)
    assert complete.code == 0
    assert checks["hook0 event types"]["detail"] == (
        f"all 4 event types of the published tables exist in application {hook0.application_id}")
