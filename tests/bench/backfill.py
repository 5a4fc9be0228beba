"""Scenario 7: a backfill of narrow rows against streaming the same rows, and the stream's latency meanwhile."""

from __future__ import annotations

import subprocess
import tempfile
import time
from datetime import datetime

from tests.bench.consumers import Slots, pg_program, wal2http, wal2http_binary, wal2http_seconds
from tests.bench.report import ScenarioResult
from tests.bench.scenarios import BATCH, Bench, _percentile
from tests.support.pgcluster import Database
from tests.support.process import run_once

TABLE, CHANGES, PUBLICATION = "bench_backfill", "bench_backfill_changes", "bench_backfill_pub"
CHANGES_PER_S = 500
CHANGE_SCRIPT = (
    "\\set aid random(1, 1000000)\n"
    f"INSERT INTO {CHANGES} (account, amount, note) VALUES (:aid, :aid / 100.0, 'during backfill');\n"
)


def _prepare(db: Database) -> None:
    db.execute(f"DROP PUBLICATION IF EXISTS {PUBLICATION}")
    db.execute(f"DROP TABLE IF EXISTS {TABLE}, {CHANGES}")
    db.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, account integer, note text)")
    db.execute(f"CREATE TABLE {CHANGES} (id bigserial PRIMARY KEY, account integer, amount numeric(12,2), note text)")
    db.execute(f"CREATE PUBLICATION {PUBLICATION} FOR TABLE {TABLE}, {CHANGES}")


def _fill(db: Database, rows: int) -> None:
    db.execute(f"""
        DO $$
        BEGIN
          FOR start IN 1..{rows} BY 1000 LOOP
            INSERT INTO {TABLE} SELECT g, g % 1000, 'row ' || g
              FROM generate_series(start, least(start + 999, {rows})) g;
            COMMIT;
          END LOOP;
        END $$""")
    db.execute("CHECKPOINT")


def _request(db: Database, slot: str) -> None:
    code, out, err = run_once(wal2http_binary(), ["backfill", "--slot", slot, "--publication", PUBLICATION,
                                                  "--table", f"public.{TABLE}"], {"WAL2HTTP_DSN": db.dsn})
    if code != 0:
        raise RuntimeError(f"backfill request failed ({code}): {out}{err}")


def _backfill_seconds(bench: Bench, slot: str, rows: int) -> float:
    """From the first read event until the receiver got every row (the run finds a request within 2 s)."""
    db, receiver = bench.db, bench.receiver
    db.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    try:
        receiver.reset()
        with wal2http(db, slot, PUBLICATION, receiver, BATCH) as run:
            _request(db, slot)
            stats = receiver.wait_for_events(rows, timeout=600, alive=lambda: run.process.running)
        return float(stats["last_at"]) - float(stats["first_at"])
    finally:
        db.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


def _latency_during_backfill(bench: Bench, slot: str, rows: int, seconds: int, backfill: bool = True) -> list[float]:
    """Commit-to-delivery latencies (ms) of the changes committed while a backfill runs (or none, to compare)."""
    db, receiver = bench.db, bench.receiver
    db.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".sql") as script, \
                wal2http(db, slot, PUBLICATION, receiver, BATCH) as run:
            script.write(CHANGE_SCRIPT)
            script.flush()
            receiver.reset(record_commit_times=True, commit_time_op="insert")
            before = db.execute(f"SELECT count(*) FROM {CHANGES}")[0][0]
            command = [pg_program("pgbench"), "-n", "-f", script.name, "-R", str(CHANGES_PER_S),
                       "-T", str(seconds), "-c", "1", "-j", "1", "--random-seed", "42",
                       "-h", db.cluster.host, "-p", str(db.cluster.port), "-U", "postgres", db.name]
            pgbench = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(1)
            if backfill:
                _request(db, slot)
            else:
                rows = 0
            _, err = pgbench.communicate(timeout=seconds + 120)
            if pgbench.returncode != 0:
                raise RuntimeError(f"pgbench failed (exit {pgbench.returncode}): {err.strip()}")
            changes = db.execute(f"SELECT count(*) FROM {CHANGES}")[0][0] - before
            receiver.wait_for_events(rows + changes, timeout=600, alive=lambda: run.process.running)
            pairs = [(at, datetime.fromisoformat(text).timestamp()) for at, text in receiver.commit_times()]
            if backfill:  # only the changes committed while the backfill ran
                ((started, finished),) = db.execute(
                    "SELECT extract(epoch FROM started_at)::float8, extract(epoch FROM finished_at)::float8"
                    " FROM wal2http.wal2http_backfill WHERE slot = %s", (slot,))
                pairs = [(at, committed) for at, committed in pairs if started <= committed <= finished]
    finally:
        db.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    return sorted((at - committed) * 1000 for at, committed in pairs)


def backfill(bench: Bench) -> ScenarioResult:
    """Scenario 7: backfill rows/s against scenario 2's way of streaming the same rows, and latency meanwhile."""
    rows = bench.scaled(200_000)
    db = bench.db
    _prepare(db)
    slots = Slots(db, "bench_backfill_stream")  # made before the rows: it streams them as inserts
    _fill(db, rows)
    streamed: list[float] = []
    backfilled: list[float] = []
    try:
        for run in range(bench.runs):
            slot = slots.copy()
            streamed.append(wal2http_seconds(db, slot, PUBLICATION, bench.receiver, rows, BATCH).seconds)
            slots.drop(slot)
            backfilled.append(_backfill_seconds(bench, f"bench_backfill_{run}", rows))
    finally:
        slots.close()
    seconds = max(3, round(rows / max(rows / s for s in backfilled)) + 2)
    latencies = [_latency_during_backfill(bench, f"bench_backfill_latency_{run}", rows, seconds)
                 for run in range(bench.runs)]
    alone = [_latency_during_backfill(bench, f"bench_backfill_alone_{run}", rows, seconds, backfill=False)
             for run in range(bench.runs)]
    result = ScenarioResult(7, f"backfill, --batch-size {BATCH}, chunks of 1000", {
        "rows": rows, "table": "3 columns", "changes_per_s_during_backfill": CHANGES_PER_S,
    })
    result.add("streaming the rows", "rows/s", [rows / s for s in streamed])
    result.add("backfilling the rows", "rows/s", [rows / s for s in backfilled])
    ratio = result.add("ratio backfill / streaming", "x", [s / b for s, b in zip(streamed, backfilled, strict=True)])
    p99 = result.add("changes during backfill p99", "ms", [_percentile(r, 0.99) for r in latencies])
    result.add("changes during backfill p50", "ms", [_percentile(r, 0.50) for r in latencies])
    result.add("changes during backfill", "events", [float(len(r)) for r in latencies])
    result.add("same changes, no backfill, p99", "ms", [_percentile(r, 0.99) for r in alone])
    result.add("same changes, no backfill, p50", "ms", [_percentile(r, 0.50) for r in alone])
    result.check(f"ratio >= 0.8 (got {ratio.median:.2f})", ratio.median >= 0.8)
    result.check(f"p99 < 50 ms (got {p99.median:.1f})", p99.median < 50)
    return result
