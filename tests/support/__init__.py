"""Test support shared by the suite, `make demo` and `make bench`: polling, PostgreSQL, a receiver."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["wait_for_signal", "wait_until"]

_T = TypeVar("_T")
SIGNAL_POLL_S = 0.2


def wait_for_signal() -> None:
    """Block the main thread until a signal handler raises (Ctrl-C: KeyboardInterrupt).

    Not ``threading.Event().wait()``: the kernel may hand the signal to another thread (a server's),
    and Python runs the handler only once the main thread executes again, which a lock wait without
    a timeout never does.
    """
    idle = threading.Event()
    while not idle.wait(SIGNAL_POLL_S):
        pass


def wait_until(
    predicate: Callable[[], _T],
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "condition",
) -> _T:
    """Poll ``predicate`` until it is truthy and return its value; else TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)
