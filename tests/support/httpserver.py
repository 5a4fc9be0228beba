"""The recording HTTP server core that the test receiver and the fake Hook0 share: 127.0.0.1, errors kept."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import ssl
import sys
import threading
import time
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from tests.support import HOST

__all__ = ["HANGUPS", "Handler", "RecordingServer", "Server"]

# A client that hung up (wal2http killed, or a server going down cutting it) is not a failure of the test.
HANGUPS = (ConnectionError, TimeoutError, ssl.SSLError)


class Handler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1 with one write per answer; subclasses decide the answer."""

    protocol_version = "HTTP/1.1"  # keep-alive, like a real server behind a connection pool
    disable_nagle_algorithm = True  # else delayed ACKs add 40 ms to every request
    wbufsize = 1 << 16  # headers and body leave in one write, flushed by handle_one_request
    server: Server

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def lowercased_headers(self) -> dict[str, str]:
        return {name.lower(): value for name, value in self.headers.items()}

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Server(ThreadingHTTPServer):
    """A threading HTTP server on 127.0.0.1 that hands every error but a hang-up to its owner."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, port: int, handler: type[Handler], owner: RecordingServer,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.owner = owner
        self.ssl_context = ssl_context
        self.connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__((HOST, port), handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name, which can stall where DNS is missing.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = HOST, self.server_address[1]

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
                self.owner._record_handshake_failure(e)
                return
        super().finish_request(request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Cut open keep-alive connections, as a server going down would."""
        with self._connections_lock:
            connections = list(self.connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Keep any error but a hang-up: a bug in the server or in a test's predicate fails the test."""
        error = sys.exc_info()[1]
        if error is not None and not isinstance(error, HANGUPS):
            self.owner._record_error(error, traceback.format_exc())


class RecordingServer:
    """What a recording test server keeps beside its records: a condition to wait on, the errors it met
    while answering (raised by check() and by every wait), failed TLS handshakes, and its serving thread."""

    name = "the test server"  # in messages: "<name> failed 2 time(s) while answering"
    handler: type[Handler] = Handler

    def __init__(self, port: int = 0, ssl_context: ssl.SSLContext | None = None) -> None:
        self._port = port
        self._ssl_context = ssl_context
        self._changed = threading.Condition()
        self._errors: list[tuple[BaseException, str]] = []
        self._tls_failures: list[str] = []
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError(f"{self.name} is not started")
        return self._port

    @property
    def is_up(self) -> bool:
        return self._server is not None

    @property
    def errors(self) -> list[str]:
        """The traceback of each exception raised while answering a request (hang-ups excepted)."""
        with self._changed:
            return [text for _, text in self._errors]

    @property
    def tls_failures(self) -> list[str]:
        """Why each failed TLS handshake failed (e.g. a client without a certificate)."""
        with self._changed:
            return list(self._tls_failures)

    def check(self) -> None:
        """Raise AssertionError with the traceback of the first error the server met, if any."""
        with self._changed:
            errors = list(self._errors)
        if errors:
            first, text = errors[0]
            raise AssertionError(f"{self.name} failed {len(errors)} time(s) while answering; "
                                 f"the first time:\n{text}") from first

    def start(self) -> Self:
        self.up()
        return self

    def stop(self) -> None:
        self.down()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        if exc is None:
            self.check()  # a failure of the server is the failure of whoever ran it

    def up(self) -> None:
        """Listen (again, on the same port once one was chosen)."""
        if self._server is not None:
            return
        self._server = Server(self._port, self.handler, self, self._ssl_context)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name=f"{type(self).__name__}:{self._port}", daemon=True)
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

    def _record_error(self, error: BaseException, text: str) -> None:
        with self._changed:
            self._errors.append((error, text))
            self._changed.notify_all()

    def _record_handshake_failure(self, error: BaseException) -> None:
        with self._changed:
            self._tls_failures.append(f"{type(error).__name__}: {error}")
            self._changed.notify_all()

    def _wait(self, done: Callable[[], bool], timeout: float, what: str, got: Callable[[], str]) -> None:
        """Wait (holding the condition while testing ``done``) until done() or an error; else TimeoutError
        saying what arrived (``got``)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not done():
                if self._errors:
                    break  # waiting on would end in a timeout that hides the cause
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"waited {timeout:g}s for {what}; got {got()}")
                self._changed.wait(remaining)
        self.check()
