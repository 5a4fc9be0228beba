"""The stdout and file sinks: one JSON event per line."""

from __future__ import annotations

import sys
from typing import BinaryIO

from wal2http.delivery.batch import Batch
from wal2http.delivery.lines import LineFile
from wal2http.errors import DeliveryError


class JsonLinesSink:
    """Appends events as JSON lines; a batch is flushed (and fsynced for files) before it counts."""

    def __init__(self, out: BinaryIO | LineFile, name: str) -> None:
        self._out = out
        self._name = name

    @classmethod
    def to_stdout(cls) -> JsonLinesSink:
        return cls(sys.stdout.buffer, "standard output")

    @classmethod
    def to_file(cls, path: str) -> JsonLinesSink:
        """A file sink; a full disk is retried, the file never ends in part of a batch."""
        return cls(LineFile(path, "--file-path"), path)

    def send(self, batch: Batch) -> None:
        data = b"".join(event.body + b"\n" for event in batch.events)
        out = self._out
        if isinstance(out, LineFile):
            out.append(data, "events")  # TransientDeliveryError (full disk) or FileUnwritable
            return
        try:
            out.write(data)
            out.flush()
        except OSError as e:
            # A closed pipe will not reopen while we hold the batch.
            raise DeliveryError(f"cannot write events to {self._name}: {e.strerror or e}",
                                event_id=batch.batch_id) from None

    def close(self) -> None:
        if self._out is not sys.stdout.buffer:
            self._out.close()
