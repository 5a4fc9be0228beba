"""The requests of a batch in each ``--format``: the event JSON, or the HTTP binding of CloudEvents 1.0.2."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson

from wal2http.config.cloudevents import CloudEventsConfig, EventFormat
from wal2http.decode.events import Event, encode
from wal2http.delivery.batch import Batch
from wal2http.errors import TransientDeliveryError

SPEC_VERSION = "1.0"  # the specversion of every 1.0.x release, 1.0.2 included
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
DATA_TYPE = "application/json"
# The HTTP binding (3.1.3.2): printable ASCII but space, '"' and '%' goes as is; everything else as
# percent-encoded UTF-8.
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in ' "%')
_NEEDS_ENCODING = re.compile(r'[^\x21\x23\x24\x26-\x7e]')


def header_value(value: str) -> str:
    """An attribute value as a ``ce-`` header carries it."""
    # Most values (ids, times, types) need nothing: the search costs a tenth of quote().
    return quote(value, safe=_HEADER_SAFE) if _NEEDS_ENCODING.search(value) else value


@dataclass(frozen=True, slots=True)
class Request:
    """One request of a batch: the events it carries, its body and the headers of its format."""

    batch: Batch
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class Formatter:
    """Turns a batch into requests: one in json and structured mode, one per event in binary mode."""

    def __init__(self, fmt: EventFormat, settings: CloudEventsConfig, as_array: bool) -> None:
        if fmt != EventFormat.JSON and settings.source is None:
            raise ValueError("a CloudEvents format needs its source resolved")
        self._format = fmt
        self._source = settings.source or ""
        self._prefix = settings.type_prefix
        self._as_array = as_array

    def requests(self, batch: Batch) -> list[Request]:
        if self._format == EventFormat.JSON:
            return [Request(batch, batch.body(self._as_array))]
        if self._format == EventFormat.CLOUDEVENTS_BINARY:
            return [Request(Batch.of(e), e.body, self._binary_headers(e)) for e in batch.events]
        if len(batch.events) == 1:
            return [Request(batch, orjson.dumps(self._structured(batch.events[0])), {"Content-Type": STRUCTURED})]
        body = orjson.dumps([self._structured(e) for e in batch.events])
        return [Request(batch, body, {"Content-Type": BATCH})]

    def attributes(self, event: Event) -> dict[str, str]:
        """The context attributes of ``event``: its stable id, source, type, commit time and key."""
        record = event.record
        schema, table = record.get("schema"), record.get("table")
        kind = f"{self._prefix}.{schema}.{table}.{event.op}" if schema and table else f"{self._prefix}.{event.op}"
        attributes = {"specversion": SPEC_VERSION, "id": event.id, "source": self._source, "type": kind}
        if record.get("commit_time"):
            attributes["time"] = str(record["commit_time"])
        if record.get("key") is not None:
            attributes["subject"] = encode(record["key"]).decode()  # compact JSON of the key columns
        return attributes

    def _structured(self, event: Event) -> dict[str, Any]:
        attributes: dict[str, Any] = self.attributes(event)
        attributes["datacontenttype"] = DATA_TYPE
        attributes["data"] = orjson.Fragment(event.body)  # the event JSON, not parsed again
        return attributes

    def _binary_headers(self, event: Event) -> dict[str, str]:
        headers = {f"ce-{name}": header_value(value) for name, value in self.attributes(event).items()}
        headers["Content-Type"] = DATA_TYPE
        return headers


class Parts:
    """Sends the requests of a batch in order; a batch sent again resumes after the requests accepted before."""

    def __init__(self) -> None:
        self._accepted: set[str] = set()  # ids of the events of the last failed batch that were accepted

    def send(self, requests: list[Request], post: Callable[[Request], int]) -> int | None:
        """``post`` each request (it raises on failure); the status of the last one sent, None if none was."""
        if len(requests) == 1 and not self._accepted:
            return post(requests[0])
        # Also after a failure, when the deliverer sends the batch's events one by one.
        accepted, self._accepted = self._accepted, set()
        status = None
        for request in requests:
            ids = {e.id for e in request.batch.events}
            if ids <= accepted:
                continue  # ids are stable: this event was accepted when the batch was sent before
            try:
                status = post(request)
            except BaseException as e:
                self._accepted = accepted
                if isinstance(e, TransientDeliveryError):
                    e.request = (request.batch.batch_id, len(request.batch.events))
                raise
            accepted |= ids
        return status
