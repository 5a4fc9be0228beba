"""The Hook0 sink: each event of a batch is one ``POST {api}/event``, answered per Hook0's problems."""

from __future__ import annotations

import logging
import time
from typing import NoReturn

import orjson

from wal2http.config.hook0 import Hook0Config, Hook0Mode
from wal2http.decode.events import Event
from wal2http.delivery.batch import Batch
from wal2http.delivery.sink import SourceInfo
from wal2http.errors import (
    ConfigError,
    DeliveryConfigError,
    DeliveryError,
    RejectedError,
    TransientDeliveryError,
    UnmappableEvent,
)
from wal2http.hook0.api import DETAIL_EXCERPT, LIST_KEPT_BYTES, PEER, ApiProblem
from wal2http.hook0.mapping import Hook0Event, Hook0Mapper, sanitize_name
from wal2http.sinks.http import (
    BearerAuth,
    Reply,
    new_session,
    request,
    retry_after_seconds,
    warn_if_plain_http,
)

logger = logging.getLogger(__name__)

# Retried quickly inside an attempt by urllib3. 429 is not: only its problem id tells a short
# RateLimited pause from a spent daily quota.
QUICK_RETRY_STATUSES = frozenset({408, 425, *range(500, 600)})
# TooManyEventsToday: the daily quota is spent and no retry soon will succeed. The circuit breaker
# backs off anyway, but its pause may be shorter: the sink itself makes no request for this long.
QUOTA_COOLDOWN_S = 300.0


