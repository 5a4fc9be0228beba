"""Where events go: the only package that imports requests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from wal2http.batch import Batch
from wal2http.config import SinkConfig


class Sink(Protocol):
    """Delivers one batch synchronously.

    ``send`` returns once the receiver accepted the whole batch, with the HTTP status when
    there is one (for the logs). It raises
    ``TransientDeliveryError`` when trying again later may succeed, and ``DeliveryError``
    when it will not.
    """

    def send(self, batch: Batch) -> int | None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SourceInfo:
    """What a sink may need to know of the source: its database and the published tables."""

    database: str = ""
    tables: tuple[tuple[str, str], ...] = ()  # (schema, table)


def make_sink(config: SinkConfig, as_array: bool, source: SourceInfo | None = None) -> Sink:
    """Build the configured sink; ``as_array`` sends JSON arrays (batch size above 1)."""
    if config.kind == "hook0":
        from wal2http.sinks.hook0 import Hook0Sink

        assert config.hook0 is not None
        sink = Hook0Sink(config.hook0, source or SourceInfo())
        sink.prepare()
        return sink
    if config.kind == "http":
        from wal2http.sinks.http import HttpSink

        assert config.http is not None
        return HttpSink(config.http, as_array)
    from wal2http.sinks.jsonlines import JsonLinesSink

    if config.kind == "file":
        assert config.file_path is not None
        return JsonLinesSink.to_file(config.file_path)
    return JsonLinesSink.to_stdout()
