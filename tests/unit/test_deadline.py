"""The total deadline: it ends a blocked call, a stop shortens it, and it leaves no timer behind."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator

import pytest

from wal2http import deadline as deadlines
from wal2http.deadline import DeadlineExceeded, deadline, limit_all


@pytest.fixture(autouse=True)
def _no_limit() -> Iterator[None]:
    deadlines.reset_limit()
    yield
    deadlines.reset_limit()


def test_a_blocked_recv_ends_at_the_deadline() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.settimeout(30)  # a per-read timeout would wait this long
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded) as caught, deadline(0.2):
            a.recv(1)
    took = time.monotonic() - started
    assert 0.19 < took < 0.5
    assert not caught.value.stopping
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) == signal.SIG_DFL


def test_a_trickle_cannot_extend_it() -> None:
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded), deadline(0.3):
        for _ in range(100):
            time.sleep(0.05)  # each step short, the whole long
    assert time.monotonic() - started < 0.5


def test_a_stop_shortens_the_running_deadline() -> None:
    def stop(_signum: int, _frame: object) -> None:
        limit_all(time.monotonic() + 0.1)

    previous = signal.signal(signal.SIGUSR1, stop)
    try:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded) as caught, deadline(30):
            signal.raise_signal(signal.SIGUSR1)
            time.sleep(5)
        assert time.monotonic() - started < 0.5
        assert caught.value.stopping
        with pytest.raises(DeadlineExceeded):  # after the stop's deadline nothing starts
            time.sleep(0.15)
            with deadline(30):
                pass
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_a_call_that_finishes_in_time_is_untouched() -> None:
    with deadline(0.05):
        pass
    time.sleep(0.1)  # no alarm left armed to go off later
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_nested_deadlines_keep_the_outer_one() -> None:
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded), deadline(0.3):
        with deadline(10):
            pass
        time.sleep(5)
    assert time.monotonic() - started < 0.6
