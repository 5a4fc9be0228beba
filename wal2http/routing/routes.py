"""``--routes``: every batch goes to every route whose filter takes its events, each in its own requests."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from wal2http.config.routing import Route, RoutingConfig
from wal2http.config.sections import OnReject
from wal2http.config.settings import Config
from wal2http.decode.events import Event
from wal2http.delivery.batch import Batch
from wal2http.delivery.breaker import Breaker
from wal2http.delivery.deadletter import DeadLetterFile
from wal2http.delivery.deliverer import Deliverer, GiveUpLimits
from wal2http.delivery.resends import Resends
from wal2http.delivery.sink import Sink
from wal2http.errors import RejectedError
from wal2http.observe.metrics import Metrics
from wal2http.routing.destination import Destination, Unroutable, Where
from wal2http.routing.selection import Selection

logger = logging.getLogger(__name__)


class RouteDelivery:
    """One route: the events its filter takes, with its columns, cut into requests by destination."""

    def __init__(self, route: Route, deliverer: Deliverer) -> None:
        self.route = route
        self.deliverer = deliverer
        self.select = Selection(RoutingConfig(filter=route.filter, columns=route.columns)).apply
        self.destination = Destination(route.http.url, route.http.headers)

    def parts(self, events: Sequence[Event]) -> list[tuple[Event, Where | None]]:
        """The route's events (``None`` as where: it cannot be filled, and is refused)."""
        taken: list[tuple[Event, Where | None]] = []
        for event in events:
            selected = self.select(event)
            if selected is None:
                continue
            try:
                taken.append((selected, self.destination.of(selected.record)))
            except Unroutable:
                taken.append((selected, None))
        return taken

    def deliver(self, events: Sequence[Event]) -> None:
        """Deliver in commit order; consecutive events with one destination travel in one request."""
        run: list[Event] = []
        where: Where | None = None
        for event, to in self.parts(events):
            if run and to != where:
                self._send(run)
                run = []
            if to is None:
                self._unroutable(event)
                continue
            run.append(event)
            where = to
        if run:
            self._send(run)

    def _send(self, events: list[Event]) -> None:
        self.deliverer.deliver(Batch(events, sum(len(e.body) for e in events)))

    def _unroutable(self, event: Event) -> None:
        try:
            self.destination.of(event.record)
        except Unroutable as e:
            self.reject(event, str(e))

    def reject(self, event: Event, reason: str) -> None:
        try:
            self.deliverer.reject(event, f"route {self.route.name!r}: {reason}", None, "")
        except RejectedError as e:
            raise RejectedError(f"route {self.route.name!r}: {e}", status=e.status, event_id=e.event_id,
                                body=e.body) from None


class RouteSet:
    """The deliverer of a run with ``--routes``: a batch is delivered once every route accepted its part.

    Routes are served one after the other, so a route whose receiver is down holds the others (and the
    confirmed position): the position must not pass a change one route has not taken.
    """

    def __init__(self, routes: Sequence[tuple[Route, Deliverer]]) -> None:
        self.routes = [RouteDelivery(route, deliverer) for route, deliverer in routes]
        self.handled = 0  # events every route is done with (an event no route takes is done at once)

    def deliver(self, batch: Batch) -> None:
        for route in self.routes:
            route.deliver(batch.events)
        self.handled += len(batch.events)

    def reject(self, event: Event, reason: str, status: int | None, response: str) -> None:
        """An event refused before any request (over --max-event-bytes): each route that takes it decides."""
        for route in self.routes:
            for selected, _ in route.parts([event]):
                route.reject(selected, reason)
        self.handled += 1

    @property
    def on_reject(self) -> OnReject:
        """HALT when a route halts on a refused event (a refusal may then stop the run), else the first's."""
        policies = [r.route.on_reject for r in self.routes]
        return OnReject.HALT if OnReject.HALT in policies else policies[0]

    @property
    def delivered(self) -> int:
        """Events every route is done with, less those a route dead-lettered or skipped (the run's summary
        adds the three up to the events handled)."""
        return max(0, self.handled - self.dead_lettered - self.skipped)

    @property
    def dead_lettered(self) -> int:
        return sum(r.deliverer.dead_lettered for r in self.routes)

    @property
    def skipped(self) -> int:
        return sum(r.deliverer.skipped for r in self.routes)


@dataclass(frozen=True)
class RouteSink:
    """A route with the sink and the dead-letter file the run opened for it."""

    route: Route
    sink: Sink
    dead_letters: DeadLetterFile | None = None


def deliverers(config: Config, sink: Sink | None, routes: Sequence[RouteSink] | None,
               wait: Callable[[float], None], *, dead_letters: DeadLetterFile | None, metrics: Metrics,
               resends: Resends | None) -> Deliverer | RouteSet:
    """The run's deliverer: of the one sink, or, with --routes (``sink`` is None), of each route."""
    d = config.delivery

    def deliverer(to: Sink, on_reject: OnReject, letters: DeadLetterFile | None) -> Deliverer:
        return Deliverer(to, Breaker.of(d), wait, on_reject=on_reject, dead_letters=letters, metrics=metrics,
                         max_events=config.batch.max_events, resends=resends, give_up=GiveUpLimits.of(d),
                         max_dead_letters=d.max_dead_letters)

    if routes is not None:
        return RouteSet([(r.route, deliverer(r.sink, r.route.on_reject, r.dead_letters)) for r in routes])
    assert sink is not None
    return deliverer(sink, d.on_reject, dead_letters)
