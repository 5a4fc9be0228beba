"""``make demo``: a throwaway PostgreSQL, a local receiver, real changes, the events they became."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from tests.support.pgcluster import PgCluster
from tests.support.process import Wal2http
from tests.support.receiver import Receiver

CHANGES = [
    ("a customer signs up", "INSERT INTO customers (name, email) VALUES ('Ada', 'ada@example.com')"),
    ("she places an order", "INSERT INTO orders (customer_id, total, items) VALUES (1, 42.50, '{book,pen}')"),
    ("the order is paid", "UPDATE orders SET status = 'paid', paid_at = now() WHERE id = 1"),
    ("she changes her email", "UPDATE customers SET email = 'ada@lovelace.dev' WHERE id = 1"),
    ("the order is removed", "DELETE FROM orders WHERE id = 1"),
]


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def main() -> int:
    binary = shutil.which("wal2http", path=str(Path(sys.executable).parent)) or shutil.which("wal2http")
    if binary is None:
        print("wal2http is not installed: run `make demo` from the repository", file=sys.stderr)
        return 1
    say("Starting a throwaway PostgreSQL 15 (wal_level=logical) and a local webhook receiver")
    with PgCluster() as pg, Receiver() as receiver:
        print(f"PostgreSQL on 127.0.0.1:{pg.port}, data in {pg.datadir}")
        print(f"receiver at {receiver.url}")
        say("Creating tables and the publication")
        for statement in (
            "CREATE TABLE customers (id serial PRIMARY KEY, name text, email text)",
            "CREATE TABLE orders (id serial PRIMARY KEY, customer_id int, total numeric(10,2),"
            " items text[], status text DEFAULT 'new', paid_at timestamptz)",
            "CREATE PUBLICATION wal2http FOR TABLE customers, orders",
        ):
            print(f"  {statement}")
            pg.execute(statement)
        say("Running: wal2http run --create-slot --sink http --http-url " + receiver.url)
        process = Wal2http(binary, ["run", "--create-slot", "--sink", "http", "--http-url", receiver.url],
                           {"WAL2HTTP_DSN": pg.dsn()}).start()
        try:
            process.wait_streaming()
            say("Making changes")
            for what, statement in CHANGES:
                print(f"  -- {what}\n  {statement};")
                pg.execute(statement)
            events = receiver.wait_for_events(len(CHANGES), timeout=30)
            say(f"The receiver got {len(events)} events, in commit order")
            for event in events:
                print(json.dumps(event, indent=2, ensure_ascii=False))
            slot = f"{pg.execute('SELECT confirmed_flush_lsn FROM pg_replication_slots')[0][0]}"
            say("Stopping wal2http with SIGTERM (it finishes the current transaction first)")
            code = process.stop()
            print(f"exit code {code}; the slot was confirmed up to {slot} before the stop")
            say("What wal2http logged (on standard error)")
            for line in process.stderr.splitlines():
                print(f"  {line}")
        finally:
            process.kill()
    say("Cleaned up: the cluster and its data directory are gone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
