"""Every PostgreSQL type arrives with exactly the JSON value README's event format section prescribes."""

from __future__ import annotations

from tests.support.pgcluster import Database
from tests.support.process import Start
from tests.support.receiver import Receiver
from tests.support.replication import publish
from tests.support.typed_row import EXPECTED, ROW_SQL, SCHEMA, TEXT


def test_every_type_converts_as_documented(db: Database, receiver: Receiver, start_wal2http: Start) -> None:
    publish(db, *SCHEMA, tables="everything")
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url)
    db.execute(ROW_SQL, (TEXT,))
    db.execute("""INSERT INTO everything (f4, f8, n, tz, ts, ai, at, aby, jb)
                  VALUES ('NaN', '-Infinity', 'NaN', '-infinity', 'infinity', '{}', NULL, '{}', 'null')""")
    first, second = receiver.wait_for_events(2)
    assert wal2http.stop() == 0
    row = dict(first["new"])
    del row["id"]
    assert row == EXPECTED
    assert second["new"]["f4"] == "NaN" and second["new"]["f8"] == "-Infinity"
    assert second["new"]["n"] == "NaN"
    assert second["new"]["tz"] == "-infinity" and second["new"]["ts"] == "infinity"
    assert second["new"]["ai"] == [] and second["new"]["at"] is None and second["new"]["aby"] == []
    assert second["new"]["jb"] is None  # JSON null and SQL NULL look alike: documented trade-off
    assert second["new"]["b"] is None


def test_unchanged_toast_value_is_named_not_sent(db: Database, receiver: Receiver,
                                                start_wal2http: Start) -> None:
    big = "".join(f"{i:05d}" for i in range(4000))  # 20 kB, stored out of line
    publish(
        db,
        "CREATE TABLE docs (id int PRIMARY KEY, title text, body text)",
        "ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL",
        "CREATE TABLE docs_full (id int PRIMARY KEY, title text, body text)",
        "ALTER TABLE docs_full ALTER COLUMN body SET STORAGE EXTERNAL",
        "ALTER TABLE docs_full REPLICA IDENTITY FULL",
        tables="docs, docs_full",
    )
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url)
    for table in ("docs", "docs_full"):
        db.execute(f"INSERT INTO {table} VALUES (1, 'a', %s)", (big,))
        db.execute(f"UPDATE {table} SET title = 'b' WHERE id = 1")
    events = receiver.wait_for_events(4)
    assert wal2http.stop() == 0
    insert, update, insert_full, update_full = events
    assert insert["new"]["body"] == big
    assert update["new"] == {"id": 1, "title": "b"}
    assert update["unchanged_toast"] == ["body"]
    # REPLICA IDENTITY FULL sends the old row, which carries the value: nothing is missing.
    assert update_full["new"] == {"id": 1, "title": "b", "body": big}
    assert update_full["unchanged_toast"] == []
    assert update_full["old"]["title"] == "a"
    assert insert_full["new"]["body"] == big
