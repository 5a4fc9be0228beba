"""A real SMTP server on 127.0.0.1 (aiosmtpd) that keeps every message it receives."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import time
from email.message import EmailMessage
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller

from tests.support import HOST, free_port


class Mailbox:
    """Accepts any mail without TLS or login; ``messages`` are parsed ``EmailMessage`` objects."""

    def __init__(self) -> None:
        self._messages: list[EmailMessage] = []
        self._arrived: list[float] = []  # time.monotonic() when each message was received
        self._changed = threading.Condition()
        self._controller = Controller(self, hostname=HOST, port=free_port())

    @property
    def port(self) -> int:
        return int(self._controller.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._changed:
            self._messages.append(message)
            self._arrived.append(time.monotonic())
            self._changed.notify_all()
        return "250 OK"

    @property
    def messages(self) -> list[EmailMessage]:
        with self._changed:
            return list(self._messages)

    @property
    def arrival_times(self) -> list[float]:
        """When each message arrived (``time.monotonic()``), in the order of ``messages``."""
        with self._changed:
            return list(self._arrived)

    def wait_for(self, n: int, timeout: float = 30.0) -> list[EmailMessage]:
        """Block until at least ``n`` messages arrived; TimeoutError says how many did."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._messages) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    subjects = [m["Subject"] for m in self._messages]
                    raise TimeoutError(f"waited {timeout:g}s for {n} emails; got {subjects}")
                self._changed.wait(remaining)
            return list(self._messages)

    def __enter__(self) -> Mailbox:
        self._controller.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._controller.stop()


class SilentServer:
    """Accepts TCP connections (kernel backlog) and never says a word: a hung mail server."""

    def __init__(self) -> None:
        self._socket = socket.create_server((HOST, 0), backlog=16)
        self.port = int(self._socket.getsockname()[1])

    def close(self) -> None:
        self._socket.close()
