"""A total time limit on one blocking call to another party, enforced with SIGALRM.

A socket timeout bounds each read, not a request: a peer sending one byte a second keeps
every read short and the request endless. Python runs a signal handler between bytecodes and
when a blocking system call returns EINTR (PEP 475 retries only when the handler returns), so
a handler that raises ends a ``recv``, a TLS handshake, ``connect`` or ``sleep`` in the middle,
whatever the library around it does. Measured cost: 15 us per request to arm and disarm it
(two handler swaps, two ``setitimer`` calls), lost in the noise of a local POST (689 against
696 us, best of 5 x 500 requests). Socket timeouts recomputed from the time left would need a
hook before every ``recv`` inside http.client and urllib3, and would not cover a TLS handshake.

Only the main thread gets signals; elsewhere ``deadline`` enforces nothing and the sockets'
own timeouts apply. A stop (``limit_all``) shortens the deadline running, so SIGTERM never
waits for a hung receiver longer than ``--shutdown-timeout``.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

# setitimer(0) disarms the timer: a deadline already passed is armed this short instead.
_SOONEST_S = 1e-4


class DeadlineExceeded(Exception):
    """The call ran past its deadline (or past a stop's deadline, when ``stopping``).

    Not an OSError: no library retries it or turns it into something else on its way out.
    """

    def __init__(self, seconds: float, stopping: bool) -> None:
        super().__init__(f"no answer within {seconds:g} s" if not stopping else "stopping")
        self.seconds = seconds
        self.stopping = stopping


class _Running:
    def __init__(self, seconds: float, ends_at: float, limited: bool) -> None:
        self.seconds = seconds
        self.ends_at = ends_at
        self.limited = limited  # ends at the stop's deadline, not its own
        self.armed = True


_running: _Running | None = None
_limit_at = math.inf


def _on_alarm(_signum: int, _frame: FrameType | None) -> None:
    running = _running
    if running is None or not running.armed:
        return
    left = running.ends_at - time.monotonic()
    if left > _SOONEST_S:  # early: the timer was set before a stop moved the end
        signal.setitimer(signal.ITIMER_REAL, left)
        return
    running.armed = False
    raise DeadlineExceeded(running.seconds, running.limited)


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise DeadlineExceeded in the block once ``seconds`` (or a stop's deadline) have passed."""
    global _running
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    now = time.monotonic()
    own_end = now + seconds
    outer = _running
    ends_at = min(own_end, _limit_at, outer.ends_at if outer is not None else math.inf)
    limited = ends_at < own_end and ends_at == _limit_at
    if ends_at - now <= 0:
        raise DeadlineExceeded(seconds, limited)
    running = _Running(seconds, ends_at, limited)
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    _running = running
    signal.setitimer(signal.ITIMER_REAL, ends_at - now)
    try:
        yield
    finally:
        running.armed = False  # first: an alarm arriving from here on is ignored
        signal.setitimer(signal.ITIMER_REAL, 0)
        _running = outer
        signal.signal(signal.SIGALRM, previous)
        if outer is not None and outer.armed:
            signal.setitimer(signal.ITIMER_REAL, max(_SOONEST_S, outer.ends_at - time.monotonic()))


def limit_all(at: float) -> None:
    """From now on no deadline runs past ``at`` (time.monotonic()); shortens the one running.

    Safe to call from a signal handler: it only moves the end of the timer.
    """
    global _limit_at
    _limit_at = min(_limit_at, at)
    running = _running
    if running is not None and running.armed and _limit_at < running.ends_at:
        running.ends_at = _limit_at
        running.limited = True
        signal.setitimer(signal.ITIMER_REAL, max(_SOONEST_S, _limit_at - time.monotonic()))


def reset_limit() -> None:
    """Forget a stop's deadline (a new run in the same process, or a test)."""
    global _limit_at
    _limit_at = math.inf
