"""A TCP proxy on 127.0.0.1 that can cut or stall the connections going through it."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; ``cut()`` closes every connection, ``stall()`` freezes them."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        self._closed = False
        self.refusing = False
        threading.Thread(target=self._accept, name="tcpproxy", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()  # like a server that is down: the connection ends before a byte is read
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            frozen = threading.Event()
            with self._lock:
                self._pairs.append((client, upstream, frozen))
            threading.Thread(target=self._pump, args=(client, upstream, frozen), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket, frozen: threading.Event) -> None:
        peers = {a: b, b: a}
        try:
            while True:
                if frozen.is_set():
                    # Stalled for good: both sockets stay open, no byte moves, like a hung middlebox.
                    while not self._closed:
                        time.sleep(0.2)
                    return
                readable, _, _ = select.select(list(peers), [], [], 0.2)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except OSError:
            return
        finally:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()

    def cut(self) -> int:
        """Close every open connection (both sides see a reset); new connections still work."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, upstream, _ in pairs:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
        return len(pairs)

    def stall(self) -> int:
        """Stop forwarding on the open connections without closing them; new ones still work."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for _, _, frozen in pairs:
            frozen.set()
        return len(pairs)

    def refuse(self) -> int:
        """Cut every connection and close new ones at once, until ``accept()``: the target looks down."""
        self.refusing = True
        return self.cut()

    def accept(self) -> None:
        """Forward new connections again after ``refuse()``."""
        self.refusing = False

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.cut()
