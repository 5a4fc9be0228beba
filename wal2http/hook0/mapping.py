"""Pure mapping of wal2http events to Hook0 event requests, with Hook0's validation rules."""

from __future__ import annotations

import binascii
import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from wal2http.config.hook0 import HOOK0_MAX_LABELS, Hook0Config, Hook0Mode
from wal2http.decode.events import Event, encode
from wal2http.decode.values import JsonText
from wal2http.errors import UnmappableEvent

# Changes-mode ids are uuid5(NAMESPACE, "<service>/<wal2http event id>"): the same change always
# gets the same Hook0 event id, so a redelivery is answered 409 EventAlreadyIngested.
NAMESPACE = uuid.UUID("5a1e2f0c-8d3b-5f4e-9c71-0b6d2a4e8f13")

VERBS = {"insert": "inserted", "update": "updated", "delete": "deleted", "truncate": "truncated",
         "read": "read"}  # read: a row sent by a backfill
CONTENT_TYPES = ("application/json", "text/plain", "application/octet-stream+base64")
PAYLOAD_MAX_CHARS = 699_050  # Hook0: 512 KiB of payload, base64-encoded
BODY_MAX_BYTES = 2 * 1024 * 1024  # Hook0 refuses larger request bodies
EVENT_TYPE_MAX_CHARS = 200
PROPERTY_MAX_BYTES = 50  # label and metadata keys and values
METADATA_MAX = 50
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_UNSAFE_NAME_RE = re.compile(r"[^A-Za-z0-9_]+")


@dataclass(frozen=True, slots=True)
class Hook0Event:
    """One request to ``POST /event``: ``body`` is exactly what is sent."""

    event_id: str
    event_type: str
    body: bytes


def sanitize_name(name: str) -> str:
    """A name usable as one part of ``service.resource_type.verb``: [A-Za-z0-9_], 1-50 characters."""
    return _UNSAFE_NAME_RE.sub("_", name).strip("_")[:50] or "_"


