"""Filters, column selection and destinations taken from the event, against a real server and receiver."""

from __future__ import annotations

import json
import time
from pathlib import Path

from cloudevents.core.bindings.http import HTTPMessage, from_http_event

from tests.support import wait_until
from tests.support.pgcluster import Database
from tests.support.process import Start, run_once
from tests.support.receiver import Receiver
from tests.support.replication import publish
from wal2http.lsn import parse_lsn

PAID = 'op == "update" && old.status != "paid" && new.status == "paid"'
ORDERS = ["CREATE TABLE orders (id int PRIMARY KEY, tenant text, status text, doc text)",
          "CREATE TABLE audit (id int PRIMARY KEY, note text)"]


def test_a_filter_sends_only_the_rows_that_enter_a_condition(db: Database, receiver: Receiver,
                                                            start_wal2http: Start) -> None:
    publish(db, *ORDERS, "ALTER TABLE orders REPLICA IDENTITY FULL", "ALTER TABLE audit REPLICA IDENTITY FULL",
            tables="orders, audit")
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url, "--filter", PAID)
    db.execute("INSERT INTO orders VALUES (1, 'a', 'new', 'x'), (2, 'b', 'new', 'y')")
    db.execute("UPDATE orders SET status = 'paid' WHERE id = 1")
    db.execute("UPDATE orders SET doc = 'z' WHERE id = 1")  # still paid: not entering the condition
    db.execute("INSERT INTO audit VALUES (1, 'n')")
    db.execute("UPDATE orders SET status = 'paid' WHERE id = 2")
    db.execute("DELETE FROM orders")  # new is null: no match, and no error stops the stream
    events = receiver.wait_for_events(2)
    lsn = db.cluster.current_wal_lsn()
    wait_until(lambda: (db.cluster.confirmed_flush_lsn("wal2http") or 0) >= lsn, timeout=20,
               what="the filtered-out changes confirmed")
    assert wal2http.stop() == 0
    assert [(e["table"], e["key"], e["new"]["status"]) for e in receiver.events()] == [
        ("orders", {"id": 1}, "paid"), ("orders", {"id": 2}, "paid")]
    assert [e["old"]["status"] for e in events] == ["new", "new"]


def test_a_filter_dropping_everything_keeps_the_slot_confirmed(db: Database, receiver: Receiver,
                                                              start_wal2http: Start) -> None:
    publish(db, *ORDERS, tables="orders")
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url,
                              "--filter", 'table == "nothing"')
    deadline = time.monotonic() + 6
    n = 0
    while time.monotonic() < deadline and n < 300:  # a bounded load: 300 transactions of 20 rows
        db.execute("INSERT INTO orders SELECT g, 't', 'new', repeat('x', 200) FROM generate_series(%s, %s) g",
                   (n * 20, n * 20 + 19))
        n += 1
    lsn = db.cluster.current_wal_lsn()
    wait_until(lambda: (db.cluster.confirmed_flush_lsn("wal2http") or 0) >= lsn, timeout=10,
               what="the slot confirmed up to the current WAL position")
    assert wal2http.stop() == 0
    assert receiver.requests == []
    assert "0 events delivered" in wal2http.stderr
    assert "nothing left undelivered" in wal2http.stderr  # a filtered-out change is not left behind


def test_columns_keep_only_the_named_columns_and_the_whole_key(db: Database, receiver: Receiver,
                                                              start_wal2http: Start, tmp_path: Path) -> None:
    publish(db, *ORDERS, "ALTER TABLE orders REPLICA IDENTITY FULL", tables="orders, audit")
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url,
                              "--columns", "public.orders=status")
    db.execute("INSERT INTO orders VALUES (1, 'a', 'new', repeat('x', 5000))")
    db.execute("UPDATE orders SET status = 'paid'")
    db.execute("INSERT INTO audit VALUES (1, 'n')")
    events = receiver.wait_for_events(3)
    assert wal2http.stop() == 0
    assert events[0]["new"] == {"status": "new"} and events[0]["key"] == {"id": 1}
    assert events[1]["new"] == {"status": "paid"} and events[1]["old"] == {"status": "new"}
    assert events[2]["new"] == {"id": 1, "note": "n"}  # another table: whole


