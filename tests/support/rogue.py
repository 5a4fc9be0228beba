"""A webhook receiver on 127.0.0.1 written to misbehave: endless bodies, trickled bytes, non-HTTP answers.

It speaks HTTP/1.1 over raw sockets, so it can break the protocol in ways ``http.server`` cannot.
``misbehave(how, times)`` spoils the next ``times`` requests; every other request is answered
200 and its events are recorded, like ``Receiver`` does. ``RssWatch`` samples a process's memory;
``stream_through`` runs wal2http against a misbehaving receiver and measures what it costs.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import HOST
from tests.support.pgcluster import Database
from tests.support.process import Start, Wal2http
from tests.support.replication import publish

__all__ = ["HOW", "RogueReceiver", "RogueRun", "RssWatch", "stream_through"]
Event = dict[str, Any]

# These answer 200 before misbehaving: the events they got count as accepted.
ACCEPTING = frozenset({"endless-body", "endless-chunks", "no-content-with-body"})
HOW = (
    "endless-body",  # 200 with Content-Length 4 GiB, zeros sent until the client hangs up
    "endless-chunks",  # 200, chunked, chunks without end
    "trickle-status",  # the status line, one byte a second
    "trickle-headers",  # the status line, then header bytes one a second
    "trickle-body",  # status and headers at once, then the body one byte a second
    "hang",  # read the request, answer nothing, keep the connection open
    "interim",  # 102 Processing, then nothing
    "continue-forever",  # 100 Continue, again and again
    "garbage",  # bytes that are not HTTP, then close
    "bad-status",  # a status line with no number
    "close-mid-answer",  # headers announcing 100 bytes, 5 of them, then close
    "close-on-reuse",  # answer one request well, then close the connection on the next one, unanswered
    "stall-tls",  # (TLS) accept the connection and never start the handshake
    # 204 announcing a body (HTTP says a 204 has none), the body sent late: just before the next answer
    # on the connection, which the client then cannot parse
    "no-content-with-body",
)
LATE_BODY = b'{"ok":true}'


class RogueReceiver:
    """Misbehaves ``how`` for the next requests, then answers 200 and records events."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl_context = ssl_context
        self._listener = socket.create_server((HOST, 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Condition()
        self._spoil: list[str] = []
        self._events: list[Event] = []
        self.bodies: list[bytes] = []  # of every request, spoiled or not
        self.requests = 0  # requests read, spoiled or not
        self.accepted_requests = 0
        self.spoiled = 0
        self.connections = 0
        self._closed = False
        self._sockets: set[socket.socket] = set()
        threading.Thread(target=self._accept, name="rogue", daemon=True).start()

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl_context else 'http'}://{HOST}:{self.port}/hook"

    def misbehave(self, how: str, times: int = 1) -> None:
        assert how in HOW, how
        with self._lock:
            self._spoil.extend([how] * times)

    def behave(self) -> None:
        with self._lock:
            self._spoil.clear()

    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    def wait_for_events(self, n: int, timeout: float = 30.0) -> list[Event]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._events) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"waited {timeout:g}s for {n} events; got {len(self._events)} in "
                                       f"{self.requests} requests ({self.spoiled} spoiled)")
                self._lock.wait(left)
            return list(self._events)

    def wait_for_spoiled(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while self.spoiled < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"waited {timeout:g}s for {n} spoiled requests; got {self.spoiled}")
                self._lock.wait(left)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> RogueReceiver:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- serving ---------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets.add(sock)
                self.connections += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _take(self) -> str | None:
        with self._lock:
            return self._spoil.pop(0) if self._spoil else None

    def _serve(self, sock: socket.socket) -> None:
        conn: Any = sock
        try:
            if self._ssl_context is not None:
                if self._peek_spoil() == "stall-tls":
                    self._take()
                    self._count_spoiled()
                    while not self._closed and sock.recv(4096):
                        pass  # never answer the ClientHello
                    return
                conn = self._ssl_context.wrap_socket(sock, server_side=True)
            reader = conn.makefile("rb")
            served = 0
            late = b""  # the body of a 204 answered before (no-content-with-body)
            while not self._closed:
                body = _read_request(reader)
                if body is None:
                    return
                if late:
                    conn.sendall(late)
                    late = b""
                with self._lock:
                    self.requests += 1
                    self.bodies.append(body)
                how = self._take()
                if how == "close-on-reuse" and served == 0:
                    with self._lock:  # this one is answered well; the next on this connection is not
                        self._spoil.insert(0, how)
                    how = None
                served += 1
                if how is None:
                    self._accept_request(conn, body)
                    continue
                if how in ACCEPTING:
                    self._record(body)
                if how == "no-content-with-body":
                    late = LATE_BODY
                self._count_spoiled()
                if not _SPOILERS[how](conn, self):
                    return
        except (OSError, ValueError):
            return
        finally:
            with contextlib.suppress(OSError):
                conn.close()
            with self._lock:
                self._sockets.discard(sock)

    def _peek_spoil(self) -> str | None:
        with self._lock:
            return self._spoil[0] if self._spoil else None

    def _count_spoiled(self) -> None:
        with self._lock:
            self.spoiled += 1
            self._lock.notify_all()

    def _accept_request(self, conn: Any, body: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
                     b'{"ok":true}')
        self._record(body)

    def _record(self, body: bytes) -> None:
        value = json.loads(body)
        events = value if isinstance(value, list) else [value]
        with self._lock:
            self._events.extend(events)
            self.accepted_requests += 1
            self._lock.notify_all()


