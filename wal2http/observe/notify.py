"""Failure notifications by email (stdlib smtplib): sent from the main thread, bounded in time, never fatal."""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from wal2http.config.secrets import Scrubber
from wal2http.config.sections import NotifyConfig

logger = logging.getLogger(__name__)


class Notifier:
    """Sends one email per call, within ``timeout_s`` in all; a failure is logged and returns False.

    wal2http is single-threaded by design, so mail goes out synchronously: only at state
    changes (halt, breaker open too long, dead letters), at most once per ``interval_s`` for
    each kind, and with an overall deadline, so a dead mail server costs at most a few
    seconds now and then, while the replication connection's keepalives are well within
    ``wal_sender_timeout``.
    """

    def __init__(self, config: NotifyConfig, context: str, secrets: list[str] | None = None) -> None:
        assert config.smtp_host is not None
        self.config = config
        self.context = context  # appended to every body: host, slot, run id
        # Error texts never hold secrets; this makes sure, as the log filter does.
        self._scrubber = Scrubber(secrets or ())
        self.sent = 0
        self.failed = 0
        self._last_failure_logged = -float("inf")

    def send(self, subject: str, body: str) -> bool:
        c = self.config
        message = EmailMessage()
        message["Subject"] = f"[wal2http] {subject}"
        message["From"] = c.sender
        message["To"] = ", ".join(c.recipients)
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain="wal2http")
        text = self._scrubber.scrub(f"{body}\n\n{self.context}\n")
        message.set_content(text)
        deadline = time.monotonic() + c.timeout_s
        try:
            self._deliver(message, deadline)
        except (OSError, smtplib.SMTPException, ssl.SSLError, TimeoutError) as e:
            self.failed += 1
            now = time.monotonic()
            if now - self._last_failure_logged >= c.interval_s:
                self._last_failure_logged = now
                logger.warning("cannot send notification email through %s:%d: %s (delivery goes on; "
                               "further mail failures are logged at most every %.0f s)",
                               c.smtp_host, c.port, _reason(e), c.interval_s)
            return False
        self.sent += 1
        logger.info("notification sent to %s: %s", ", ".join(c.recipients), subject)
        return True

    def _deliver(self, message: EmailMessage, deadline: float) -> None:
        c = self.config
        assert c.smtp_host is not None
        with smtplib.SMTP(c.smtp_host, c.port, timeout=_remaining(deadline)) as smtp:
            _step(smtp, deadline)
            smtp.ehlo()
            if c.starttls:
                _step(smtp, deadline)
                smtp.starttls(context=ssl.create_default_context())
                _step(smtp, deadline)
                smtp.ehlo()
            if c.username and c.password:
                _step(smtp, deadline)
                smtp.login(c.username, c.password.reveal())
            _step(smtp, deadline)
            smtp.send_message(message)


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the mail server took too long")
    return left


def _step(smtp: smtplib.SMTP, deadline: float) -> None:
    """Give the next exchange only what is left of the overall deadline."""
    sock: socket.socket | None = getattr(smtp, "sock", None)
    if sock is not None:
        sock.settimeout(_remaining(deadline))


def _reason(error: BaseException) -> str:
    if isinstance(error, smtplib.SMTPNotSupportedError):
        return "the server does not offer STARTTLS (set --no-smtp-starttls only for a local relay)"
    if isinstance(error, smtplib.SMTPResponseException):
        text = error.smtp_error.decode(errors="replace") if isinstance(error.smtp_error, bytes) else error.smtp_error
        return f"{error.smtp_code} {text}"
    return " ".join(str(error).split()) or type(error).__name__