def test_filter_and_columns_apply_to_the_file_sink_and_to_backfills(db: Database, start_wal2http: Start,
                                                                   tmp_path: Path) -> None:
    publish(db, *ORDERS, tables="orders, audit")
    db.execute("INSERT INTO orders SELECT g, 't' || (g % 2), 'new', 'big' FROM generate_series(1, 6) g")
    out = tmp_path / "events.jsonl"
    wal2http = start_wal2http("--create-slot", "--backfill", "--sink", "file", "--file-path", str(out),
                              "--filter", 'table == "orders" && new.tenant == "t1"',
                              "--columns", "public.orders=tenant")
    db.execute("INSERT INTO orders VALUES (7, 't1', 'new', 'big'), (8, 't0', 'new', 'big')")

    def lines() -> list[dict[str, object]]:
        return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []

    def arrived() -> set[tuple[object, object]]:
        return {(e["op"], e["key"]["id"]) for e in lines()}  # type: ignore[index]

    wanted = {("read", 1), ("read", 3), ("read", 5), ("insert", 7)}
    wait_until(lambda: wanted <= arrived(), timeout=30, what="three backfilled rows and one insert")
    assert wal2http.stop() == 0
    got = lines()
    # Only tenant t1's rows; the backfill may read row 7 too, if it reads the table after the insert.
    assert arrived() - wanted <= {("read", 7)}
    assert all(e["new"] == {"tenant": "t1"} for e in got)


def test_url_and_header_templates_split_batches_by_destination(db: Database, receiver: Receiver,
                                                              start_wal2http: Start) -> None:
    publish(db, *ORDERS, tables="orders, audit")
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--batch-size", "50",
                              "--http-url", receiver.url + "/{schema}/{table}/{key.id}?op={op}",
                              "--header", "X-Table: {schema}.{table}")
    with db.connect() as conn, conn.cursor() as cur:
        conn.autocommit = False
        cur.execute("INSERT INTO orders VALUES (1, 'a', 'new', 'x')")
        cur.execute("INSERT INTO audit VALUES (1, 'n'), (2, 'a b/c')")
        cur.execute("UPDATE orders SET status = 'paid'")
        conn.commit()
    db.execute("CREATE TABLE \"we ird\" (id text PRIMARY KEY)")
    db.execute("ALTER PUBLICATION wal2http ADD TABLE \"we ird\"")
    db.execute("INSERT INTO \"we ird\" VALUES ('a/b?c')")
    requests = receiver.wait_for_requests(5)
    assert wal2http.stop() == 0
    assert [(r.path, r.headers["x-table"], len(r.json()) if isinstance(r.json(), list) else 1)
            for r in requests] == [
        ("/hook/public/orders/1?op=insert", "public.orders", 1),
        ("/hook/public/audit/1?op=insert", "public.audit", 1),
        ("/hook/public/audit/2?op=insert", "public.audit", 1),
        ("/hook/public/orders/1?op=update", "public.orders", 1),
        ("/hook/public/we%20ird/a%2Fb%3Fc?op=insert", "public.we ird", 1),
    ]


def test_run_and_check_config_refuse_old_values_without_replica_identity_full(
        db: Database, wal2http_bin: str) -> None:
    publish(db, *ORDERS, "ALTER TABLE audit REPLICA IDENTITY FULL", tables="orders, audit")
    env = {"WAL2HTTP_DSN": db.dsn}
    for command in ("check-config", "run"):
        code, out, err = run_once(wal2http_bin, [command, "--create-slot", "--sink", "stdout", "--filter", PAID],
                                  env, timeout=60)
        err += out  # check-config prints its checklist
        assert code == 2, (command, err)
        assert "ALTER TABLE public.orders REPLICA IDENTITY FULL" in err, err
        assert "audit" not in err.split("ALTER TABLE", 1)[1], err


def test_a_bad_expression_is_a_configuration_error_naming_the_position(db: Database, wal2http_bin: str) -> None:
    code, _out, err = run_once(wal2http_bin, ["run", "--sink", "stdout", "--filter", 'table == "a" &&& op'],
                               {"WAL2HTTP_DSN": db.dsn})
    assert code == 2
    assert "--filter" in err and "line 1, column" in err and "&&&" in err, err


