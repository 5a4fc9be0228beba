"""A real local webhook receiver that records every request and fails on demand; `python -m` prints events."""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import socketserver
import ssl
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from tests.support import wait_for_signal

__all__ = ["Event", "Receiver", "RecordedRequest"]

HOST = "127.0.0.1"
# A client that hung up (wal2http killed, or down() cutting it) is not a failure of the test.
HANGUPS = (ConnectionError, TimeoutError, ssl.SSLError)
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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real receiver behind a connection pool
    disable_nagle_algorithm = True  # else delayed ACKs add 40 ms to every request
    wbufsize = 1 << 16  # headers and body leave in one write, flushed by handle_one_request
    server: _Server

    def do_POST(self) -> None:
        received_at = time.time()
        body = self._read_body()
        headers = {name.lower(): value for name, value in self.headers.items()}
        answer = self.server.receiver._answer(self.command, self.path, headers, body, received_at)
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

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, port: int, receiver: Receiver, ssl_context: ssl.SSLContext | None = None) -> None:
        self.receiver = receiver
        self.ssl_context = ssl_context
        self.connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__((HOST, port), _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.ssl_context is None:
            return sock, address
        # The handshake happens in the request's thread (finish_request), not in the accept loop.
        return self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.settimeout(10)
                request.do_handshake()
                request.settimeout(None)
            except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
                self.receiver._record_handshake_failure(e)
                return
        super().finish_request(request, client_address)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name, which can stall where DNS is missing.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = HOST, self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Cut open keep-alive connections, as a receiver going down would."""
        with self._connections_lock:
            connections = list(self.connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Keep any error but a hang-up: a bug in the receiver or in a test's predicate fails the test."""
        error = sys.exc_info()[1]
        if error is not None and not isinstance(error, HANGUPS):
            self.receiver._record_error(error, traceback.format_exc())


class Receiver:
    """An HTTP server on 127.0.0.1 recording requests; answers 200 unless told to fail, delay or go down.

    With ``ssl_context`` (a server-side ``ssl.SSLContext``) it speaks HTTPS; a context that requires
    client certificates makes it a mutual-TLS receiver. Failed handshakes are in ``tls_failures``.
    """

    def __init__(
        self,
        port: int = 0,
        path: str = "/hook",
        on_event: Callable[[Event], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.path = path
        self._port = port
        self._on_event = on_event
        self._ssl_context = ssl_context
        self._tls_failures: list[str] = []
        self._errors: list[tuple[BaseException, str]] = []
        self._changed = threading.Condition()
        self._requests: list[RecordedRequest] = []
        self._events: list[Event] = []
        self._failures: deque[_Answer] = deque()
        self._status: _Answer | None = None
        self._delay = 0.0
        self._released = threading.Event()
        self._released.set()
        self._reject: Callable[[Event], bool] | None = None
        self._reject_status = 400
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("the receiver is not started")
        return self._port

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{HOST}:{self.port}{self.path}"

    @property
    def tls_failures(self) -> list[str]:
        """Why each failed TLS handshake failed (e.g. a client without a certificate)."""
        with self._changed:
            return list(self._tls_failures)

    @property
    def requests(self) -> list[RecordedRequest]:
        self.check()
        with self._changed:
            return list(self._requests)

    @property
    def errors(self) -> list[str]:
        """The traceback of each exception raised while answering a request (hang-ups excepted)."""
        with self._changed:
            return [text for _, text in self._errors]

    def check(self) -> None:
        """Raise AssertionError with the traceback of the first error the server met, if any."""
        with self._changed:
            errors = list(self._errors)
        if errors:
            first, text = errors[0]
            raise AssertionError(f"the test receiver failed {len(errors)} time(s) while answering; "
                                 f"the first time:\n{text}") from first

    @property
    def is_up(self) -> bool:
        return self._server is not None

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
        self._wait(lambda: len(self._events) >= n, timeout, f"{n} events")
        return self.events()

    def wait_for_requests(self, n: int, timeout: float = 30.0) -> list[RecordedRequest]:
        """Block until at least ``n`` requests (of any status) arrived and return them all."""
        self._wait(lambda: len(self._requests) >= n, timeout, f"{n} requests")
        return self.requests

    def start(self) -> None:
        self.up()

    def stop(self) -> None:
        self.down()

    def up(self) -> None:
        """Listen again, on the same port once one was chosen."""
        if self._server is not None:
            return
        self._server = _Server(self._port, self, self._ssl_context)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name=f"receiver:{self._port}", daemon=True
        )
        self._thread.start()

    def down(self) -> None:
        """Stop listening and cut open connections: clients get connection errors until up()."""
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.drop_connections()
        if thread is not None:
            thread.join(timeout=5)

    def set_down(self, down: bool) -> None:
        self.down() if down else self.up()

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        if exc is None:
            self.check()  # a failure of the server is the failure of whoever ran it

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

    def _record_error(self, error: BaseException, text: str) -> None:
        with self._changed:
            self._errors.append((error, text))
            self._changed.notify_all()

    def _record_handshake_failure(self, error: BaseException) -> None:
        with self._changed:
            self._tls_failures.append(f"{type(error).__name__}: {error}")
            self._changed.notify_all()

    def wait_for_tls_failures(self, n: int, timeout: float = 30.0) -> list[str]:
        """Block until at least ``n`` TLS handshakes failed and return why."""
        self._wait(lambda: len(self._tls_failures) >= n, timeout, f"{n} failed TLS handshakes")
        return self.tls_failures

    def _wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not done():
                if self._errors:
                    break  # waiting on would end in a timeout that hides the cause
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"waited {timeout:g}s for {what}; got {len(self._events)} events"
                        f" in {len(self._requests)} requests ({sum(not r.ok for r in self._requests)} failed)"
                    )
                self._changed.wait(remaining)
        self.check()


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
