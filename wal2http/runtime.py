"""The running process: run and breaker states, resend reasons, tuning of the garbage collector and the allocator."""

from __future__ import annotations

import ctypes
import gc
import logging
import os
from enum import StrEnum

logger = logging.getLogger(__name__)


class RunState(StrEnum):
    """What ``run`` is doing, as /readyz, the metrics and the logs name it."""

    STARTING = "starting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"
    STANDBY = "standby"
    STOPPING = "stopping"


class BreakerState(StrEnum):
    """The delivery circuit breaker's state, as /readyz and the metrics name it."""

    CLOSED = "closed"
    HALF_OPEN = "half-open"
    OPEN = "open"


class ResendReason(StrEnum):
    """Why a request went to the receiver again with the same ``webhook-id``, as the metrics and logs name it."""

    STATUS = "status"  # the receiver answered 408, 425, 429 or 5xx
    TIMEOUT = "timeout"  # no whole answer within --http-timeout
    CONNECTION = "connection"  # the connection closed or broke before a whole answer
    MALFORMED_ANSWER = "malformed-answer"  # the answer was not valid HTTP
    INTERIM = "interim"  # only an interim 1xx answer, never a final one


_M_TOP_PAD = -2  # from glibc's <malloc.h>
HEAP_SLACK_BYTES = 2 * 1024 * 1024


def tune_for_streaming() -> None:
    """Call once, after start-up and before the first change is read."""
    # What exists now (modules, connections, configuration) lives as long as the process: keep
    # it out of the collector's full scans, which cost 10% of the CPU time per event.
    gc.freeze()
    _keep_heap_slack()


def _keep_heap_slack() -> None:
    """Let the heap keep 2 MB free instead of returning every freed byte to the kernel.

    A batch's events are allocated together and freed together. By default glibc gives the
    freed top of the heap back to the kernel and takes it again for the next batch: a dozen
    ``brk`` calls and their page faults per request, 15% of the CPU time per event with
    500-event batches (10 against 8.6 us, ``make bench`` scenario 2). Setting the slack also
    fixes glibc's mmap threshold at 128 KB, so large values (TOASTed columns, batch bodies) get
    their own mappings and are unmapped when freed: RSS after a burst of them returned to
    within 3% of its steady level, against 10% without. ``MALLOC_TOP_PAD_`` in the environment
    wins; allocators other than glibc's are left alone.
    """
    if "MALLOC_TOP_PAD_" in os.environ:
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    if not mallopt(_M_TOP_PAD, HEAP_SLACK_BYTES):
        logger.debug("the C allocator refused M_TOP_PAD; heap slack unchanged")
