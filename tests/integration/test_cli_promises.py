"""What an operator's shell, cron job or CI step reads: quick stops with a summary, visible resends,
progress while waiting, log records a machine can parse, and inputs typed the way people type them."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from tests.support import free_port, wait_until
from tests.support.admin import Admin
from tests.support.pgcluster import Database
from tests.support.process import Start, Wal2http, run_once
from tests.support.receiver import Receiver
from tests.support.replication import publish
from tests.support.rogue import RogueReceiver

ROOT = Path(__file__).resolve().parents[2]
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")


def setup_table(db: Database) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY, v text)", tables="t")


def last_lines(text: str, n: int = 3) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


# -- a stop during a receiver outage (issue 20 item 7) ------------------------------------------------


def test_a_stop_during_a_receiver_outage_is_quick_and_says_what_is_left(
        db: Database, receiver: Receiver, start_wal2http: Start) -> None:
    setup_table(db)
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url,
                              "--breaker-failures", "2", "--breaker-cooldown", "20")
    db.execute("INSERT INTO t VALUES (1, 'delivered')")
    receiver.wait_for_events(1)
    receiver.down()
    db.execute("INSERT INTO t VALUES (2, 'x'), (3, 'y')")
    wait_until(lambda: "circuit breaker open" in wal2http.stderr, timeout=30, what="the breaker open")
    before = db.cluster.confirmed_flush_lsn("wal2http")
    started = time.monotonic()
    wal2http.signal(signal.SIGTERM)
    assert wal2http.wait(40) == 0
    took = time.monotonic() - started
    assert took < 3, f"the stop took {took:.1f} s with nothing deliverable (--shutdown-timeout is 30 s)"
    summary = last_lines(wal2http.stderr)
    assert "stopped:" in summary and "1 events delivered" in summary, summary
    assert "confirmed" in summary and re.search(r"left undelivered: [12] events? read", summary), summary
    assert db.cluster.confirmed_flush_lsn("wal2http") == before  # nothing undelivered was confirmed
    receiver.up()
    again = start_wal2http("--sink", "http", "--http-url", receiver.url)
    events = receiver.wait_for_events(3)
    assert [e["new"]["id"] for e in events] == [1, 2, 3]
    assert again.stop() == 0
    summary = last_lines(again.stderr)
    assert "2 events delivered" in summary and "nothing left undelivered" in summary, summary


# -- resends are counted and explained (item 9) -------------------------------------------------------


def test_resends_after_a_204_with_a_body_are_counted_and_logged_once(
        db: Database, start_wal2http: Start) -> None:
    setup_table(db)
    port = free_port()
    with RogueReceiver() as rogue:
        rogue.misbehave("no-content-with-body", times=50)
        wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", rogue.url,
                                  "--metrics-addr", f"127.0.0.1:{port}")
        for i in range(1, 7):
            db.execute("INSERT INTO t VALUES (%s, 'x')", (i,))
        admin = Admin(port)
        samples = wait_until(lambda: admin.scrape() if admin.scrape()[("wal2http_events_delivered_total", ())] >= 6
                             else None, timeout=30, what="six events delivered")
        events = rogue.events()
        assert len({e["id"] for e in events}) == 6
        assert len(events) > 6, "the receiver saw no request twice: the test shows nothing"
        resent = {dict(labels)["reason"]: value for (name, labels), value in samples.items()
                  if name == "wal2http_resent_requests_total"}
        resent_events = {dict(labels)["reason"]: value for (name, labels), value in samples.items()
                         if name == "wal2http_resent_events_total"}
        # Every request the receiver got beyond the six accepted events was a resend, and says why.
        assert sum(resent.values()) == len(events) - 6, resent
        assert resent.get("malformed-answer", 0) >= 1 and resent_events.get("malformed-answer", 0) >= 1, resent
        assert wal2http.stop() == 0
    explained = [line for line in wal2http.stderr.splitlines() if "sent again" in line]
    assert len(explained) == 1, explained  # once per streak, not once per request
    assert "malformed-answer" in explained[0] and "webhook-id" in explained[0], explained[0]


# -- logs (item 13) -----------------------------------------------------------------------------------


def test_json_log_records_carry_iso_8601_utc_times(db: Database, receiver: Receiver,
                                                   start_wal2http: Start) -> None:
    setup_table(db)
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url,
                              "--log-format", "json")
    assert wal2http.stop() == 0
    records = [json.loads(line) for line in wal2http.stderr.splitlines()]
    assert records and all(ISO_UTC.match(r["time"]) for r in records), [r["time"] for r in records]


def test_start_up_errors_are_json_with_log_format_json(wal2http_bin: str, db: Database) -> None:
    env = {"WAL2HTTP_DSN": db.dsn}
    for args, words in ((["--sink", "http"], "--http-url"),
                        (["--batch-size", "lots"], "--batch-size"),
                        (["--shutdown-timeout", "soon"], "--shutdown-timeout")):
        code, _, err = run_once(wal2http_bin, ["run", "--log-format", "json", *args], env, timeout=30)
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        record = json.loads(lines[0])
        assert record["level"] == "ERROR" and words in record["message"], record
        assert ISO_UTC.match(record["time"]), record
    code, _, err = run_once(wal2http_bin, ["run", "--sink", "http"], {**env, "WAL2HTTP_LOG_FORMAT": "json"})
    assert code == 2 and json.loads(err)["level"] == "ERROR", err


def test_the_connection_line_is_logged_once_while_standing_by(db: Database, receiver: Receiver,
                                                              start_wal2http: Start) -> None:
    setup_table(db)
    first = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url)
    second = start_wal2http("--sink", "http", "--http-url", receiver.url, wait=False)
    wait_until(lambda: "standing by" in second.stderr, timeout=30, what="the second run standing by")
    time.sleep(11)  # two retries at least (every 2.5 to 5 s)
    assert second.running
    lines = [x for x in second.stderr.splitlines() if "replication connection to" in x]
    assert len(lines) == 1, lines
    assert second.stop() == 0 and first.stop() == 0


# -- inputs people type (item 14) ---------------------------------------------------------------------


def test_durations_take_units_and_unknown_variables_are_named(db: Database, receiver: Receiver,
                                                              start_wal2http: Start) -> None:
    setup_table(db)
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url,
                              "--http-timeout", "1500ms", "--breaker-cooldown", "2m", "--progress-seconds", "1h",
                              env={"WAL2HTTP_SHUTDOWN_TIMEOUT": "15s", "WAL2HTTP_BATCH_SIZ": "10"})
    assert wal2http.stop() == 0
    assert "WAL2HTTP_BATCH_SIZ" in wal2http.stderr and "WAL2HTTP_BATCH_SIZE" in wal2http.stderr
    assert "(at most 15 s)" in wal2http.stderr  # the stop's own line quotes the shutdown timeout


def test_a_duration_without_a_known_unit_is_a_usage_error(wal2http_bin: str) -> None:
    code, _, err = run_once(wal2http_bin, ["run", "--shutdown-timeout", "15 parsecs"],
                            {"WAL2HTTP_DSN": "postgresql://127.0.0.1:1/x"})
    assert code == 2 and "--shutdown-timeout" in err and "15s" in err, err
    code, _, err = run_once(wal2http_bin, ["run", "--shutdown-timeout", "2h"],
                            {"WAL2HTTP_DSN": "postgresql://127.0.0.1:1/x"})
    assert code == 2 and "--shutdown-timeout" in err, err  # above its range, in whatever unit


def test_pyproject_declares_only_the_build_backend_and_pip_builds_quietly(tmp_path: Path) -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert set(declared) == {"build-system"}
    assert declared["build-system"]["build-backend"] == "setuptools.build_meta"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--wheel-dir", str(tmp_path), str(ROOT)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "DEPRECATION" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert list(tmp_path.glob("wal2http-0.2.0-*.whl"))


def test_the_version_is_0_2_0_with_a_changelog(wal2http_bin: str) -> None:
    code, out, _ = run_once(wal2http_bin, ["--version"])
    assert code == 0 and "0.2.0" in out
    changelog = (ROOT / "CHANGELOG.rst").read_text()
    assert re.search(r"^0\.2\.0", changelog, re.MULTILINE) and re.search(r"^0\.1\.0", changelog, re.MULTILINE)


# -- backfill --wait without a terminal (item 12) -----------------------------------------------------


def test_backfill_wait_without_a_terminal_reports_progress_every_10_s(
        db: Database, receiver: Receiver, start_wal2http: Start, wal2http_bin: str) -> None:
    publish(db, "CREATE TABLE items (id int PRIMARY KEY, v text)",
            "INSERT INTO items SELECT i, 'x' FROM generate_series(1, 600) i", "ANALYZE items", tables="items")
    receiver.set_delay(0.4)  # 600 rows in chunks of 20, one request each: about 12 s
    run = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url,
                         "--backfill-chunk-size", "20", "--batch-size", "20")
    waiting = Wal2http(wal2http_bin, ["backfill", "--table", "public.items", "--wait"],
                       {"WAL2HTTP_DSN": db.dsn}).start()
    started = time.monotonic()
    assert waiting.wait(90) == 0, waiting.stderr
    took = time.monotonic() - started
    assert took > 10, f"the backfill took only {took:.1f} s: the test shows nothing"
    progress = [x for x in (waiting.stdout + waiting.stderr).splitlines()
                if x.startswith("public.items:") and "rows/s" in x]
    assert len(progress) >= int(took // 10), (took, waiting.stdout, waiting.stderr)
    assert all(re.search(r"\d+ of ~?\d+ rows", x) and "left" in x for x in progress), progress
    assert "public.items: done, 600 rows sent (estimated 600)" in waiting.stdout
    assert run.stop() == 0
