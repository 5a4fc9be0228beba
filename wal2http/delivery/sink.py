"""The Sink interface the deliverer calls, and what a sink may know of the source."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from wal2http.delivery.batch import Batch


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
