"""Scenario 8: large (TOASTed) values: memory of a backfill of 5 MB rows, and what --reselect-toast costs."""

from __future__ import annotations

from tests.bench.consumers import Slots, read_status, wal2http, wal2http_binary, wal2http_seconds
from tests.bench.report import ScenarioResult
from tests.bench.scenarios import BATCH, MB, Bench
from tests.support.pgcluster import Database
from tests.support.process import run_once

TABLE, PUBLICATION = "bench_large", "bench_large_pub"
BACKFILL_ROW_BYTES = 5_000_000
UPDATED_ROW_BYTES = 100_000
EVENT_BYTES = str(64 * MB)  # --max-event-bytes: a read carries a whole 5 MB value


def _prepare(db: Database) -> None:
    db.execute(f"DROP PUBLICATION IF EXISTS {PUBLICATION}")
    db.execute(f"DROP TABLE IF EXISTS {TABLE}")
    db.execute(f"CREATE TABLE {TABLE} (id int PRIMARY KEY, n int NOT NULL DEFAULT 0, v text)")
    db.execute(f"ALTER TABLE {TABLE} ALTER COLUMN v SET STORAGE EXTERNAL")  # out of line, uncompressed
    db.execute(f"CREATE PUBLICATION {PUBLICATION} FOR TABLE {TABLE}")


def _fill(db: Database, rows: int, size: int) -> None:
    db.execute(f"""
        DO $$
        BEGIN
          FOR i IN 1..{rows} LOOP
            INSERT INTO {TABLE} (id, v) VALUES (i, repeat(md5(i::text), {size // 32}));
            COMMIT;
          END LOOP;
        END $$""")
    db.execute("CHECKPOINT")


def _backfill_peak(bench: Bench, slot: str, rows: int) -> tuple[float, float]:
    """Peak RSS (MB) of ``run`` while it backfills the table, and the seconds the backfill took."""
    db, receiver = bench.db, bench.receiver
    db.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    try:
        receiver.reset()
        with wal2http(db, slot, PUBLICATION, receiver, BATCH, extra=("--max-event-bytes", EVENT_BYTES)) as run:
            code, out, err = run_once(wal2http_binary(), ["backfill", "--slot", slot, "--publication", PUBLICATION,
                                                          "--table", f"public.{TABLE}"], {"WAL2HTTP_DSN": db.dsn})
            if code != 0:
                raise RuntimeError(f"backfill request failed ({code}): {out}{err}")
            stats = receiver.wait_for_events(rows, timeout=600, alive=lambda: run.process.running)
            peak = read_status(run.pid)["VmHWM"] / MB
        db.execute("DELETE FROM wal2http.wal2http_backfill WHERE slot = %s", (slot,))
        return peak, float(stats["last_at"]) - float(stats["first_at"])
    finally:
        db.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


def large_values(bench: Bench) -> ScenarioResult:
    """Scenario 8: a backfill of 5 MB rows (peak RSS), and updates lacking a 100 kB value with and
    without --reselect-toast (time, CPU, and the reads that complete them)."""
    db = bench.db
    backfilled = max(20, round(200 * bench.scale))
    _prepare(db)
    _fill(db, backfilled, BACKFILL_ROW_BYTES)
    backfills = [_backfill_peak(bench, f"bench_large_backfill_{run}", backfilled) for run in range(bench.runs)]

    updated = bench.scaled(5000, least=500)
    _prepare(db)
    _fill(db, updated, UPDATED_ROW_BYTES)
    slots = Slots(db, "bench_large_updates")  # after the rows: the receiver never saw their values
    db.execute(f"""
        DO $$
        BEGIN
          FOR i IN 1..{updated} LOOP
            UPDATE {TABLE} SET n = n + 1 WHERE id = i;
            COMMIT;
          END LOOP;
        END $$""")
    plain: list[float] = []
    plain_cpu: list[float] = []
    reselect: list[float] = []
    reselect_cpu: list[float] = []
    try:
        for _ in range(bench.runs):
            for extra, seconds, cpu, events in (((), plain, plain_cpu, updated),
                                                (("--reselect-toast",), reselect, reselect_cpu, 2 * updated)):
                slot = slots.copy()
                timing = wal2http_seconds(db, slot, PUBLICATION, bench.receiver, events, BATCH,
                                          extra=(*extra, "--max-event-bytes", EVENT_BYTES))
                slots.drop(slot)
                seconds.append(timing.seconds)
                cpu.append(timing.cpu_seconds / updated * 1e6)
    finally:
        slots.close()
    result = ScenarioResult(8, f"large values, --batch-size {BATCH}", {
        "backfilled_rows": backfilled, "backfilled_row_bytes": BACKFILL_ROW_BYTES,
        "updates": updated, "updated_row_bytes": UPDATED_ROW_BYTES,
    })
    peak = result.add(f"backfill of {backfilled} 5 MB rows: peak RSS", "MB", [b[0] for b in backfills])
    result.add("that backfill", "rows/s", [backfilled / b[1] for b in backfills])
    result.add("updates lacking the value", "updates/s", [updated / s for s in plain])
    result.add("same, --reselect-toast (each + a read)", "updates/s", [updated / s for s in reselect])
    result.add("wal2http CPU per update", "us", plain_cpu)
    result.add("same, --reselect-toast", "us", reselect_cpu)
    result.check(f"backfill peak < 200 MB (got {peak.median:.0f})", peak.median < 200)
    return result