def write_routes(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def paid_and_audit_routes(tmp_path: Path, paid: Receiver, audit: Receiver, audit_extra: str = "",
                          paid_extra: str = "") -> str:
    return write_routes(tmp_path / "routes.toml", f'''
[[route]]
name = "paid-orders"
filter = '{PAID}'
url = "{paid.url}/orders/{{key.id}}"
columns = ["public.orders=status"]
{paid_extra}

[[route]]
name = "audit"
filter = 'table == "audit" || (table == "orders" && op == "delete")'
url = "{audit.url}"
headers = ["X-Route: audit"]
{audit_extra}
''')


def test_routes_send_each_event_to_every_route_it_matches(db: Database, receiver: Receiver,
                                                         start_wal2http: Start, tmp_path: Path) -> None:
    publish(db, *ORDERS, "ALTER TABLE orders REPLICA IDENTITY FULL", "ALTER TABLE audit REPLICA IDENTITY FULL",
            tables="orders, audit")
    with Receiver() as audit:
        routes = paid_and_audit_routes(tmp_path, receiver, audit)
        wal2http = start_wal2http("--create-slot", "--sink", "http", "--routes", routes)
        db.execute("INSERT INTO orders VALUES (1, 'a', 'new', 'x')")
        db.execute("INSERT INTO audit VALUES (1, 'n')")
        db.execute("UPDATE orders SET status = 'paid'")
        db.execute("DELETE FROM orders")
        paid = receiver.wait_for_requests(1)
        audited = audit.wait_for_requests(2)
        lsn = db.cluster.current_wal_lsn()
        wait_until(lambda: (db.cluster.confirmed_flush_lsn("wal2http") or 0) >= lsn, timeout=20,
                   what="every route's changes confirmed")
        assert wal2http.stop() == 0
    assert [(r.path, r.json()["new"]) for r in paid] == [("/hook/orders/1", {"status": "paid"})]
    assert [(r.json()["table"], r.json()["op"], r.headers["x-route"]) for r in audited] == [
        ("audit", "insert", "audit"), ("orders", "delete", "audit")]
    assert audited[1].json()["old"]["doc"] == "x"  # another route's columns do not narrow this one's


def test_one_routes_outage_holds_every_route_unless_it_gives_up(db: Database, receiver: Receiver,
                                                                start_wal2http: Start, tmp_path: Path) -> None:
    publish(db, *ORDERS, "ALTER TABLE orders REPLICA IDENTITY FULL", "ALTER TABLE audit REPLICA IDENTITY FULL",
            tables="orders, audit")
    db.execute("INSERT INTO orders VALUES (1, 'a', 'new', 'x')")
    with Receiver() as audit:
        audit.set_status(503)
        routes = paid_and_audit_routes(tmp_path, receiver, audit)
        # One event per batch: the paid route is not served in the same batch as the failing one.
        wal2http = start_wal2http("--create-slot", "--sink", "http", "--routes", routes, "--batch-size", "1")
        db.execute("INSERT INTO audit VALUES (1, 'n')")
        db.execute("UPDATE orders SET status = 'paid'")
        wait_until(lambda: len(audit.requests) >= 2, timeout=20, what="the audit route retrying")
        time.sleep(1)
        assert receiver.requests == []  # held behind the audit route's failing event
        held = parse_lsn(audit.requests[0].json()["commit_lsn"])
        assert (db.cluster.confirmed_flush_lsn("wal2http") or 0) < held
        audit.set_status(None)
        assert len(receiver.wait_for_requests(1)) == 1
        assert wal2http.stop() == 0

    # With a dead-letter policy the failing route gives its event up, and the others go on.
    dead = tmp_path / "audit.dead.jsonl"
    receiver.clear()
    db.execute("SELECT pg_drop_replication_slot('wal2http')")
    db.execute("UPDATE orders SET status = 'new'")
    with Receiver() as audit:
        audit.set_status(503)
        routes = paid_and_audit_routes(tmp_path, receiver, audit,
                                       audit_extra=f'on_reject = "dead-letter"\ndead_letter_path = "{dead}"',
                                       paid_extra=f'dead_letter_path = "{tmp_path / "paid.dead.jsonl"}"')
        wal2http = start_wal2http("--create-slot", "--sink", "http", "--routes", routes, "--give-up-attempts", "2")
        db.execute("INSERT INTO audit VALUES (2, 'n')")
        db.execute("UPDATE orders SET status = 'paid'")
        assert [r.json()["key"] for r in receiver.wait_for_requests(1)] == [{"id": 1}]
        assert wal2http.stop() == 0
    assert [json.loads(line)["event"]["key"] for line in dead.read_text().splitlines()] == [{"id": 2}]


def test_routes_test_shows_what_each_route_would_send(db: Database, wal2http_bin: str, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps(e) for e in [
        {"id": "0/1-1", "op": "update", "schema": "public", "table": "orders", "key": {"id": 7},
         "new": {"id": 7, "status": "paid", "doc": "x"}, "old": {"id": 7, "status": "new", "doc": "x"},
         "unchanged_toast": []},
        {"id": "0/2-1", "op": "insert", "schema": "public", "table": "audit", "key": {"id": 1},
         "new": {"id": 1, "note": "n"}, "old": None, "unchanged_toast": []},
    ]) + "\n")
    with Receiver() as paid, Receiver() as audit:
        routes = paid_and_audit_routes(tmp_path, paid, audit)
        code, out, err = run_once(wal2http_bin, ["routes", "test", "--routes", routes, str(events)], {})
        code_json, out_json, _ = run_once(wal2http_bin, ["routes", "test", "--routes", routes, "--json",
                                                         str(events)], {})
        assert paid.requests == [] and audit.requests == []  # nothing is sent
    assert code == 0, err
    assert f"POST {paid.url}/orders/7" in out and f"POST {audit.url}" in out, out
    assert "0/1-1" in out and "paid-orders" in out and "X-Route: audit" in out, out
    shown = [json.loads(line) for line in out_json.splitlines()]
    assert code_json == 0
    assert [(s["event"], [r["route"] for r in s["routes"]]) for s in shown] == [
        ("0/1-1", ["paid-orders"]), ("0/2-1", ["audit"])]
    assert json.loads(shown[0]["routes"][0]["body"])["new"] == {"status": "paid"}


