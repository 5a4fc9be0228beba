"""The shape of the http sink's requests (``--format``) and the CloudEvents attributes wal2http sets."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote

from wal2http.errors import ConfigError

DEFAULT_TYPE_PREFIX = "io.wal2http"


class EventFormat(StrEnum):
    """``--format``: the event JSON as it is, or CloudEvents 1.0.2 over HTTP in structured or binary mode."""

    JSON = "json"
    CLOUDEVENTS = "cloudevents"
    CLOUDEVENTS_BINARY = "cloudevents-binary"


@dataclass(frozen=True)
class CloudEventsConfig:
    """``--ce-source`` and ``--ce-type-prefix``."""

    source: str | None = None  # None: default_source() of the database and slot, known once run connects
    type_prefix: str = DEFAULT_TYPE_PREFIX


def default_source(database: str, slot: str) -> str:
    """``/wal2http/<database>/<slot>``: with the event id, unique per change of one database's slot."""
    return f"/wal2http/{quote(database, safe='')}/{quote(slot, safe='')}"


def validate_cloudevents(settings: CloudEventsConfig) -> None:
    """Both attributes are printable text without white space (a URI-reference and a dotted name)."""
    for option, value in (("--ce-source", settings.source), ("--ce-type-prefix", settings.type_prefix)):
        if value is not None and (not value or not value.isprintable() or any(c.isspace() for c in value)):
            raise ConfigError(f"invalid {option} {value!r}: give non-empty text without spaces or control "
                              "characters")
