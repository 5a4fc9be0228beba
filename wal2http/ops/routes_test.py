"""``wal2http routes test``: which routes each recorded event matches, and the request each would make."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from wal2http.config.cloudevents import default_source
from wal2http.config.routing import Route, RoutingConfig
from wal2http.config.secrets import Secret
from wal2http.decode.events import Event
from wal2http.delivery.batch import Batch
from wal2http.routing.destination import Destination, Unroutable
from wal2http.routing.selection import Selection
from wal2http.sinks.cloudevents import Formatter

SECRET_SHOWN = "(secret, not shown)"


@dataclass(frozen=True)
class Planned:
    """The request one route would make for one event, or why it could not."""

    route: str
    url: str | None
    headers: tuple[tuple[str, str], ...]
    body: str
    problem: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"route": self.route, "url": self.url, "headers": dict(self.headers), "body": self.body,
                "problem": self.problem}


@dataclass(frozen=True)
class EventPlan:
    event: Event
    routes: tuple[Planned, ...]

    def as_json(self) -> dict[str, Any]:
        r = self.event.record
        return {"event": self.event.id, "schema": r.get("schema"), "table": r.get("table"), "op": r.get("op"),
                "routes": [p.as_json() for p in self.routes]}

    def lines(self) -> list[str]:
        r = self.event.record
        head = f"{self.event.id} {r.get('schema')}.{r.get('table')} {r.get('op')}: "
        if not self.routes:
            return [head + "no route"]
        out = [head + ", ".join(p.route for p in self.routes)]
        for p in self.routes:
            if p.problem is not None:
                out.append(f"  {p.route}: refused (its on_reject applies): {p.problem}")
                continue
            out.append(f"  {p.route}: POST {p.url}")
            out.extend(f"    {name}: {value}" for name, value in p.headers)
            out.append(f"    {p.body}")
        return out


def plan(routes: Iterable[Route], events: Iterable[Event]) -> list[EventPlan]:
    """Send nothing: apply each route's filter, columns and destination to each event."""
    prepared = [(route, Selection(RoutingConfig(filter=route.filter, columns=route.columns)),
                 Destination(route.http.url, route.http.headers)) for route in routes]
    plans = []
    for event in events:
        planned = []
        for route, selection, destination in prepared:
            selected = selection.apply(event)
            if selected is not None:
                planned.append(_planned(route, selected, destination))
        plans.append(EventPlan(event, tuple(planned)))
    return plans


def _planned(route: Route, event: Event, destination: Destination) -> Planned:
    # The body and headers of the route's format, one event per request; a CloudEvents source defaults to
    # the run's, which depends on the database and slot this command does not know.
    settings = route.http.cloudevents
    if settings.source is None:
        settings = dataclasses.replace(settings, source=default_source("DATABASE", "SLOT"))
    request = Formatter(route.http.format, settings, as_array=False).requests(Batch.of(event))[0]
    body = request.body.decode()
    try:
        url, filled = destination.of(event.record)
    except Unroutable as e:
        return Planned(route.name, None, (), body, str(e))
    templated = dict(filled)
    headers = [("webhook-id", event.id), *({"Content-Type": "application/json"} | request.headers).items()]
    for header in route.http.headers:
        value = SECRET_SHOWN if isinstance(header.value, Secret) else templated.get(header.name, header.value)
        headers.append((header.name, value))
    if route.http.bearer_token is not None:
        headers.append(("Authorization", f"Bearer {SECRET_SHOWN}"))
    if route.http.signing_secrets:
        headers.append(("webhook-signature", f"(signed with {len(route.http.signing_secrets)} secret(s) when sent)"))
    return Planned(route.name, url, tuple(headers), body)