def test_check_config_validates_routes(db: Database, wal2http_bin: str, tmp_path: Path) -> None:
    publish(db, *ORDERS, tables="orders, audit")
    env = {"WAL2HTTP_DSN": db.dsn}
    broken = write_routes(tmp_path / "bad.toml", '[[route]]\nname = "x"\nurl = "http://127.0.0.1:9/{key.nope}"\n'
                                                  'filter = \'table == "a" &&\'\n')
    code, out, err = run_once(wal2http_bin, ["check-config", "--sink", "http", "--routes", broken], env)
    assert code == 2 and "route 'x'" in out + err and "filter" in out + err, out + err
    unknown_column = write_routes(tmp_path / "col.toml",
                                  '[[route]]\nname = "x"\nurl = "http://127.0.0.1:9/{key.nope}"\n')
    code, out, err = run_once(wal2http_bin, ["check-config", "--create-slot", "--sink", "http", "--routes",
                                             unknown_column], env)
    assert code == 2 and "{key.nope}" in out and "no published table" in out, out + err
    needs_full = write_routes(tmp_path / "full.toml",
                              f'[[route]]\nname = "x"\nurl = "http://127.0.0.1:9/"\nfilter = \'{PAID}\'\n')
    code, out, err = run_once(wal2http_bin, ["check-config", "--create-slot", "--sink", "http", "--routes",
                                             needs_full], env)
    assert code == 2 and "ALTER TABLE public.orders REPLICA IDENTITY FULL" in out, out + err
    code, out, err = run_once(wal2http_bin, ["check-config", "--offline", "--sink", "http", "--routes", needs_full,
                                             "--http-url", "http://127.0.0.1:9/"], env)
    assert code == 2 and "FAILED   routes: --routes gives each route its url: leave out --http-url" in out, out + err


def test_check_config_checks_that_each_routes_receiver_accepts_connections(db: Database, receiver: Receiver,
                                                                           wal2http_bin: str, tmp_path: Path) -> None:
    publish(db, *ORDERS, tables="orders, audit")
    routes = write_routes(tmp_path / "routes.toml", f'''
[[route]]
name = "up"
url = "{receiver.url}/{{table}}"

[[route]]
name = "down"
url = "http://127.0.0.1:9/orders"

[[route]]
name = "per-tenant"
url = "http://{{table}}.example.com/"
''')
    code, out, err = run_once(wal2http_bin, ["check-config", "--json", "--create-slot", "--sink", "http",
                                             "--routes", routes], {"WAL2HTTP_DSN": db.dsn})
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert code == 2, out + err
    assert checks["route up"]["status"] == "ok" and "accepts TCP connections" in checks["route up"]["detail"]
    down = checks["route down"]
    assert down["status"] == "failed" and "cannot connect to 127.0.0.1:9" in down["detail"]
    assert checks["route per-tenant"]["status"] == "warning"
    assert "its host depends on the event" in checks["route per-tenant"]["detail"]
    assert receiver.requests == []


