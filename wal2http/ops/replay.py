"""``wal2http replay``: send the events of a dead-letter file or a ``file`` capture again."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from wal2http.config.sections import OnReject, SinkKind
from wal2http.config.settings import Config
from wal2http.delivery.batch import Batcher
from wal2http.delivery.breaker import Breaker
from wal2http.delivery.deadletter import ReplayLine, read_lines
from wal2http.delivery.deliverer import Deliverer
from wal2http.delivery.lines import DISK_RETRY_MAX_S, HEALING, describe, write_until_done
from wal2http.errors import ConfigError, FileUnwritable, RejectedError, TransientDeliveryError
from wal2http.ops.start import make_sink
from wal2http.routing.destination import Unroutable, Where, destination_of

logger = logging.getLogger(__name__)

# The sinks whose acceptance takes a line out of a dead-letter file: a receiver took the event. Printing
# (stdout) or copying (file) is looking at it, and looking never deletes.
RECEIVERS = (SinkKind.HTTP, SinkKind.HOOK0)


@dataclass
class ReplayResult:
    total: int
    delivered: int = 0
    dead_letter_file: bool = False
    removes: bool = False  # delivered lines leave the file


def removes_lines(config: Config, keep: bool) -> bool:
    """Whether delivered lines leave a dead-letter file: only after a receiver accepted them, never with --keep."""
    return config.sink.kind in RECEIVERS and not keep


def listing(path: str) -> list[ReplayLine]:
    """Every line of ``path``, read and checked (``replay --dry-run``); never writes, a running wal2http may hold it."""
    with _exclusive(path, shared_ok=True):
        return list(read_lines(path))


def replay(config: Config, path: str, *, keep: bool = False,
           on_progress: Callable[[int], None] | None = None) -> ReplayResult:
    """Deliver every line of ``path`` in file order; lines a receiver accepted leave a dead-letter file.

    A rejection stops the replay (RejectedError, exit 4) with the lines not yet delivered
    still in the file. Every line is read and checked before anything is sent.
    """
    removes = removes_lines(config, keep)
    with _exclusive(path, shared_ok=not removes):
        lines = list(read_lines(path))
        dead_letter_file = bool(lines) and all(x.dead_letter for x in lines)
        result = ReplayResult(len(lines), dead_letter_file=dead_letter_file, removes=removes and dead_letter_file)
        if not lines:
            return result
        wheres = _destinations(config, path, lines)  # checked, like the lines, before anything is sent
        rewrite = result.removes
        raw = _raw_lines(path)
        sink = make_sink(config.sink, as_array=config.batch.max_events > 1, statuses=config.delivery.statuses)
        deliverer = Deliverer(sink, Breaker.of(config.delivery),
                              time.sleep, on_reject=OnReject.HALT, max_events=config.batch.max_events)
        batcher = Batcher(config.batch.max_events, config.batch.max_bytes, float("inf"))
        remaining = {line.number for line in lines}
        pending: list[ReplayLine] = []

        def flush() -> None:
            if not pending:
                return
            try:
                deliverer.deliver(batcher.take())
            except RejectedError as e:
                raise RejectedError(f"replay stopped at line {pending[0].number}: {e}; "
                                    f"{len(remaining)} line(s) not delivered"
                                    + (f" remain in {path}" if rewrite else ""),
                                    status=e.status, event_id=e.event_id, body=e.body) from None
            for line in pending:
                remaining.discard(line.number)
            result.delivered += len(pending)
            if rewrite:
                _rewrite(path, [raw[n] for n in sorted(remaining)])
            if on_progress is not None:
                on_progress(len(pending))
            pending.clear()

        try:
            for line, where in zip(lines, wheres, strict=True):
                if batcher.would_overflow(line.event) or batcher.goes_elsewhere(where):
                    flush()
                batcher.add(line.event, where)
                pending.append(line)
                if batcher.full:
                    flush()
            flush()
        finally:
            sink.close()
        return result


def _destinations(config: Config, path: str, lines: list[ReplayLine]) -> list[Where | None]:
    """Where each line goes when --http-url is a template (a request never mixes destinations)."""
    destination = destination_of(config.sink)
    if destination is None:
        return [None] * len(lines)
    wheres: list[Where | None] = []
    for line in lines:
        try:
            wheres.append(destination.of(line.event.record))
        except Unroutable as e:
            raise ConfigError(f"{path}:{line.number}: {e}") from None
    return wheres


class _exclusive:
    """Hold an exclusive lock on the file so a running wal2http cannot append while we rewrite it."""

    def __init__(self, path: str, shared_ok: bool) -> None:
        self.path = path
        self.shared_ok = shared_ok
        self.fd = -1

    def __enter__(self) -> None:
        try:
            self.fd = os.open(self.path, os.O_RDONLY)
        except OSError as e:
            raise ConfigError(f"cannot read {self.path!r}: {e.strerror}") from None
        try:
            fcntl.flock(self.fd, (fcntl.LOCK_SH if self.shared_ok else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise ConfigError(f"{self.path} is in use by a running wal2http: stop it first, "
                              "or replay a copy with --keep") from None

    def __exit__(self, *_exc: object) -> None:
        os.close(self.fd)


def _raw_lines(path: str) -> dict[int, bytes]:
    with open(path, "rb") as f:
        return {n: raw if raw.endswith(b"\n") else raw + b"\n" for n, raw in enumerate(f, start=1) if raw.strip()}


def _rewrite(path: str, raw_lines: list[bytes], sleep: Callable[[float], None] = time.sleep) -> None:
    """Replace ``path`` by ``raw_lines`` atomically: a crash leaves the old or the new file, whole.

    A full disk leaves the old file as it was (its delivered lines are sent again by the next
    replay) and is tried again with backoff until space is freed; a file that cannot be written
    halts (FileUnwritable).
    """
    def attempt() -> None:
        try:
            _replace(path, raw_lines)
        except OSError as e:
            text = f"cannot rewrite {path} without its delivered lines: {describe(e)}"
            raise (TransientDeliveryError if e.errno in HEALING else FileUnwritable)(text) from None

    failures = write_until_done(attempt, sleep,
                                f"{path} is unchanged, trying again every {DISK_RETRY_MAX_S:.0f} s at most")
    if failures:
        logger.info("rewrote %s after %d failed attempts", path, failures)


def _replace(path: str, raw_lines: list[bytes]) -> None:
    tmp = f"{path}.replay-tmp"
    try:
        with open(tmp, "wb") as out:
            out.writelines(raw_lines)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # never leave a partial copy behind
        raise
    directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