def _read_request(reader: Any) -> bytes | None:
    """The body of the next request on the connection; None when the client closed it."""
    line = reader.readline(65536)
    if not line:
        return None
    length = 0
    while True:
        header = reader.readline(65536)
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return reader.read(length)


def _send_slowly(conn: Any, data: bytes, rogue: RogueReceiver, every: float = 1.0) -> bool:
    for byte in data:
        if rogue._closed:
            return False
        conn.sendall(bytes([byte]))
        time.sleep(every)
    return True


def _endless_body(conn: Any, rogue: RogueReceiver) -> bool:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4294967296\r\n\r\n")
    zeros = b"0" * 65536
    while not rogue._closed:
        conn.sendall(zeros)  # OSError once the client hangs up
    return False


def _endless_chunks(conn: Any, rogue: RogueReceiver) -> bool:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"10000\r\n" + b"x" * 65536 + b"\r\n"
    while not rogue._closed:
        conn.sendall(chunk)
    return False


def _trickle_status(conn: Any, rogue: RogueReceiver) -> bool:
    return _send_slowly(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", rogue)


def _trickle_headers(conn: Any, rogue: RogueReceiver) -> bool:
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    return _send_slowly(conn, b"X-Slow: " + b"a" * 100 + b"\r\nContent-Length: 0\r\n\r\n", rogue)


def _trickle_body(conn: Any, rogue: RogueReceiver) -> bool:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
    return _send_slowly(conn, b" " * 100, rogue)


def _hang(conn: Any, rogue: RogueReceiver) -> bool:
    while not rogue._closed and conn.recv(4096):
        pass
    return False


def _interim(conn: Any, rogue: RogueReceiver) -> bool:
    conn.sendall(b"HTTP/1.1 102 Processing\r\n\r\n")
    return _hang(conn, rogue)


def _continue_forever(conn: Any, rogue: RogueReceiver) -> bool:
    while not rogue._closed:
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        time.sleep(0.05)
    return False


def _garbage(conn: Any, rogue: RogueReceiver) -> bool:
    conn.sendall(b"\x00\x01SSH-2.0-OpenSSH_9.2\r\nnot http at all\r\n\r\n")
    return False


def _bad_status(conn: Any, rogue: RogueReceiver) -> bool:
    conn.sendall(b"HTTP/1.1 twohundred OK\r\nContent-Length: 0\r\n\r\n")
    return False


def _close_mid_answer(conn: Any, rogue: RogueReceiver) -> bool:
    conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"ok"')
    return False


def _close_now(conn: Any, rogue: RogueReceiver) -> bool:
    return False


def _no_content_with_body(conn: Any, rogue: RogueReceiver) -> bool:
    conn.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: %d\r\n\r\n" % len(LATE_BODY))
    return True


_SPOILERS: dict[str, Callable[[Any, RogueReceiver], bool]] = {
    "endless-body": _endless_body,
    "endless-chunks": _endless_chunks,
    "trickle-status": _trickle_status,
    "trickle-headers": _trickle_headers,
    "trickle-body": _trickle_body,
    "hang": _hang,
    "interim": _interim,
    "continue-forever": _continue_forever,
    "garbage": _garbage,
    "bad-status": _bad_status,
    "close-mid-answer": _close_mid_answer,
    "close-on-reuse": _close_now,
    "no-content-with-body": _no_content_with_body,
}


class RssWatch:
    """Samples a process's resident memory (VmRSS) every 20 ms; ``peak_mib`` is the largest seen."""

    def __init__(self, pid: int) -> None:
        self._status = Path(f"/proc/{pid}/status")
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024

    def sample(self) -> int:
        try:
            for line in self._status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except (OSError, ValueError):
            pass
        return 0

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_kib = max(self.peak_kib, self.sample())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_mib


@dataclass(frozen=True)
class RogueRun:
    """What stream_through saw: the running process, the events accepted, and what they cost."""

    wal2http: Wal2http
    events: list[Event]
    took: float  # seconds from the first insert to the last event accepted
    peak_mib: float  # the process's largest resident memory meanwhile


def stream_through(db: Database, rogue: RogueReceiver, start_wal2http: Start, args: Sequence[str],
                   how: str | None = None, times: int = 1, rows: int = 20, timeout: float = 30.0) -> RogueRun:
    """Publish a table ``t``, spoil the next ``times`` requests ``how``, start ``wal2http run ARGS``, insert
    ``rows`` rows in one transaction and wait until the rogue accepted them all, sampling memory throughout.
    The process is left running: the test stops it and checks its exit code."""
    publish(db, "CREATE TABLE t (id int PRIMARY KEY, v text)", tables="t")
    if how is not None:
        rogue.misbehave(how, times)
    wal2http = start_wal2http(*args)
    assert wal2http.proc is not None
    watch = RssWatch(wal2http.proc.pid)
    started = time.monotonic()
    db.execute("INSERT INTO t SELECT i, 'x' FROM generate_series(1, %s) i", (rows,))
    try:
        events = rogue.wait_for_events(rows, timeout=timeout)
        took = time.monotonic() - started
    finally:
        peak = watch.stop()
    return RogueRun(wal2http, events, took, peak)
