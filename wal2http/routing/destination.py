"""Where an event goes: the receiver URL and header values filled from the event's schema, table, op and key."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from wal2http.config.headers import VALUE_RE, Header
from wal2http.config.routing import Template, parse_template
from wal2http.config.sections import SinkKind
from wal2http.config.settings import SinkConfig
from wal2http.errors import Wal2HttpError

Where = tuple[str, tuple[tuple[str, str], ...]]  # the URL, and the templated headers' values


class Unroutable(Wal2HttpError):
    """An event lacks a value its destination's template needs; it is refused like a rejected event."""


class Destination:
    """The URL and headers of a request; fixed unless a template names a field of the event."""

    def __init__(self, url: str, headers: tuple[Header, ...] = ()) -> None:
        self.url = parse_template(url, "--http-url")
        # Only literal header values are templates: a secret (env:, file:) is sent as it is.
        parsed = ((h.name, parse_template(h.value, f"--header {h.name}")) for h in headers if isinstance(h.value, str))
        self.headers = tuple((name, t) for name, t in parsed if not t.fixed)
        self.templated = not self.url.fixed or bool(self.headers)

    def of(self, record: dict[str, Any]) -> Where:
        """The URL (fields percent-encoded) and header values for this event; Unroutable when one is missing."""
        url = _fill(self.url, record, _in_url) if not self.url.fixed else self.url.text
        return url, tuple((name, _header_value(name, _fill(t, record, str))) for name, t in self.headers)


def _in_url(value: str) -> str:
    return quote(value, safe="")


def _fill(template: Template, record: dict[str, Any], escape: Any) -> str:
    out: list[str] = []
    for is_field, text in template.parts:
        if not is_field:
            out.append(text)
            continue
        if text.startswith("key."):
            key = record.get("key") or {}
            value = key.get(text[4:])
        else:
            value = record.get(text)
        if value is None:
            raise Unroutable(f"event {record.get('id')} ({record.get('schema')}.{record.get('table')} "
                             f"{record.get('op')}) has no value for {{{text}}} in {template.text!r}")
        out.append(escape(value if isinstance(value, str) else str(value)))
    return "".join(out)


def _header_value(name: str, value: str) -> str:
    if not VALUE_RE.match(value):
        raise Unroutable(f"header {name} would be {value[:40]!r}: not 1-8192 printable ASCII characters")
    return value


def destination_of(sink: SinkConfig) -> Destination | None:
    """The http sink's destination when it depends on the event; None when every request goes to one place."""
    if sink.kind != SinkKind.HTTP or sink.http is None:
        return None
    destination = Destination(sink.http.url, sink.http.headers)
    return destination if destination.templated else None
