"""A local fake of Hook0's API (ingestion, event types, instance), checked with the official SDK's models."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from hook0.generated.models import EventPost, EventTypePost, InstanceConfig
from hook0.runtime import DecodeError

from tests.support import HOST, readme, wait_for_signal
from tests.support.httpserver import Handler, RecordingServer

__all__ = ["OUTBOX_DDL", "FakeHook0", "HookRequest", "hook0_args", "token_env"]

API = "/api/v1"
PAYLOAD_MAX_CHARS = 699_050
CONTENT_TYPES = ("text/plain", "application/json", "application/octet-stream+base64")
# The SQL exactly as README.rst shows it (blocks marked name=... there); the publication is each test's.
OUTBOX_DDL = "\n".join(s for s in readme.block("hook0-outbox").statements() if not s.startswith("CREATE PUBLICATION"))
ROUTES = frozenset({("POST", f"{API}/event"), ("GET", f"{API}/event_types"), ("POST", f"{API}/event_types")})

PROBLEMS: dict[str, tuple[int, str]] = {
    "EventAlreadyIngested": (409, "Event already Ingested"),
    "EventTypeDoesNotExist": (400, "Event type does not exist or is deactivated"),
    "EventInvalidPayloadContentType": (400, "Invalid event payload content type"),
    "EventInvalidJsonPayload": (400, "Invalid event JSON payload"),
    "EventInvalidBase64Payload": (400, "Invalid event base64 payload"),
    "JsonPayload": (400, "Provided body could not be decoded as JSON"),
    "Validation": (422, "Provided input is malformed"),
    "AuthNoAuthorizationHeader": (401, "No `Authorization` header was found in the HTTP request"),
    "AuthInvalidAuthorizationHeader": (400, "`Authorization` header is invalid"),
    "AuthInvalidBiscuit": (403, "Invalid token"),
    "Forbidden": (403, "Insufficient rights"),
    "NotFound": (404, "Item not found"),
    "TooManyEventsToday": (429, "Exceeded events per day quota"),
    "RateLimited": (429, "Too many requests"),
    "ServiceUnavailable": (503, "Service unavailable"),
    "InternalServerError": (500, "Something wrong happened"),
}


class Problem(Exception):
    """A Hook0 problem answer (application/problem+json)."""

    def __init__(self, id: str, detail: str = "", validation: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(id)
        self.id, self.detail, self.validation = id, detail, validation
        self.status, self.title = PROBLEMS[id]
        self.headers = headers or {}

    def body(self) -> bytes:
        problem = {"type": f"https://hook0.com/documentation/errors/{self.id}", "id": self.id,
                   "title": self.title, "detail": self.detail or self.title, "status": self.status}
        if self.validation is not None:
            problem["validation"] = self.validation
        return json.dumps(problem).encode()


@dataclass(frozen=True)
class HookRequest:
    """One request as the fake got it, with its answer."""

    method: str
    path: str
    headers: dict[str, str]  # lowercased names
    body: bytes
    status: int
    problem: str | None  # the problem id answered, if any
    received_at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class StoredEvent:
    """An ingested event: the SDK's parsed model and the JSON as sent."""

    model: EventPost
    raw: dict[str, Any]
    received_at: str


@dataclass
class _Injected:
    problem: str
    headers: dict[str, str] = field(default_factory=dict)
    detail: str = ""


class _Handler(Handler):
    def _handle(self) -> None:
        received_at = time.time()
        body = self.read_body()
        fake = self.server.owner
        assert isinstance(fake, FakeHook0)
        status, answer, extra, problem = fake._answer(self.command, self.path, self.lowercased_headers(), body,
                                                      received_at)
        self.send_response(status)
        content_type = "application/problem+json" if problem else "application/json"
        self.send_header("Content-Type", content_type)
        for name, value in extra.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = do_PUT = do_DELETE = _handle


