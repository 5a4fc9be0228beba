"""The six scenarios of issue 8; each returns the runs it measured and the targets it checked."""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import requests

from tests.bench import workloads
from tests.bench.consumers import (
    Slots,
    Timing,
    pg_program,
    read_status,
    recvlogical_seconds,
    wal2http,
    wal2http_seconds,
)
from tests.bench.receiver import FastReceiver
from tests.bench.report import ScenarioResult, ratio_runs
from tests.support.pgcluster import Database

MB = 1024 * 1024
BATCH = 500  # --batch-size of the batched scenarios


@dataclass
class Bench:
    """What every scenario needs: the database, the receiver and the run options."""

    db: Database
    receiver: FastReceiver
    scale: float
    runs: int
    profile_dir: Path | None = None

    def scaled(self, count: int, least: int = 1000) -> int:
        return max(least, round(count * self.scale))

    def profile(self, name: str) -> Path | None:
        return None if self.profile_dir is None else self.profile_dir / f"{name}.prof"


def _rates(events: int, seconds: list[float]) -> list[float]:
    return [events / s for s in seconds]


def _cpu_per_event(events: int, timings: list[Timing]) -> list[float]:
    """wal2http's CPU microseconds per event: what it costs, whatever else the machine runs."""
    return [t.cpu_seconds / events * 1e6 for t in timings]


def reference_first(run: int) -> bool:
    """Whether the reference runs first in pair ``run``: it alternates, so neither side always gets the
    warmer caches (or the colder machine) of going second."""
    return run % 2 == 0


def _compare(bench: Bench, slots: Slots, workload: workloads.Workload, tag: str,
             ) -> tuple[list[float], list[Timing]]:
    """Pairs of runs of pg_recvlogical and ``wal2http --batch-size 500``, in alternating order: their seconds."""
    reference: list[float] = []
    ours: list[Timing] = []

    def run_reference() -> None:
        slot = slots.copy()
        reference.append(recvlogical_seconds(bench.db, slot, workload.publication, workload.commit_end_lsn))
        slots.drop(slot)

    def run_ours(run: int) -> None:
        slot = slots.copy()
        ours.append(wal2http_seconds(bench.db, slot, workload.publication, bench.receiver, workload.events,
                                     BATCH, bench.profile(f"{tag}-{run + 1}")))
        slots.drop(slot)

    for run in range(bench.runs):
        if reference_first(run):
            run_reference()
            run_ours(run)
        else:
            run_ours(run)
            run_reference()
    return reference, ours


def throughput(bench: Bench) -> tuple[ScenarioResult, ScenarioResult]:
    """Scenarios 1 and 2: one big transaction plus single-row transactions on a 6-column table."""
    big, singles = bench.scaled(100_000), bench.scaled(100_000)
    publication = workloads.prepare_simple(bench.db, "bench_simple")
    slots = Slots(bench.db, "bench_simple")
    workload = workloads.fill_simple(bench.db, "bench_simple", big, singles)
    try:
        reference, ours = _compare(bench, slots, workload, "scenario2")
    finally:
        slots.close()
    shape = {"table": "6 columns", "big_transaction_rows": big, "single_row_transactions": singles,
             "events": workload.events, "publication": publication}
    first = ScenarioResult(1, "pg_recvlogical, output discarded", shape)
    first.add("pg_recvlogical", "events/s", _rates(workload.events, reference))
    second = ScenarioResult(2, f"wal2http --batch-size {BATCH}", shape)
    second.add("wal2http", "events/s", _rates(workload.events, [t.seconds for t in ours]))
    second.add("wal2http CPU per event", "us", _cpu_per_event(workload.events, ours))
    ratio = second.add("ratio to pg_recvlogical", "x", ratio_runs(reference, [t.seconds for t in ours]))
    second.check(f"ratio >= 0.9 (got {ratio.median:.2f})", ratio.median >= 0.9)
    return first, second


