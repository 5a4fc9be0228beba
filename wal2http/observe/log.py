"""Logging set-up: text or JSON records on stderr or a rotated file, secrets scrubbed from every record."""

from __future__ import annotations

import logging
import logging.handlers
import secrets as random_tokens
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from pythonjsonlogger.json import JsonFormatter

from wal2http.config.secrets import Scrubber
from wal2http.errors import ConfigError

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class SecretFilter(logging.Filter):
    """Second line of defence: replaces any configured secret value in a record with ***."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        scrubber = Scrubber(secrets)
        self._scrub = scrubber.scrub
        self._active = bool(scrubber)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._active:
            return True
        message = record.getMessage()
        scrubbed = self._scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self._scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self._scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self._scrub(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, self._scrub(value))
        return True


_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class IsoJsonFormatter(JsonFormatter):
    """JSON records whose ``time`` is ISO 8601 in UTC with its offset (2026-12-06T15:04:26.123+00:00)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s",
                         rename_fields={"asctime": "time", "levelname": "level", "name": "logger"})

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


def json_error(message: str) -> str:
    """An error record formatted as ``--log-format json`` formats them, for errors met before logging is set up."""
    record = logging.LogRecord("wal2http", logging.ERROR, "", 0, message, None, None)
    return IsoJsonFormatter().format(record)


def new_run_id() -> str:
    """A short random id for this process, carried by every record as ``run_id``."""
    return random_tokens.token_hex(6)


class ContextFilter(logging.Filter):
    """Adds fixed fields (``slot``, ``run_id``) to every record, unless the record sets them itself."""

    def __init__(self, fields: Mapping[str, str]) -> None:
        super().__init__()
        self._fields = dict(fields)

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in self._fields.items():
            if key not in record.__dict__:
                setattr(record, key, value)
        return True


def setup(level: str = "INFO", fmt: str = "text", secrets: Iterable[str] = (), *,
          file: str | None = None, max_bytes: int = 0, backups: int = 0,
          context: Mapping[str, str] | None = None) -> None:
    """Configure the root logger once; the only place handlers are created.

    With ``file``, records go to that file only, rotated at ``max_bytes`` keeping ``backups``
    old files (``max_bytes`` 0: never rotated here; ``reopen()`` after an external rotation).
    """
    handler: logging.Handler
    if file:
        try:
            handler = logging.handlers.RotatingFileHandler(file, maxBytes=max_bytes, backupCount=backups,
                                                           encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot open --log-file {file!r}: {e.strerror or e}") from None
    else:
        handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(IsoJsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    if context:
        handler.addFilter(ContextFilter(context))
    handler.addFilter(SecretFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    # urllib3 warns about every quick retry; wal2http reports delivery trouble once, itself.
    logging.getLogger("urllib3").setLevel(logging.ERROR)


def reopen() -> bool:
    """Reopen the log file (after logrotate moved it); False when logging goes to no file."""
    reopened = False
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                if handler.stream is not None:
                    handler.stream.close()
                handler.stream = handler._open()
            finally:
                handler.release()
            reopened = True
    return reopened
