"""The Hook0 API as a peer: its problem+json answers, and the read-only calls ``check-config`` makes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from wal2http.config.hook0 import Hook0Config
from wal2http.sinks.http import BearerAuth, Reply, new_session, request

PEER = "Hook0 API"
DETAIL_EXCERPT = 300
LIST_KEPT_BYTES = 4 << 20  # of a GET answer read whole (event types); longer ones are not read on


@dataclass(frozen=True)
class ApiProblem:
    """The parts of an ``application/problem+json`` answer wal2http reports."""

    id: str
    detail: str

    @classmethod
    def of(cls, response: Reply) -> ApiProblem:
        try:
            value: Any = response.json()
        except ValueError:
            value = None
        if not isinstance(value, dict):
            return cls("", response.text[:DETAIL_EXCERPT].strip())
        detail = str(value.get("detail") or value.get("title") or "").strip()
        return cls(str(value.get("id") or ""), detail[:DETAIL_EXCERPT])

    def describe(self, response: Reply) -> str:
        text = f"{response.status_code} {self.id or response.reason}"
        return f"{text}: {self.detail}" if self.detail else text


@dataclass(frozen=True)
class Answer:
    """What one GET got back, naming no secret."""

    url: str  # without the query
    status: int
    reason: str
    problem: ApiProblem
    value: Any  # the JSON answer; None when the body is not JSON
    location: str | None  # of a redirect

    def describe(self) -> str:
        text = f"{self.status} {self.problem.id or self.reason}"
        return f"{text}: {self.problem.detail}" if self.problem.id and self.problem.detail else text


class Hook0Api:
    """One session, no retries: a check reports what the API answers now."""

    def __init__(self, config: Hook0Config) -> None:
        self._config = config
        self._http = dataclasses.replace(config.http, retries=0)
        self._session = new_session(self._http)

    def instance(self) -> Answer:
        """``GET /instance``: Hook0's public instance configuration; no token is sent."""
        return self._get("instance", None)

    def event_types(self) -> Answer:
        """``GET /event_types?application_id=``: an authenticated read of the application."""
        self._session.auth = BearerAuth(self._config.token)
        return self._get("event_types", {"application_id": self._config.application_id})

    def _get(self, path: str, params: dict[str, str] | None) -> Answer:
        """Raises TransientDeliveryError when the API cannot be reached."""
        url = f"{self._config.api_url}/{path}"
        response = request(self._session, self._http, "GET", url, params=params, peer=PEER, keep=LIST_KEPT_BYTES)
        problem = ApiProblem.of(response)
        token = self._config.token.reveal()
        if token and token in problem.detail:  # a proxy echoing the request: the token is never shown
            problem = ApiProblem(problem.id, problem.detail.replace(token, "***"))
        return Answer(url, response.status_code, response.reason or "", problem, _json(response),
                      response.headers.get("Location"))

    def close(self) -> None:
        self._session.close()


def _json(response: Reply) -> Any:
    if "json" not in response.headers.get("Content-Type", ""):
        return None
    try:
        return response.json()
    except ValueError:
        return None
