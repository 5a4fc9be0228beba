"""Append whole lines to a file: each append lands whole and fsynced, or the file is cut back to before it.

A full disk (ENOSPC, EDQUOT) heals when someone frees space: it is a TransientDeliveryError,
retried like a receiver outage. A file that cannot be written however long we wait (permission,
a read-only file system, its directory gone) is a FileUnwritable, which halts.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable

from wal2http.errors import FileUnwritable, TransientDeliveryError

logger = logging.getLogger(__name__)

# Errors that go away without a change of configuration: space freed, quota raised, an interrupted call.
HEALING = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EINTR, errno.EAGAIN, errno.EIO, errno.ENOMEM})
_TAIL_CHUNK = 65536
DISK_RETRY_MAX_S = 30.0  # longest wait between two attempts to write to a full disk


def disk_retry_delay(failures: int) -> float:
    """The wait before the next write attempt after ``failures`` failed ones: doubling, capped."""
    return min(DISK_RETRY_MAX_S, 0.5 * 2.0 ** min(failures, 10))


def write_until_done(write: Callable[[], None], wait: Callable[[float], None], meanwhile: str) -> int:
    """Call ``write`` until it no longer raises TransientDeliveryError (a full disk); the failed attempts.

    Waits ``disk_retry_delay`` between attempts; the first failure is a warning ending with ``meanwhile``
    (what the operator should know while it lasts), later ones are debug lines. FileUnwritable passes.
    """
    failures = 0
    while True:
        try:
            write()
        except TransientDeliveryError as e:
            failures += 1
            log = logger.warning if failures == 1 else logger.debug
            log("%s; %s", e, meanwhile)
            wait(disk_retry_delay(failures))
            continue
        return failures


class LineFile:
    """An append-only file of newline-terminated lines, kept whole across failed writes and crashes."""

    def __init__(self, path: str, option: str) -> None:
        self.path = path
        self.option = option  # the option naming the file, for messages
        self._fd = -1
        self._open()
        self._drop_partial_line()

    def fileno(self) -> int:
        return self._fd

    def append(self, data: bytes, what: str) -> None:
        """Write ``data`` (whole lines) and fsync; on failure cut the file back and raise.

        ``what`` names the content in messages ("events", "a dead letter").
        """
        self._follow_path()
        try:
            start = os.lseek(self._fd, 0, os.SEEK_END)
        except OSError as e:
            raise self._error(e, what) from None
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        except OSError as e:
            self._cut_back(start)
            raise self._error(e, what) from None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- internals -------------------------------------------------------------

    def _open(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise FileUnwritable(f"cannot open {self.option} {self.path}: {describe(e)}") from None

    def _follow_path(self) -> None:
        """Write where the path points now: after a move (log rotation) or a removal, a new file."""
        try:
            same = os.path.samestat(os.stat(self.path), os.fstat(self._fd))
        except FileNotFoundError:
            same = False
        except OSError:
            return  # say it on the write, if it fails too
        if not same:
            logger.warning("%s was moved or removed: writing to a new %s", self.path, self.path)
            old = self._fd
            self._open()  # FileUnwritable when its directory is gone
            os.close(old)

    def _cut_back(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)
        except OSError as e:
            logger.error("cannot cut %s back to its last whole line after a failed write: %s; the next "
                         "write tries again", self.path, describe(e))

    def _drop_partial_line(self) -> None:
        """A crash in the middle of a write can leave part of a line, never confirmed: cut it off."""
        size = os.lseek(self._fd, 0, os.SEEK_END)
        if size == 0:
            return
        with open(self.path, "rb") as f:
            end = size
            while end > 0:
                start = max(0, end - _TAIL_CHUNK)
                f.seek(start)
                chunk = f.read(end - start)
                cut = chunk.rfind(b"\n")
                if cut >= 0:
                    end = start + cut + 1
                    break
                end = start
        if end < size:
            logger.warning("%s ended in %d bytes of a partial line (a crash during a write); removed them: "
                           "those events were not confirmed and are sent again", self.path, size - end)
            self._cut_back(end)

    def _error(self, error: OSError, what: str) -> TransientDeliveryError | FileUnwritable:
        text = f"cannot write {what} to {self.path}: {describe(error)}"
        if error.errno in HEALING:
            return TransientDeliveryError(text)
        return FileUnwritable(text)


def describe(error: OSError) -> str:
    """``No space left on device (ENOSPC)``: the text and the symbolic errno."""
    name = errno.errorcode.get(error.errno or 0, "")
    text = error.strerror or str(error)
    return f"{text} ({name})" if name else text