class Hook0Sink:
    """Sends events one by one: when event k of a batch is refused, events before it were accepted."""

    def __init__(self, config: Hook0Config, source: SourceInfo) -> None:
        self._config = config
        if config.mode == Hook0Mode.CHANGES and not config.service and not source.database:
            # replay does not connect: guessing the database name would change every event id.
            raise ConfigError("--sink hook0 --hook0-mode changes needs --hook0-service here: set it to the "
                              "database name the events came from (or the service used by 'run'), so the "
                              "event ids and types are the ones Hook0 already knows")
        service = config.service or sanitize_name(source.database or "postgres")
        self.mapper = Hook0Mapper(config, service)
        self._session = new_session(config.http)
        self._session.auth = BearerAuth(config.token)  # as auth, ~/.netrc cannot replace it
        warn_if_plain_http(config.api_url, "--hook0-api-url", credentials=True)
        self._event_url = f"{config.api_url}/event"
        self._event_types_url = f"{config.api_url}/event_types"
        self._application_id = self.mapper.application_id
        # Counters: ignored changes (outbox mode), 409 answers, events Hook0 ingested.
        self.ignored = 0
        self.already_ingested = 0
        self.ingested = 0
        # Ids of events Hook0 accepted from a batch not yet accepted whole: a retry of the
        # batch (or the reject policy sending its events singly) does not post them again.
        self._accepted: set[str] = set()
        self._quota_until = 0.0
        self._known_types: set[str] | None = None  # listed from Hook0 once, when ensuring
        self._wanted_types: list[str] = []
        if config.mode == Hook0Mode.OUTBOX and source.database and config.outbox_schema_table not in source.tables:
            logger.warning("outbox table %s is not in the publication: only pg_logical_emit_message() "
                           "messages prefixed %r (with --messages) will become Hook0 events",
                           config.outbox_table, config.message_prefix)
        if config.ensure_event_types and config.mode == Hook0Mode.CHANGES:
            self._wanted_types = [t for _, table in source.tables for t in self.mapper.event_types_for(table)]

    # -- start -----------------------------------------------------------------

    def prepare(self) -> None:
        """With --hook0-ensure-event-types, create the event types known at start."""
        if not self._config.ensure_event_types:
            return
        try:
            self._ensure_known_types()
        except TransientDeliveryError as e:
            logger.warning("cannot create Hook0 event types at start: %s; trying again before the "
                           "first delivery", e)

    def _ensure_known_types(self) -> None:
        if self._known_types is None:
            self._known_types = self._list_event_types()
        created = [t for t in self._wanted_types if t not in self._known_types]
        for event_type in created:
            self._create_event_type(event_type, None)
        if created:
            logger.info("created %d Hook0 event types: %s", len(created), ", ".join(created))
        self._wanted_types = []

    # -- delivery --------------------------------------------------------------

    def send(self, batch: Batch) -> None:
        remaining = self._quota_until - time.monotonic()
        if remaining > 0:
            raise TransientDeliveryError(
                f"Hook0 daily event quota reached (TooManyEventsToday); next request in {remaining:.0f} s",
                status=429, retry_after=remaining,
            )
        if self._config.ensure_event_types and (self._known_types is None or self._wanted_types):
            self._ensure_known_types()
        for event in batch.events:
            if event.id in self._accepted:
                continue
            hook0_event = self._map(event)
            if hook0_event is None:
                self.ignored += 1
                logger.debug("ignoring %s (%s %s.%s): %s mode delivers %s", event.id, event.op,
                             event.record["schema"], event.record["table"], self._config.mode,
                             self._delivers())
            else:
                self._deliver(event, hook0_event)
            self._accepted.add(event.id)
        self._accepted.difference_update(event.id for event in batch.events)

    def _map(self, event: Event) -> Hook0Event | None:
        try:
            return self.mapper.map(event)
        except UnmappableEvent as e:
            raise RejectedError(f"cannot make a Hook0 event of {event.id} ({_what(event)}): {e}",
                                event_id=event.id) from None

    def _delivers(self) -> str:
        if self._config.mode == Hook0Mode.CHANGES:
            return "row changes"
        config = self._config
        return f"inserts into {config.outbox_table} and messages prefixed {config.message_prefix!r}"

    def _deliver(self, event: Event, hook0_event: Hook0Event) -> None:
        known = self._known_types
        if self._config.ensure_event_types and known is not None and hook0_event.event_type not in known:
            self._create_event_type(hook0_event.event_type, event)
        response = request(self._session, self._config.http, "POST", self._event_url, hook0_event.body,
                           peer=PEER, retry_statuses=QUICK_RETRY_STATUSES)
        status = response.status_code
        if 200 <= status < 300:
            self.ingested += 1
            return
        problem = ApiProblem.of(response)
        if status == 409 and problem.id == "EventAlreadyIngested":
            self.already_ingested += 1
            logger.debug("Hook0 already holds %s (event %s): counted as delivered",
                         hook0_event.event_id, event.id)
            return
        if status == 400 and problem.id == "EventTypeDoesNotExist" and known is not None:
            # Deleted in Hook0 while we run: create it again, then one more try.
            known.discard(hook0_event.event_type)
            self._create_event_type(hook0_event.event_type, event)
            return self._deliver_once_more(event, hook0_event)
        self._refused(response, problem, event, hook0_event)

    def _deliver_once_more(self, event: Event, hook0_event: Hook0Event) -> None:
        response = request(self._session, self._config.http, "POST", self._event_url, hook0_event.body,
                           peer=PEER, retry_statuses=QUICK_RETRY_STATUSES)
        if 200 <= response.status_code < 300:
            self.ingested += 1
            return
        problem = ApiProblem.of(response)
        if response.status_code == 409 and problem.id == "EventAlreadyIngested":
            self.already_ingested += 1
            return
        self._refused(response, problem, event, hook0_event)

    def _refused(self, response: Reply, problem: ApiProblem, event: Event | None,
                 hook0_event: Hook0Event | None) -> NoReturn:
        """Raise what an answer other than success means: retry, stop, or a rejection."""
        status = response.status_code
        answer = problem.describe(response)
        if status == 429 and problem.id == "TooManyEventsToday":
            self._quota_until = time.monotonic() + QUOTA_COOLDOWN_S
            logger.warning("Hook0 daily event quota of application %s is spent (%s); no request for %.0f s, "
                           "then one probe. Nothing is lost: changes wait in the slot. Raise the quota "
                           "or wait for the day to turn", self._application_id, answer, QUOTA_COOLDOWN_S)
            raise TransientDeliveryError(f"Hook0 answered {answer}", status=status,
                                         retry_after=QUOTA_COOLDOWN_S)
        if status < 200:
            raise TransientDeliveryError(f"Hook0 answered {answer}, an interim answer, and no final one",
                                         status=status)
        if status in (408, 425, 429) or status >= 500:
            raise TransientDeliveryError(
                f"Hook0 answered {answer}", status=status,
                retry_after=retry_after_seconds(response.headers.get("Retry-After")),
            )
        event_id = event.id if event is not None else None
        if status in (401, 403) or problem.id.startswith("Auth"):
            raise DeliveryConfigError(
                f"Hook0 refused the API token ({answer}): check HOOK0_API_TOKEN or --hook0-api-token-file "
                f"and that the token may use application {self._application_id}",
                status=status, event_id=event_id, body=problem.detail,
            )
        if 300 <= status < 400 or status in (404, 405, 410):
            location = response.headers.get("Location")
            raise DeliveryConfigError(
                f"Hook0 API answered {answer}" + (f" (to {location})" if location else "")
                + f" for {response.url}: check --hook0-api-url (e.g. https://app.hook0.com/api/v1)",
                status=status, event_id=event_id, body=problem.detail,
            )
        if event is None or hook0_event is None:
            raise DeliveryError(f"Hook0 refused the request: {answer}", status=status, body=problem.detail)
        hint = ""
        if problem.id == "EventTypeDoesNotExist":
            hint = " (create it in Hook0, or pass --hook0-ensure-event-types)"
        raise RejectedError(
            f"Hook0 rejected {event.id} ({_what(event)}; Hook0 event {hook0_event.event_id}, "
            f"type {hook0_event.event_type}) with {answer}{hint}",
            status=status, event_id=event.id, body=problem.detail,
        )

    # -- event types -----------------------------------------------------------

    def _list_event_types(self) -> set[str]:
        response = request(self._session, self._config.http, "GET", self._event_types_url,
                           params={"application_id": self._application_id}, peer=PEER,
                           retry_statuses=QUICK_RETRY_STATUSES, keep=LIST_KEPT_BYTES)
        if response.status_code != 200:
            self._refused(response, ApiProblem.of(response), None, None)
        try:
            listed = response.json()
            return {str(item["event_type_name"]) for item in listed}
        except (ValueError, TypeError, KeyError):
            raise DeliveryError(f"Hook0 answered an event type list wal2http cannot read: "
                                f"{response.text[:DETAIL_EXCERPT]}") from None

    def _create_event_type(self, event_type: str, event: Event | None) -> None:
        service, resource_type, verb = event_type.split(".")
        body = {"application_id": self._application_id, "service": service,
                "resource_type": resource_type, "verb": verb}
        response = request(self._session, self._config.http, "POST", self._event_types_url,
                           orjson.dumps(body), peer=PEER, retry_statuses=QUICK_RETRY_STATUSES)
        status = response.status_code
        if not (200 <= status < 300 or status == 409):  # 409: created meanwhile
            problem = ApiProblem.of(response)
            if event is None:
                self._refused(response, problem, None, None)
            what = f"cannot create Hook0 event type {event_type} for {event.id}"
            if status in (422, 400):
                raise RejectedError(f"{what}: {problem.describe(response)}", status=status,
                                    event_id=event.id, body=problem.detail)
            self._refused(response, problem, event, None)
        if 200 <= status < 300 and event is not None:
            logger.info("created Hook0 event type %s", event_type)
        if self._known_types is not None:
            self._known_types.add(event_type)

    def close(self) -> None:
        if self.ignored or self.already_ingested:
            logger.info("Hook0: %d events ingested, %d already held (409), %d changes ignored",
                        self.ingested, self.already_ingested, self.ignored)
        self._session.close()


def _what(event: Event) -> str:
    record = event.record
    if event.op == "message":
        return f"message prefixed {record['prefix']!r} at {record['lsn']}"
    return f"{event.op} on {record['schema']}.{record['table']} at {record['lsn']}"