def wide_rows(bench: Bench) -> ScenarioResult:
    """Scenario 3: about 1 KB rows of 32 mixed-type columns."""
    rows = bench.scaled(60_000)
    workloads.prepare_wide(bench.db)
    slots = Slots(bench.db, "bench_wide")
    workload = workloads.fill_wide(bench.db, rows)
    try:
        reference, ours = _compare(bench, slots, workload, "scenario3")
    finally:
        slots.close()
    result = ScenarioResult(3, f"32 columns, --batch-size {BATCH}", {
        "rows": rows, "columns": len(workloads.WIDE), "rows_per_transaction": 1000,
        "row_text_bytes": workloads.wide_row_bytes(bench.db),
    })
    result.add("pg_recvlogical", "events/s", _rates(rows, reference))
    result.add("wal2http", "events/s", _rates(rows, [t.seconds for t in ours]))
    result.add("wal2http CPU per event", "us", _cpu_per_event(rows, ours))
    ratio = result.add("ratio to pg_recvlogical", "x", ratio_runs(reference, [t.seconds for t in ours]))
    result.check(f"ratio >= 0.6 (got {ratio.median:.2f})", ratio.median >= 0.6)
    return result


def post_loop_seconds(url: str, bodies: list[bytes]) -> float:
    """A plain ``requests`` loop POSTing ``bodies`` one by one: the reference for scenario 4."""
    with requests.Session() as session:
        headers = {"Content-Type": "application/json"}
        started = time.perf_counter()
        for body in bodies:
            session.post(url, data=body, headers=headers, timeout=30).raise_for_status()
        return time.perf_counter() - started


def one_event_per_request(bench: Bench) -> ScenarioResult:
    """Scenario 4: ``--batch-size 1`` against a plain POST loop sending the same bodies."""
    count = bench.scaled(20_000)
    workloads.prepare_simple(bench.db, "bench_single")
    slots = Slots(bench.db, "bench_single")
    workload = workloads.fill_simple(bench.db, "bench_single", 0, count)
    ours: list[Timing] = []
    loop: list[float] = []
    bodies: list[bytes] = []

    def run_loop() -> None:
        bench.receiver.reset()
        loop.append(post_loop_seconds(bench.receiver.url, bodies))
        if bench.receiver.stats()["events"] != count:
            raise RuntimeError("the POST loop did not deliver every body")

    try:
        for run in range(bench.runs):
            # Alternating; pair 0 runs wal2http first, as it records the bodies the loop sends.
            loop_first = not reference_first(run)
            if loop_first:
                run_loop()
            slot = slots.copy()
            ours.append(wal2http_seconds(bench.db, slot, workload.publication, bench.receiver, count, 1,
                                         bench.profile(f"scenario4-{run + 1}"), record_bodies=not bodies))
            slots.drop(slot)
            bodies = bodies or bench.receiver.bodies()
            if not loop_first:
                run_loop()
    finally:
        slots.close()
    result = ScenarioResult(4, "wal2http --batch-size 1", {
        "single_row_transactions": count, "body_bytes_mean": sum(map(len, bodies)) // len(bodies),
    })
    result.add("requests POST loop", "requests/s", _rates(count, loop))
    result.add("wal2http", "events/s", _rates(count, [t.seconds for t in ours]))
    result.add("wal2http CPU per event", "us", _cpu_per_event(count, ours))
    ratio = result.add("ratio to the POST loop", "x", ratio_runs(loop, [t.seconds for t in ours]))
    result.check(f"ratio >= 0.7 (got {ratio.median:.2f})", ratio.median >= 0.7)
    return result


def _percentile(sorted_ms: list[float], fraction: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, int(fraction * len(sorted_ms)))]


def _latency_run(bench: Bench, batch_size: int, seconds: int, run: int) -> list[float]:
    """Latencies in ms of every event of one pgbench run at 1,000 transactions per second."""
    db, receiver = bench.db, bench.receiver
    slot = f"bench_latency_{batch_size}_{run}"
    db.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".sql") as script, \
                wal2http(db, slot, "bench_latency_pub", receiver, batch_size) as consumer:
            script.write(workloads.LATENCY_SCRIPT)
            script.flush()
            receiver.reset(record_commit_times=True)
            before = db.execute("SELECT count(*) FROM bench_latency")[0][0]
            command = [pg_program("pgbench"), "-n", "-f", script.name, "-R", "1000", "-T", str(seconds),
                       "-c", "2", "-j", "2", "--random-seed", "42", "-h", db.cluster.host,
                       "-p", str(db.cluster.port), "-U", "postgres", db.name]
            done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"pgbench failed (exit {done.returncode}): {done.stderr.strip()}")
            expected = db.execute("SELECT count(*) FROM bench_latency")[0][0] - before
            receiver.wait_for_events(expected, timeout=120, alive=lambda: consumer.process.running)
            pairs = receiver.commit_times()
    finally:
        db.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    return sorted((at - datetime.fromisoformat(text).timestamp()) * 1000 for at, text in pairs)


