"""A fast webhook receiver for the benchmark: counts events, records receipt times, in its own process.

The test receiver (tests/support/receiver.py) is built on http.server and records every request
for assertions; at tens of thousands of requests a second it would be the bottleneck being
measured. This one is a single-threaded selector loop that parses just enough HTTP/1.1
(request line, ``Content-Length``), answers every request with one ``send`` on a TCP_NODELAY
socket, and keeps counters. It runs as a separate process so that neither the harness nor a
POST loop shares its interpreter lock. Control requests live under ``/_bench/``.
"""

from __future__ import annotations

import argparse
import contextlib
import selectors
import socket
import struct
import subprocess
import sys
import time
from types import TracebackType
from typing import Any

import orjson
import requests

HOST = "127.0.0.1"
CONTROL = b"/_bench/"
_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
_FRAME = struct.Struct(">I")
EVENT_START = b'{"id":"'


def _response(body: bytes, content_type: bytes = b"application/json") -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (content_type, len(body))
    return head + body


class _State:
    """What the receiver counted since the last reset."""

    def __init__(self) -> None:
        self.reset({})

    def reset(self, options: dict[str, Any]) -> None:
        self.events = 0
        self.requests = 0
        self.first_at = 0.0
        self.last_at = 0.0
        self.record_bodies = bool(options.get("record_bodies"))
        self.record_commit_times = bool(options.get("record_commit_times"))
        self.commit_time_op = options.get("commit_time_op")  # record only events of this op (None: all)
        self.bodies: list[bytes] = []
        self.commit_times: list[tuple[float, str]] = []

    def deliver(self, body: bytes, received_at: float) -> None:
        if self.record_commit_times:
            value = orjson.loads(body)
            events = value if type(value) is list else [value]
            op = self.commit_time_op
            self.commit_times.extend((received_at, event["commit_time"]) for event in events
                                     if op is None or event["op"] == op)
            self.events += len(events)
        else:
            # Every event object starts with its id, and no value of the benchmark's rows holds
            # this text; counting is ten times cheaper than parsing, and this process shares the
            # machine's two cores with wal2http and PostgreSQL. Runs check the exact count.
            self.events += body.count(EVENT_START)
        self.requests += 1
        if not self.first_at:
            self.first_at = received_at
        self.last_at = received_at
        if self.record_bodies:
            self.bodies.append(body)

    def control(self, path: bytes, body: bytes) -> bytes:
        name = path[len(CONTROL):]
        if name == b"stats":
            return _response(orjson.dumps({
                "events": self.events, "requests": self.requests,
                "first_at": self.first_at, "last_at": self.last_at,
            }))
        if name == b"reset":
            self.reset(orjson.loads(body) if body else {})
            return _response(b"{}")
        if name == b"bodies":
            framed = b"".join(_FRAME.pack(len(b)) + b for b in self.bodies)
            return _response(framed, b"application/octet-stream")
        if name == b"commit-times":
            return _response(orjson.dumps(self.commit_times))
        return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


def _content_length(head: bytes) -> int:
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at < 0:
        if b"\r\ntransfer-encoding:" in lower:
            raise ValueError("chunked bodies are not supported")
        return 0
    end = lower.find(b"\r\n", at + 2)
    return int(lower[at + 17 : end if end >= 0 else None])


def _handle(sock: socket.socket, buf: bytearray, state: _State) -> bool:
    """Answer every complete request in ``buf``; False when the connection must close."""
    while True:
        head_end = buf.find(b"\r\n\r\n")
        if head_end < 0:
            return True
        head = bytes(buf[:head_end])
        try:
            length = _content_length(head)
        except ValueError:
            sock.sendall(b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return False
        end = head_end + 4 + length
        if len(buf) < end:
            return True
        received_at = time.time()
        body = bytes(buf[head_end + 4 : end])
        del buf[:end]
        path = head.split(b" ", 2)[1]
        if path.startswith(CONTROL):
            answer = state.control(path, body)
        else:
            state.deliver(body, received_at)
            answer = _OK
        # One write per response: with TCP_NODELAY nothing waits for a delayed ACK.
        sock.setblocking(True)
        sock.sendall(answer)
        sock.setblocking(False)


def serve(port: int) -> None:
    """Serve until killed; prints ``port N`` once listening."""
    state = _State()
    selector = selectors.DefaultSelector()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, port))
    listener.listen(64)
    listener.setblocking(False)
    selector.register(listener, selectors.EVENT_READ, None)
    print(f"port {listener.getsockname()[1]}", flush=True)
    while True:
        for key, _ in selector.select():
            if key.data is None:
                conn, _ = listener.accept()
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                selector.register(conn, selectors.EVENT_READ, bytearray())
                continue
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            try:
                data = sock.recv(1 << 20)
            except ConnectionError:
                data = b""
            if data:
                key.data.extend(data)
                if _handle(sock, key.data, state):
                    continue
            selector.unregister(sock)
            sock.close()


class FastReceiver:
    """Starts the receiver process and talks to its control endpoints."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self.port = 0
        self._session = requests.Session()

    def start(self) -> FastReceiver:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.receiver"], stdout=subprocess.PIPE, text=True
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.startswith("port "):
            self.close()
            raise RuntimeError(f"the benchmark receiver did not start (it printed {line!r})")
        self.port = int(line.split()[1])
        return self

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/hook"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def _call(self, name: str, options: dict[str, Any] | None = None) -> bytes:
        url = f"http://{HOST}:{self.port}/_bench/{name}"
        if options is None:
            response = self._session.get(url, timeout=30)
        else:
            response = self._session.post(url, data=orjson.dumps(options), timeout=30)
        response.raise_for_status()
        return response.content

    def reset(self, *, record_bodies: bool = False, record_commit_times: bool = False,
              commit_time_op: str | None = None) -> None:
        self._call("reset", {"record_bodies": record_bodies, "record_commit_times": record_commit_times,
                             "commit_time_op": commit_time_op})

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = orjson.loads(self._call("stats"))
        return stats

    def bodies(self) -> list[bytes]:
        data, pos, bodies = self._call("bodies"), 0, []
        while pos < len(data):
            (length,) = _FRAME.unpack_from(data, pos)
            bodies.append(data[pos + 4 : pos + 4 + length])
            pos += 4 + length
        return bodies

    def commit_times(self) -> list[tuple[float, str]]:
        return [(at, text) for at, text in orjson.loads(self._call("commit-times"))]

    def wait_for_events(self, count: int, timeout: float, alive: Any = None) -> dict[str, Any]:
        """Poll until ``count`` events arrived; ``alive()`` false (the sender died) ends it early."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if stats["events"] >= count:
                return stats
            if alive is not None and not alive():
                raise RuntimeError(f"the sender exited after {stats['events']} of {count} events")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the receiver got {stats['events']} of {count} events in {timeout:g}s")
            time.sleep(0.02)

    def close(self) -> None:
        self._session.close()
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None

    def __enter__(self) -> FastReceiver:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        serve(args.port)


if __name__ == "__main__":
    main()
