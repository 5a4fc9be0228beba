"""The benchmark's own arithmetic: what is timed, the order of the runs, the pairing of measures."""

from __future__ import annotations

import sys

from tests.bench.consumers import stream_seconds
from tests.bench.scenarios import growth_runs, reference_first

CONSUMER = """
import sys, time
sys.stderr.write("starting log streaming\\n"); sys.stderr.flush()
sys.stdout.write("x" * 1000); sys.stdout.flush()  # the last change
time.sleep(2)  # pg_recvlogical waits here for the server to report --endpos
"""


def test_a_consumer_is_timed_to_its_last_output_not_to_its_exit() -> None:
    seconds, written, lines = stream_seconds([sys.executable, "-c", CONSUMER])
    assert written == 1000 and lines == ["starting log streaming\n"]
    assert seconds < 1.5  # the 2 s before the exit are not counted


def test_the_reference_runs_first_in_every_other_pair() -> None:
    assert [reference_first(run) for run in range(4)] == [True, False, True, False]


def test_growth_is_paired_per_run() -> None:
    # The medians of the two measures (100 and 200 MB) would say 100 %; run by run it is 0, 100 and 5 %.
    assert growth_runs([100, 100, 200], [100, 200, 210]) == [0, 100, 5]
