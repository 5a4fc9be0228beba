"""The stdout and file sinks: one JSON event per line."""

from __future__ import annotations

import os
import sys
from typing import BinaryIO

from wal2http.delivery.batch import Batch
from wal2http.errors import ConfigError, DeliveryError


class JsonLinesSink:
    """Appends events as JSON lines; a batch is flushed (and fsynced for files) before it counts."""

    def __init__(self, out: BinaryIO, name: str, fsync: bool) -> None:
        self._out = out
        self._name = name
        self._fsync = fsync

    @classmethod
    def to_stdout(cls) -> JsonLinesSink:
        return cls(sys.stdout.buffer, "standard output", fsync=False)

    @classmethod
    def to_file(cls, path: str) -> JsonLinesSink:
        try:
            out = open(path, "ab")  # noqa: SIM115 - kept open for the life of the sink
        except OSError as e:
            raise ConfigError(f"cannot open --file-path {path!r}: {e.strerror}") from None
        return cls(out, path, fsync=True)

    def send(self, batch: Batch) -> None:
        try:
            self._out.write(b"".join(event.body + b"\n" for event in batch.events))
            self._out.flush()
            if self._fsync:
                os.fsync(self._out.fileno())
        except OSError as e:
            # A full disk or a closed pipe will not fix itself while we hold the batch.
            raise DeliveryError(f"cannot write events to {self._name}: {e.strerror or e}",
                                event_id=batch.batch_id) from None

    def close(self) -> None:
        if self._out is not sys.stdout.buffer:
            self._out.close()
