"""Test support shared by the suite, `make demo` and `make bench`: polling, PostgreSQL, a receiver."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["HOST", "free_port", "wait_for_signal", "wait_until"]

_T = TypeVar("_T")
SIGNAL_POLL_S = 0.2
HOST = "127.0.0.1"  # all test traffic stays on the loopback interface


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now, for a server started next.

    The kernel picks it among the ephemeral ports, so parallel test workers asking at the same time get
    different ones; a server that cannot bind it after all should ask again (as PgCluster.start does).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


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
