"""A real local webhook receiver that records every request and fails on demand; `python -m` prints events."""

from __future__ import annotations

import argparse
import contextlib
import json
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.support import HOST, wait_for_signal
from tests.support.httpserver import Handler, RecordingServer

__all__ = ["Event", "Receiver", "RecordedRequest"]

HOLD_MAX_S = 120.0  # a held request is answered by then even if the test never releases it

Event = dict[str, Any]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the receiver got it, with the status it answered."""

    method: str
    path: str
    headers: dict[str, str]  # lowercased names
    body: bytes
    received_at: float  # time.time() when the body was read
    status: int

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes = b'{"ok": true}'
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def _parse_events(body: bytes) -> list[Event] | None:
    """The events of a body (one JSON object or an array of them); None if it is neither."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    events = value if isinstance(value, list) else [value]
    return events if all(isinstance(event, dict) for event in events) else None


class _Handler(Handler):
    def do_POST(self) -> None:
        received_at = time.time()
        body = self.read_body()
        receiver = self.server.owner
        assert isinstance(receiver, Receiver)
        answer = receiver._answer(self.command, self.path, self.lowercased_headers(), body, received_at)
        has_body = answer.status >= 200 and answer.status not in (204, 304)
        content_type = "application/json" if answer.body[:1] in (b"{", b"[") else "text/plain"
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        if has_body:
            if not any(name.lower() == "content-type" for name in answer.headers):
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if has_body and self.command != "HEAD":
            self.wfile.write(answer.body)

    do_PUT = do_PATCH = do_DELETE = do_GET = do_HEAD = do_POST


class Receiver(RecordingServer):
    """An HTTP server on 127.0.0.1 recording requests; answers 200 unless told to fail, delay or go down.

    With ``ssl_context`` (a server-side ``ssl.SSLContext``) it speaks HTTPS; a context that requires
    client certificates makes it a mutual-TLS receiver. Failed handshakes are in ``tls_failures``.
    """

    name = "the test receiver"
    handler = _Handler

    def __init__(
        self,
        port: int = 0,
        path: str = "/hook",
        on_event: Callable[[Event], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(port, ssl_context)
        self.path = path
        self._on_event = on_event
        self._requests: list[RecordedRequest] = []
        self._events: list[Event] = []
        self._failures: deque[_Answer] = deque()
        self._status: _Answer | None = None
        self._delay = 0.0
        self._released = threading.Event()
        self._released.set()
        self._reject: Callable[[Event], bool] | None = None
        self._reject_status = 400

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{HOST}:{self.port}{self.path}"

    @property
    def requests(self) -> list[RecordedRequest]:
        self.check()
        with self._changed:
            return list(self._requests)

    def events(self) -> list[Event]:
        """Every event of the requests answered 2xx, in arrival order."""
        self.check()
        with self._changed:
            return list(self._events)

    def fail_next(
        self,
        n: int = 1,
        status: int = 503,
        body: bytes = b"service unavailable",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``n`` requests with ``status`` (before any set_status)."""
        with self._changed:
            self._failures.extend(_Answer(status, body, dict(headers or {})) for _ in range(n))

    def set_status(
        self, status: int | None, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> None:
        """Answer every request with ``status`` until set_status(None) or reset()."""
        with self._changed:
            self._status = None if status is None else _Answer(status, body, dict(headers or {}))

    def reject_when(self, predicate: Callable[[Event], bool] | None, status: int = 400) -> None:
        """Answer ``status`` to any request carrying an event for which ``predicate`` is true."""
        with self._changed:
            self._reject = predicate
            self._reject_status = status

    def set_delay(self, seconds: float) -> None:
        """Sleep this long before answering each request."""
        with self._changed:
            self._delay = seconds

    def hold(self) -> None:
        """Keep every request waiting for its answer until release() (at most HOLD_MAX_S)."""
        self._released.clear()

    def release(self) -> None:
        """Answer the requests held since hold(), and the next ones at once."""
        self._released.set()

    def reset(self) -> None:
        """Back to answering 200 at once; recorded requests are kept (see clear())."""
        self.release()
        with self._changed:
            self._failures.clear()
            self._status = None
            self._delay = 0.0
            self._reject = None

    def clear(self) -> None:
        """Forget the recorded requests and events."""
        with self._changed:
            self._requests.clear()
            self._events.clear()

    def wait_for_events(self, n: int, timeout: float = 30.0) -> list[Event]:
        """Block until ``n`` or more events were accepted and return them; TimeoutError says how many came."""
        self._wait(lambda: len(self._events) >= n, timeout, f"{n} events", self._got)
        return self.events()

    def wait_for_requests(self, n: int, timeout: float = 30.0) -> list[RecordedRequest]:
        """Block until at least ``n`` requests (of any status) arrived and return them all."""
        self._wait(lambda: len(self._requests) >= n, timeout, f"{n} requests", self._got)
        return self.requests

    def set_down(self, down: bool) -> None:
        self.down() if down else self.up()

    def _answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes, received_at: float
    ) -> _Answer:
        """Decide, record and return the answer to one request (called from the handler threads)."""
        self._released.wait(HOLD_MAX_S)
        with self._changed:
            delay = self._delay
        if delay:
            time.sleep(delay)
        events: list[Event] = []
        with self._changed:
            answer = self._failures.popleft() if self._failures else self._status
            if answer is None:
                parsed = _parse_events(body) if body else []
                answer = (
                    _Answer(200)
                    if parsed is not None
                    else _Answer(400, b"body is not a JSON object or array")
                )
                events = parsed or []
                if self._reject is not None and any(self._reject(event) for event in events):
                    answer, events = _Answer(self._reject_status, b'{"error": "event refused"}'), []
            elif answer.ok and body:
                events = _parse_events(body) or []
            self._requests.append(RecordedRequest(method, path, headers, body, received_at, answer.status))
            if answer.ok:
                self._events.extend(events)
            self._changed.notify_all()
        if self._on_event is not None and answer.ok:
            for event in events:
                self._on_event(event)
        return answer

    def wait_for_tls_failures(self, n: int, timeout: float = 30.0) -> list[str]:
        """Block until at least ``n`` TLS handshakes failed and return why."""
        self._wait(lambda: len(self._tls_failures) >= n, timeout, f"{n} failed TLS handshakes", self._got)
        return self.tls_failures

    def _got(self) -> str:
        failed = sum(not r.ok for r in self._requests)
        return f"{len(self._events)} events in {len(self._requests)} requests ({failed} failed)"


def _print_event(event: Event) -> None:
    print(json.dumps(event, ensure_ascii=False), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Receive webhooks on 127.0.0.1 and print each event as JSON."
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free port)")
    args = parser.parse_args(argv)
    with Receiver(port=args.port, on_event=_print_event) as receiver, contextlib.suppress(KeyboardInterrupt):
        # Inside the suppress: Ctrl-C may come while the URL is still being written.
        print(receiver.url, flush=True)
        wait_for_signal()


if __name__ == "__main__":
    main()