def derived_event_id(service: str, wal2http_id: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{service}/{wal2http_id}"))


def parse_json(text: str) -> Any:
    """JSON whose numbers stay exactly as written when encoded again."""
    return json.loads(text, parse_int=JsonText, parse_float=JsonText)


class Hook0Mapper:
    """Decides which changes become Hook0 events and builds their requests."""

    def __init__(self, config: Hook0Config, service: str) -> None:
        self.application_id = str(uuid.UUID(config.application_id))
        self.mode = config.mode
        self.outbox = config.outbox_schema_table
        self.message_prefix = config.message_prefix
        self.service = service
        self.labels = config.labels

    def event_types_for(self, table: str, operations: Iterable[str] = tuple(VERBS)) -> list[str]:
        """The changes-mode event types of one table, for the ``operations`` published."""
        return [f"{self.service}.{sanitize_name(table)}.{VERBS[op]}" for op in operations if op in VERBS]

    def map(self, event: Event) -> Hook0Event | None:
        """The Hook0 event for a change; None when this mode ignores it. Raises UnmappableEvent."""
        record = event.record
        if event.op == "message":
            if record["prefix"] != self.message_prefix:
                return None
            return self._from_message(event)
        if self.mode == Hook0Mode.CHANGES:
            return self._from_change(event)
        if event.op == "insert" and (record["schema"], record["table"]) == self.outbox:
            return self._from_fields(record["new"], "column", event)
        return None

    def _from_message(self, event: Event) -> Hook0Event:
        record = event.record
        if record["content_base64"]:
            raise UnmappableEvent("message content is not UTF-8 text: it must be a JSON object")
        try:
            fields = parse_json(record["content"])
        except ValueError as e:
            raise UnmappableEvent(f"message content is not JSON: {e}") from None
        if not isinstance(fields, dict):
            raise UnmappableEvent("message content must be a JSON object with event_type, payload and labels")
        return self._from_fields(fields, "field", event)

    def _from_fields(self, fields: dict[str, Any], kind: str, event: Event) -> Hook0Event:
        """An outbox row (``kind`` "column") or an outbox message (``kind`` "field")."""
        event_id = fields.get("event_id")
        event_id = derived_event_id(self.service, event.id) if event_id is None else _uuid(event_id, f"{kind} event_id")
        event_type = _required(fields, "event_type", kind)
        if not isinstance(event_type, str):
            raise UnmappableEvent(f"{kind} event_type must be text, not {_json_type(event_type)}")
        payload, content_type = _payload(_required(fields, "payload", kind))
        declared = fields.get("payload_content_type")
        if declared is not None:
            if declared not in CONTENT_TYPES:
                raise UnmappableEvent(f"{kind} payload_content_type {str(declared)[:60]!r} is not one of "
                               f"{', '.join(CONTENT_TYPES)}")
            content_type = declared
        labels = _object(_required(fields, "labels", kind), f"{kind} labels")
        metadata = fields.get("metadata")
        occurred_at = fields.get("occurred_at", fields.get("created_at"))
        name = "occurred_at" if "occurred_at" in fields else "created_at"
        return self._build(
            event_id,
            event_type,
            payload,
            content_type,
            labels,
            None if metadata is None else _object(metadata, f"{kind} metadata"),
            _timestamp(occurred_at, f"{kind} {name}") if occurred_at is not None else _commit_time(event),
            payload_is_json=isinstance(payload, JsonText),
            kind=f"{kind} ",
        )

    def _from_change(self, event: Event) -> Hook0Event:
        record = event.record
        table = record["table"]
        event_type = f"{self.service}.{sanitize_name(table)}.{VERBS[event.op]}"
        labels: dict[str, Any] = {"schema": record["schema"], "table": table}
        row = record["new"] if record["new"] is not None else record["old"]
        for name, column in self.labels:
            value = row.get(column) if row else None
            if value is not None:
                labels[name] = value
        return self._build(
            derived_event_id(self.service, event.id),
            event_type,
            event.body.decode(),
            "application/json",
            labels,
            None,
            _commit_time(event),
            payload_is_json=True,
            kind="",
        )

    def _build(
        self,
        event_id: str,
        event_type: str,
        payload: str,
        content_type: str,
        labels: dict[str, Any],
        metadata: dict[str, Any] | None,
        occurred_at: str,
        payload_is_json: bool,
        kind: str,
    ) -> Hook0Event:
        _check_event_type(event_type)
        _check_payload(payload, content_type, payload_is_json)
        request: dict[str, Any] = {
            "application_id": self.application_id,
            "event_id": event_id,
            "event_type": event_type,
            "payload": str(payload),
            "payload_content_type": content_type,
            "labels": _properties(labels, f"{kind}labels", 1, HOOK0_MAX_LABELS),
            "occurred_at": occurred_at,
        }
        if metadata is not None:
            request["metadata"] = _properties(metadata, f"{kind}metadata", 0, METADATA_MAX)
        body = orjson.dumps(request)
        if len(body) > BODY_MAX_BYTES:
            raise UnmappableEvent(f"the request would be {len(body)} bytes, above Hook0's limit of {BODY_MAX_BYTES}")
        return Hook0Event(event_id, event_type, body)


def _required(fields: dict[str, Any], name: str, kind: str) -> Any:
    if name not in fields:
        raise UnmappableEvent(f"no {name} {kind}" + (" in the outbox table" if kind == "column" else ""))
    value = fields[name]
    if value is None:
        raise UnmappableEvent(f"{kind} {name} is null")
    return value


def _uuid(value: Any, what: str) -> str:
    try:
        return str(uuid.UUID(value)) if isinstance(value, str) else str(uuid.UUID(str(value)))
    except ValueError:
        raise UnmappableEvent(f"{what} {str(value)[:60]!r} is not a UUID") from None


def _payload(value: Any) -> tuple[str, str]:
    """Payload text and its default content type: JSON values as JSON, text as given."""
    if isinstance(value, JsonText):
        return value, "application/json"
    if isinstance(value, str):
        return value, "text/plain"
    # A JSON value inside a message, or a json(b) column read back by 'wal2http replay'.
    return JsonText(encode(value).decode()), "application/json"


def _object(value: Any, what: str) -> dict[str, Any]:
    if isinstance(value, JsonText):
        value = parse_json(value)
    if not isinstance(value, dict):
        raise UnmappableEvent(f"{what} must be a JSON object, not {_json_type(value)}")
    return value


def _properties(values: dict[str, Any], what: str, least: int, most: int) -> dict[str, str]:
    """Labels or metadata per Hook0's rules; numbers and booleans are sent as their JSON text."""
    if not least <= len(values) <= most:
        raise UnmappableEvent(f"{what} has {len(values)} entries; Hook0 takes {least} to {most}")
    out: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float | str):
            text = str(value)
        else:
            raise UnmappableEvent(f"{what} {key!r} must be a string, number or boolean, not {_json_type(value)}")
        for part, size in (("name", len(key.encode())), ("value", len(text.encode()))):
            if not 1 <= size <= PROPERTY_MAX_BYTES:
                raise UnmappableEvent(f"{what} {key[:60]!r} has a {part} of {size} bytes; "
                               f"Hook0 takes 1 to {PROPERTY_MAX_BYTES}")
        out[str(key)] = text
    return out


def _check_event_type(event_type: str) -> None:
    parts = event_type.split(".")
    if (
        len(parts) != 3
        or not all(parts)
        or len(event_type) > EVENT_TYPE_MAX_CHARS
        or _CONTROL_RE.search(event_type)
    ):
        raise UnmappableEvent(f"event_type {event_type[:80]!r} is not service.resource_type.verb "
                       f"(three non-empty parts, at most {EVENT_TYPE_MAX_CHARS} characters, "
                       "no control characters)")


def _check_payload(payload: str, content_type: str, is_json: bool) -> None:
    if len(payload) > PAYLOAD_MAX_CHARS:
        raise UnmappableEvent(f"payload is {len(payload)} characters, above Hook0's limit of {PAYLOAD_MAX_CHARS}")
    if content_type == "application/json" and not is_json:
        try:
            json.loads(payload)
        except ValueError as e:
            raise UnmappableEvent(
                f"payload is not valid JSON, as payload_content_type application/json needs: {e}"
            ) from None
    elif content_type == "application/octet-stream+base64":
        try:
            binascii.a2b_base64(payload.encode(), strict_mode=True)
        except (binascii.Error, UnicodeEncodeError):
            raise UnmappableEvent("payload is not valid base64, as payload_content_type "
                           "application/octet-stream+base64 needs") from None


def _timestamp(value: Any, what: str) -> str:
    """An RFC 3339 UTC timestamp; refuses what has no time zone or is not a finite instant."""
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            when = None
        if when is not None and when.tzinfo is not None:
            return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    raise UnmappableEvent(f"{what} {str(value)[:60]!r} is not a timestamp with a time zone (use timestamptz)")


def _commit_time(event: Event) -> str:
    commit_time = event.record.get("commit_time")
    if commit_time:
        return str(commit_time)
    # A non-transactional message has no commit: the time it is relayed stands in.
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return "text"
    return type(value).__name__
