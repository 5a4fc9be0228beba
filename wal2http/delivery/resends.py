"""Requests sent to the receiver again with the same ``webhook-id``: counted by reason, logged once per streak."""

from __future__ import annotations

import logging

from wal2http.observe.metrics import Metrics
from wal2http.runtime import ResendReason

logger = logging.getLogger(__name__)

# What the operator can do about each reason (README "Resent requests" says the same).
EXPLANATION = {
    ResendReason.STATUS: "the receiver asked for it (408, 425, 429 or 5xx)",
    ResendReason.TIMEOUT: "the receiver may have handled it without answering in time; raise --http-timeout or "
                          "make the receiver answer sooner",
    ResendReason.CONNECTION: "the connection closed before a whole answer (a receiver or proxy closing idle "
                             "keep-alive connections early, or restarting)",
    ResendReason.MALFORMED_ANSWER: "the receiver's answer broke HTTP framing: a 204 or 304 with a body, or a "
                                   "Content-Length that does not match the body, spoils the next answer on the "
                                   "connection; fix the receiver",
    ResendReason.INTERIM: "the receiver sent only an interim 1xx answer",
}


class Resends:
    """Counts resent requests and their events by reason, and logs each reason once per streak.

    A streak ends with a request the receiver accepted on its first try: a receiver that spoils
    every other answer is reported once, not once per request, and again after it behaved a while.
    """

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._streaks: set[ResendReason] = set()
        self._in_request = False  # a resend happened during the request under way

    def request_started(self) -> None:
        self._in_request = False

    def resent(self, reason: ResendReason, events: int, request_id: str, cause: str) -> None:
        """The request ``request_id`` carrying ``events`` events goes to the receiver again because of ``cause``."""
        self.metrics.resent(reason, events)
        self._in_request = True
        if reason in self._streaks:
            return
        self._streaks.add(reason)
        logger.warning("%s sent again with the same webhook-id (%s: %s): %s; logged once while it keeps happening, "
                       "counted in wal2http_resent_requests_total", request_id, reason.value, cause,
                       EXPLANATION[reason], extra={"resend_reason": reason.value})

    def accepted(self, attempt: int) -> None:
        """A request was accepted after ``attempt`` tries; accepted at once, it ends every streak."""
        if attempt == 1 and not self._in_request:
            self._streaks.clear()