def latency(bench: Bench) -> ScenarioResult:
    """Scenario 5: commit-to-receiver latency at a steady 1,000 single-row transactions a second."""
    seconds = max(3, round(60 * bench.scale))
    workloads.create_table(bench.db, "bench_latency", workloads.LATENCY_COLUMNS)
    result = ScenarioResult(5, "latency at 1,000 commits/s", {
        "rate_per_second": 1000, "seconds": seconds, "batch_sizes": [1, BATCH],
    })
    for batch_size in (1, BATCH):
        runs = [_latency_run(bench, batch_size, seconds, run) for run in range(bench.runs)]
        label = f"batch {batch_size}"
        p50 = result.add(f"{label} p50", "ms", [_percentile(r, 0.50) for r in runs])
        result.add(f"{label} p95", "ms", [_percentile(r, 0.95) for r in runs])
        p99 = result.add(f"{label} p99", "ms", [_percentile(r, 0.99) for r in runs])
        result.add(f"{label} max", "ms", [r[-1] for r in runs])
        result.add(f"{label} events", "events", [float(len(r)) for r in runs])
        result.check(f"{label}: p50 < 5, p99 < 25 ms", p50.median < 5 and p99.median < 25)
    return result


def _memory_run(bench: Bench, slots: Slots, workload: workloads.Workload, plan: workloads.MemoryPlan,
                ) -> tuple[float, float, float]:
    """Peak, after-warm-up and final RSS of one wal2http run over the memory workload."""
    slot = slots.copy()
    bench.receiver.reset()
    after_warmup = 0.0
    try:
        with wal2http(bench.db, slot, workload.publication, bench.receiver, BATCH) as run:
            deadline = time.monotonic() + 600
            while True:
                rss = read_status(run.pid)["VmRSS"]
                events = bench.receiver.stats()["events"]
                if not after_warmup and events >= plan.warmup_rows:
                    after_warmup = rss
                if events >= workload.events:
                    break
                if not run.process.running or time.monotonic() > deadline:
                    raise RuntimeError(f"memory run ended after {events} of {workload.events} events:\n"
                                       f"{run.process.stderr}")
                time.sleep(0.05)
            time.sleep(0.5)  # idle: whatever the last batch held is released
            status = read_status(run.pid)
    finally:
        slots.drop(slot)
    return status["VmHWM"] / MB, after_warmup / MB, status["VmRSS"] / MB


def memory(bench: Bench) -> ScenarioResult:
    """Scenario 6: RSS while streaming a big transaction and 1 MB TOASTed values."""
    plan = workloads.memory_plan(bench.scale)
    workloads.prepare_memory(bench.db)
    slots = Slots(bench.db, "bench_memory")
    workload = workloads.fill_memory(bench.db, plan)
    try:
        samples = [_memory_run(bench, slots, workload, plan) for _ in range(bench.runs)]
    finally:
        slots.close()
    result = ScenarioResult(6, f"memory, --batch-size {BATCH}", {
        "rows": plan.total, "first_small_rows": plan.warmup_rows,
        "big_transaction_rows": plan.big_transaction,
        "rows_with_1mb_toasted_value": plan.blob_rows,
    })
    peak = result.add("peak RSS (VmHWM)", "MB", [s[0] for s in samples])
    result.add(f"RSS after {plan.warmup_rows:,} rows", "MB", [s[1] for s in samples])
    result.add("final RSS", "MB", [s[2] for s in samples])
    growth = result.add("final RSS over that", "%", growth_runs([s[1] for s in samples], [s[2] for s in samples]))
    result.check(f"peak < 150 MB (got {peak.median:.0f})", peak.median < 150)
    result.check(f"final within 10% of that (got {growth.median:.1f}%)", growth.median <= 10)
    return result


def growth_runs(before: list[float], after: list[float]) -> list[float]:
    """How far ``after`` moved from ``before`` in each run, in percent: paired per run, never across runs."""
    return [abs(a - b) / b * 100 for b, a in zip(before, after, strict=True)]