class FakeHook0(RecordingServer):
    """Hook0's ingestion, event type and instance endpoints for one application and one token, on 127.0.0.1."""

    name = "the fake Hook0"
    handler = _Handler

    def __init__(self, application_id: str | None = None, token: str = "hook0-test-token-5d1f0c") -> None:
        super().__init__()
        self.application_id = application_id or str(uuid.uuid4())
        self.token = token
        self._events: dict[str, StoredEvent] = {}
        self._order: list[str] = []
        self._event_types: dict[str, dict[str, str]] = {}
        self._requests: list[HookRequest] = []
        self._injected: deque[_Injected] = deque()
        self._quota: int | None = None
        self._delay = 0.0

    # -- control -----------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{API}"

    def add_event_type(self, name: str) -> None:
        service, resource_type, verb = name.split(".")
        with self._changed:
            self._event_types[name] = _event_type(service, resource_type, verb)

    def remove_event_type(self, name: str) -> None:
        with self._changed:
            del self._event_types[name]

    def event_types(self) -> set[str]:
        with self._changed:
            return set(self._event_types)

    def fail_next(self, n: int = 1, problem: str = "ServiceUnavailable",
                  headers: dict[str, str] | None = None, detail: str = "") -> None:
        """Answer the next ``n`` event ingestions with ``problem`` (before any other check)."""
        with self._changed:
            self._injected.extend(_Injected(problem, dict(headers or {}), detail) for _ in range(n))

    def clear_failures(self) -> None:
        """Forget the answers fail_next() queued and not yet given."""
        with self._changed:
            self._injected.clear()

    def set_quota(self, events: int | None) -> None:
        """Answer TooManyEventsToday once this many events are stored."""
        with self._changed:
            self._quota = events

    def set_delay(self, seconds: float) -> None:
        with self._changed:
            self._delay = seconds

    @property
    def requests(self) -> list[HookRequest]:
        self.check()
        with self._changed:
            return list(self._requests)

    def events(self) -> list[StoredEvent]:
        """Ingested events, in ingestion order; each event id at most once, as Hook0 keeps them."""
        self.check()
        with self._changed:
            return [self._events[event_id] for event_id in self._order]

    def answered(self, problem: str) -> int:
        return sum(1 for r in self.requests if r.problem == problem)

    def wait_for_events(self, n: int, timeout: float = 30.0) -> list[StoredEvent]:
        self._wait(lambda: len(self._order) >= n, timeout, f"{n} Hook0 events",
                   lambda: f"{len(self._order)} in {len(self._requests)} requests")
        return self.events()

    # -- the API -----------------------------------------------------------------

    def _answer(self, method: str, target: str, headers: dict[str, str], body: bytes,
                received_at: float) -> tuple[int, bytes, dict[str, str], str | None]:
        with self._changed:
            delay = self._delay
        if delay:
            time.sleep(delay)
        parts = urlsplit(target)
        path = parts.path.rstrip("/")
        extra: dict[str, str] = {}
        try:
            if (method, path) == ("GET", f"{API}/instance"):  # public, as in Hook0: no token needed
                status, answer = 200, self._instance()
            elif (method, path) in ROUTES:
                self._authorize(headers)
                status, answer, extra = self._route(method, path, parse_qs(parts.query), body)
            else:  # Hook0 routes before it authenticates: an unknown path is 404 with or without a token
                raise Problem("NotFound", f"no route for {method} {path}")
            problem = None
        except Problem as p:
            status, answer, problem = p.status, p.body(), p.id
            extra = p.headers
        with self._changed:
            self._requests.append(HookRequest(method, target, headers, body, status, problem, received_at))
            self._changed.notify_all()
        return status, answer, extra, problem

    def _route(self, method: str, path: str, query: dict[str, list[str]],
               body: bytes) -> tuple[int, bytes, dict[str, str]]:
        """The endpoints that need the token."""
        if (method, path) == ("POST", f"{API}/event"):
            return self._ingest(body)
        if (method, path) == ("GET", f"{API}/event_types"):
            return (*self._list_event_types(query), {})
        assert (method, path) == ("POST", f"{API}/event_types")
        return (*self._create_event_type(body), {})

    def _instance(self) -> bytes:
        """Hook0's instance configuration (``GET /instance``), in the shape the SDK's model reads."""
        answer = {"application_secret_compatibility": True, "auto_db_migration": True,
                  "biscuit_public_key": "a1" * 32, "password_minimum_length": 12,
                  "quota_enforcement": True, "registration_disabled": True,
                  "support_email_address": "support@hook0.test"}
        InstanceConfig.from_json(answer)  # the official SDK reads it: the shape is Hook0's
        return json.dumps(answer).encode()

    def _authorize(self, headers: dict[str, str]) -> None:
        value = headers.get("authorization")
        if value is None:
            raise Problem("AuthNoAuthorizationHeader")
        scheme, _, token = value.partition(" ")
        if scheme != "Bearer" or not token:
            raise Problem("AuthInvalidAuthorizationHeader")
        if token != self.token:
            raise Problem("AuthInvalidBiscuit", "The provided token is not valid.")

    def _ingest(self, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        with self._changed:
            injected = self._injected.popleft() if self._injected else None
        if injected is not None:
            raise Problem(injected.problem, injected.detail, headers=injected.headers)
        try:
            raw = json.loads(body)
            # The official SDK's model reads the request: our JSON must be what Hook0 declares.
            model = EventPost.from_json(raw)
        except (ValueError, DecodeError) as e:
            raise Problem("JsonPayload", f"Json deserialize error: {e}") from None
        if str(model.application_id) != self.application_id:
            raise Problem("Forbidden")
        _validate_event(model)
        if model.event_id is None:
            raise Problem("Validation", "event_id: wal2http must always send one")
        with self._changed:
            if model.event_type not in self._event_types:
                raise Problem("EventTypeDoesNotExist",
                              f"The event type '{model.event_type}' does not exist or is deactivated.")
        _check_payload(model)
        event_id = str(model.event_id)
        with self._changed:
            if event_id in self._events:
                raise Problem("EventAlreadyIngested")
            if self._quota is not None and len(self._order) >= self._quota:
                raise Problem("TooManyEventsToday", f"This application cannot ingest more than {self._quota} "
                                                    "events per day.")
            received_at = datetime.now(UTC).isoformat()
            self._events[event_id] = StoredEvent(model, raw, received_at)
            self._order.append(event_id)
        answer = {"application_id": self.application_id, "event_id": event_id, "received_at": received_at}
        return 201, json.dumps(answer).encode(), {}

    def _list_event_types(self, query: dict[str, list[str]]) -> tuple[int, bytes]:
        if query.get("application_id") != [self.application_id]:
            raise Problem("Forbidden")
        with self._changed:
            listed = sorted(self._event_types.values(), key=lambda t: t["event_type_name"])
        return 200, json.dumps(listed).encode()

    def _create_event_type(self, body: bytes) -> tuple[int, bytes]:
        try:
            model = EventTypePost.from_json(json.loads(body))
        except (ValueError, DecodeError) as e:
            raise Problem("JsonPayload", f"Json deserialize error: {e}") from None
        if str(model.application_id) != self.application_id:
            raise Problem("Forbidden")
        for name in ("service", "resource_type", "verb"):
            value = getattr(model, name)
            if not 1 <= len(value) <= 50 or not value.isprintable():
                raise Problem("Validation", f"{name}: Validation error: length [{{\"min\": 1, \"max\": 50}}]")
        created = _event_type(model.service, model.resource_type, model.verb)
        with self._changed:
            self._event_types[created["event_type_name"]] = created
        return 201, json.dumps(created).encode()


def hook0_args(fake: FakeHook0, *more: str) -> tuple[str, ...]:
    return ("--create-slot", "--sink", "hook0", "--hook0-api-url", fake.url,
            "--hook0-application-id", fake.application_id, *more)


def token_env(fake: FakeHook0) -> dict[str, str]:
    return {"HOOK0_API_TOKEN": fake.token}


def _event_type(service: str, resource_type: str, verb: str) -> dict[str, str]:
    return {"service_name": service, "resource_type_name": resource_type, "verb_name": verb,
            "event_type_name": f"{service}.{resource_type}.{verb}"}


def _validate_event(model: EventPost) -> None:
    """Hook0's validator rules for an EventPost (422 Validation)."""
    errors: list[str] = []
    if not 1 <= len(model.event_type) <= 200 or not model.event_type.isprintable():
        errors.append("event_type: Validation error: length or control characters")
    if len(model.payload) > PAYLOAD_MAX_CHARS:
        errors.append(f"payload: Validation error: length [{{\"max\": {PAYLOAD_MAX_CHARS}}}]")
    if not 1 <= len(model.payload_content_type) <= 100:
        errors.append("payload_content_type: Validation error: length")
    labels = model.labels
    if not 1 <= len(labels) <= 10:
        errors.append("labels: Labels object must have between 1 and 10 properties")
    bad = [k for k, v in labels.items() if not (1 <= len(k.encode()) <= 50 and 1 <= len(v.encode()) <= 50)]
    if bad:
        errors.append(f"labels: Labels properties and values must have a length between 1 and 50 "
                      f"(the following properties are out of range: {', '.join(bad)})")
    metadata = model.metadata or {}
    if len(metadata) > 50:
        errors.append("metadata: Metadata object cannot have more than 50 properties")
    if any(not (1 <= len(k.encode()) <= 50 and 1 <= len(v.encode()) <= 50) for k, v in metadata.items()):
        errors.append("metadata: Metadata properties and values must have a length between 1 and 50")
    if model.occurred_at.tzinfo is None:
        errors.append("occurred_at: not an RFC 3339 date-time with an offset")
    if errors:
        raise Problem("Validation", "\n".join(errors), {"errors": errors})


def _check_payload(model: EventPost) -> None:
    if model.payload_content_type not in CONTENT_TYPES:
        raise Problem("EventInvalidPayloadContentType",
                      f"Valid content types are: {', '.join(CONTENT_TYPES)}")
    if model.payload_content_type == "application/json":
        try:
            json.loads(model.payload)
        except ValueError as e:
            raise Problem("EventInvalidJsonPayload", f"Event payload is not valid JSON: {e}.") from None
    elif model.payload_content_type == "application/octet-stream+base64":
        try:
            base64.b64decode(model.payload, validate=True)
        except binascii.Error as e:
            raise Problem("EventInvalidBase64Payload", f"Event payload is not valid base64: {e}") from None


def main() -> None:
    """Run the fake on a free port and print its URL, token and application id (for manual tries)."""
    with FakeHook0() as fake:
        print(fake.url, fake.token, fake.application_id, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            wait_for_signal()


if __name__ == "__main__":
    main()