def test_a_route_sends_cloudevents_with_its_own_columns(db: Database, receiver: Receiver, start_wal2http: Start,
                                                       tmp_path: Path) -> None:
    publish(db, *ORDERS, tables="orders, audit")
    with Receiver() as plain:
        routes = write_routes(tmp_path / "routes.toml", f'''
[[route]]
name = "knative"
filter = 'table == "orders"'
url = "{receiver.url}/{{table}}"
format = "cloudevents"
columns = ["public.orders=status"]

[[route]]
name = "everything"
url = "{plain.url}"
''')
        wal2http = start_wal2http("--create-slot", "--sink", "http", "--routes", routes)
        db.execute("INSERT INTO orders VALUES (1, 'a', 'new', 'x')")
        db.execute("INSERT INTO audit VALUES (1, 'n')")
        knative = receiver.wait_for_requests(1)
        everything = plain.wait_for_requests(2)
        assert wal2http.stop() == 0
    request = knative[0]
    assert request.path == "/hook/orders"
    assert request.headers["content-type"] == "application/cloudevents+json"
    event = from_http_event(HTTPMessage(request.headers, request.body))
    assert event.get_type() == "io.wal2http.public.orders.insert"
    assert event.get_source() == f"/wal2http/{db.name}/wal2http"
    assert event.get_data()["new"] == {"status": "new"}
    assert [r.headers["content-type"] for r in everything] == ["application/json"] * 2
    assert everything[0].json()["new"] == {"id": 1, "tenant": "a", "status": "new", "doc": "x"}


def test_wal2https_own_backfill_table_needs_no_full_identity(db: Database, wal2http_bin: str) -> None:
    publish(db, ORDERS[0], "ALTER TABLE orders REPLICA IDENTITY FULL")  # FOR ALL TABLES
    env = {"WAL2HTTP_DSN": db.dsn}
    code, out, err = run_once(wal2http_bin, ["slot", "create", "--backfill"], env)
    assert code == 0, out + err
    assert db.execute("SELECT count(*) FROM pg_publication_tables WHERE tablename = 'wal2http_backfill'")[0][0] == 1
    code, out, err = run_once(wal2http_bin, ["check-config", "--sink", "stdout", "--filter", PAID], env)
    assert code == 0, out + err
    assert "ok       filter: --filter" in out, out


def test_replay_to_a_templated_url_sends_each_destination_its_own_requests(
        receiver: Receiver, wal2http_bin: str, tmp_path: Path) -> None:
    capture = tmp_path / "captured.jsonl"
    rows = [("orders", 1), ("orders", 2), ("audit", 1), ("orders", 3)]
    capture.write_text("".join(json.dumps({
        "id": f"0/{n}-1", "op": "insert", "schema": "public", "table": table, "key": {"id": key},
        "new": {"id": key}, "old": None, "unchanged_toast": []}) + "\n" for n, (table, key) in enumerate(rows, 1)))
    code, _out, err = run_once(wal2http_bin, ["replay", "--sink", "http", "--batch-size", "10",
                                              "--http-url", receiver.url + "/{table}", str(capture)])
    assert code == 0, err
    assert [(r.path, [e["key"]["id"] for e in r.json()]) for r in receiver.requests] == [
        ("/hook/orders", [1, 2]), ("/hook/audit", [1]), ("/hook/orders", [3])]
    broken = tmp_path / "no-key.jsonl"
    broken.write_text(json.dumps({"id": "0/9-1", "op": "truncate", "schema": "public", "table": "orders",
                                  "key": None, "new": None, "old": None, "unchanged_toast": []}) + "\n")
    code, _out, err = run_once(wal2http_bin, ["replay", "--sink", "http", "--http-url",
                                              receiver.url + "/{key.id}", str(broken)])
    assert code == 2 and "no-key.jsonl:1" in err and "{key.id}" in err, err
    assert broken.read_text() != ""
