"""``make bench``: run the scenarios of issue 8, print a table, optionally write JSON.

Usage: ``python -m tests.bench [--scale 0.1] [--scenarios 1,2,5] [--runs 3] [--output bench.json]``
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import wal2http
from tests.bench import scenarios
from tests.bench.backfill import backfill as backfill_scenario
from tests.bench.filtered import filtered
from tests.bench.large_values import large_values
from tests.bench.receiver import FastReceiver
from tests.bench.report import ScenarioResult, table, write_json
from tests.support.pgcluster import PgCluster

ALL = (1, 2, 3, 4, 5, 6, 7, 8, 9)
# A server tuned to measure replication: no checkpoint and no autovacuum competing with a run.
# synchronous_commit=on as in production: with "off" the walsender sees a commit only once the
# WAL writer flushed it, up to wal_writer_delay (200 ms) later, and latency would measure that.
SETTINGS = {"max_wal_size": "8GB", "checkpoint_timeout": "30min", "autovacuum": "off",
            "synchronous_commit": "on"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply workload sizes and the latency duration (0.1: a quick run)")
    parser.add_argument("--scenarios", default=",".join(map(str, ALL)),
                        help="comma-separated scenario numbers (1 and 2 share their runs)")
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario, at least 3")
    parser.add_argument("--output", type=Path, help="also write the results as JSON to this file")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="run wal2http under cProfile in scenarios 2-4 and keep the statistics "
                             "in DIR (the timings then measure the profiler too)")
    args = parser.parse_args(argv)
    try:
        args.scenarios = sorted({int(n) for n in args.scenarios.split(",") if n.strip()})
    except ValueError:
        parser.error("--scenarios takes numbers such as 1,2,5")
    if not args.scenarios or not set(args.scenarios) <= set(ALL):
        parser.error("--scenarios takes numbers from 1 to 9")
    if args.runs < 3:
        parser.error("--runs must be at least 3 (the table reports a median and a spread)")
    if not 0 < args.scale <= 10:
        parser.error("--scale must be above 0 and at most 10")
    return args


def environment(pg: PgCluster, args: argparse.Namespace) -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wal2http": wal2http.__version__,
        "commit": commit or None,
        "python": platform.python_version(),
        "postgresql": pg.execute("SHOW server_version")[0][0],
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
        "scale": args.scale,
        "runs": args.runs,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    results: list[ScenarioResult] = []
    started = time.monotonic()
    with PgCluster(settings=SETTINGS) as pg, FastReceiver() as receiver:
        db = pg.create_database("bench")
        bench = scenarios.Bench(db, receiver, args.scale, args.runs, args.profile)
        wanted = set(args.scenarios)
        steps: list[tuple[set[int], Callable[[], Any]]] = [
            ({1, 2}, lambda: scenarios.throughput(bench)),
            ({3}, lambda: scenarios.wide_rows(bench)),
            ({4}, lambda: scenarios.one_event_per_request(bench)),
            ({5}, lambda: scenarios.latency(bench)),
            ({6}, lambda: scenarios.memory(bench)),
            ({7}, lambda: backfill_scenario(bench)),
            ({8}, lambda: large_values(bench)),
            ({9}, lambda: filtered(bench)),
        ]
        for numbers, step in steps:
            if not numbers & wanted:
                continue
            print(f"scenario {','.join(map(str, sorted(numbers & wanted)))} ...", file=sys.stderr, flush=True)
            produced = step()
            for result in produced if isinstance(produced, tuple) else (produced,):
                if result.number in wanted:
                    results.append(result)
        env = environment(pg, args)
    env["seconds"] = round(time.monotonic() - started, 1)
    print(table(results))
    print(f"scale {args.scale:g}, {args.runs} runs per scenario, {env['cpus']} CPUs, "
          f"PostgreSQL {env['postgresql']}, {env['seconds']:g} s")
    if args.output is not None:
        write_json(args.output, results, env)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
