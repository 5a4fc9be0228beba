"""Scenario 9: what --filter costs: one evaluation, a filter keeping every event, one dropping 90%."""

from __future__ import annotations

import timeit

from tests.bench import workloads
from tests.bench.consumers import Slots, Timing, wal2http_seconds
from tests.bench.report import ScenarioResult, ratio_runs
from tests.bench.scenarios import BATCH, Bench
from wal2http.config.routing import RoutingConfig, compile_expression
from wal2http.decode.events import Event, encode
from wal2http.routing.selection import Selection

TABLE = "bench_filtered"
KEEP_ALL = f'table == "{TABLE}" && op in ["insert", "update"]'
KEEP_TENTH = "key.id % 10 == 0"
EVALUATIONS = 200_000


def evaluation_us(expression: str) -> list[float]:
    """Microseconds per event of the selection step alone, on a 6-column insert, in this process."""
    record = {"id": "0/1-1", "op": "insert", "schema": "public", "table": TABLE, "key": {"id": 7},
              "new": {"id": 7, "account": 7, "amount": "0.07", "note": "row", "flag": True, "at": "2026"},
              "old": None, "unchanged_toast": [], "lsn": "0/1", "commit_lsn": "0/1", "commit_time": None,
              "xid": 1, "seq": 1}
    event = Event("0/1-1", "insert", 1, 1, 0, 1, record, encode(record))
    select = Selection(RoutingConfig(filter=compile_expression(expression))).apply
    return [timeit.timeit(lambda: select(event), number=EVALUATIONS) / EVALUATIONS * 1e6 for _ in range(3)]


def filtered(bench: Bench) -> ScenarioResult:
    """Unfiltered, keep-all and keep-a-tenth runs of ``wal2http --batch-size 500``, in rotating order."""
    half = bench.scaled(50_000) // 10 * 10  # multiples of 10: the last row is one the tenth filter keeps
    workloads.prepare_simple(bench.db, TABLE)
    slots = Slots(bench.db, TABLE)
    workload = workloads.fill_simple(bench.db, TABLE, half, half)
    kinds = {"none": ((), workload.events), "keep all": (("--filter", KEEP_ALL), workload.events),
             "keep 10%": (("--filter", KEEP_TENTH), workload.events // 10)}
    timings: dict[str, list[Timing]] = {kind: [] for kind in kinds}
    order = list(kinds)
    try:
        for run in range(bench.runs):
            for kind in order[run % 3:] + order[:run % 3]:  # each kind goes first once in three runs
                extra, expected = kinds[kind]
                slot = slots.copy()
                timings[kind].append(wal2http_seconds(bench.db, slot, workload.publication, bench.receiver,
                                                      expected, BATCH, extra=extra))
                slots.drop(slot)
    finally:
        slots.close()
    result = ScenarioResult(9, f"--filter, --batch-size {BATCH}", {
        "table": "6 columns", "events": workload.events, "keep_all": KEEP_ALL, "keep_tenth": KEEP_TENTH})
    cost = result.add("table/op filter, one evaluation", "us", evaluation_us(KEEP_ALL))
    seconds = {kind: [t.seconds for t in runs] for kind, runs in timings.items()}
    for kind, runs in timings.items():
        result.add(f"wal2http, filter {kind}", "events read/s", [workload.events / t.seconds for t in runs])
        result.add(f"wal2http CPU per event read, filter {kind}", "us",
                   [t.cpu_seconds / workload.events * 1e6 for t in runs])
    keep = result.add("keep-all rate over unfiltered", "x", ratio_runs(seconds["none"], seconds["keep all"]))
    tenth = result.add("keep-10% rate over unfiltered", "x", ratio_runs(seconds["none"], seconds["keep 10%"]))
    result.check(f"table/op filter <= 5 us per event (got {cost.median:.2f})", cost.median <= 5)
    result.check(f"keep-all ratio >= 0.85 (got {keep.median:.2f})", keep.median >= 0.85)
    result.check(f"keep-10% ratio > 1 (got {tenth.median:.2f})", tenth.median > 1)
    return result
