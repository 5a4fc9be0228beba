"""Test support shared by the suite, `make demo` and `make bench`: polling, PostgreSQL, a receiver."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["wait_until"]

_T = TypeVar("_T")


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
