"""Open SQL and replication connections with the settings wal2http relies on."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from wal2http.config.dsn import is_url, redact_dsn
from wal2http.config.sections import SourceConfig
from wal2http.config.validation import is_loopback
from wal2http.errors import ConfigError, DatabaseError, ReplicationLost

logger = logging.getLogger(__name__)

APPLICATION_NAME = "wal2http"

# The text the walsender produces for values depends on these; force canonical forms.
SESSION_SETTINGS = {
    "DateStyle": "ISO",
    "TimeZone": "UTC",
    "extra_float_digits": "3",
    "IntervalStyle": "postgres",
    "bytea_output": "hex",
}

# Notice a dead peer within about a minute even when nothing is being written.
KEEPALIVE_PARAMS = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "tcp_user_timeout": "60000",
}


@dataclass(frozen=True)
class TlsStatus:
    """Whether a connection is encrypted, and how; for logs and ``check-config``."""

    in_use: bool
    protocol: str | None = None
    cipher: str | None = None

    def __str__(self) -> str:
        return f"TLS {self.protocol}, cipher {self.cipher}" if self.in_use else "no TLS"


def tls_status(conn: Any) -> TlsStatus:
    info = conn.info
    if not info.ssl_in_use:
        return TlsStatus(False)
    return TlsStatus(True, info.ssl_attribute("protocol"), info.ssl_attribute("cipher"))


def connection_params(dsn: str, connect_timeout: int = 10, require_tls: bool = False) -> dict[str, Any]:
    """Merge the operator's DSN with wal2http's settings; the operator's own options are kept.

    With ``require_tls`` and no sslmode (in the DSN or PGSSLMODE), libpq is told ``sslmode=require``
    so it never falls back to an unencrypted connection; a stricter sslmode is kept as it is.
    """
    try:
        params: dict[str, Any] = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.ProgrammingError as e:
        raise ConfigError(f"invalid database DSN: {_without_dsn_text(error_text(e))}") from None
    own = " ".join(f"-c {name}={value}" for name, value in SESSION_SETTINGS.items())
    params["options"] = f"{params['options']} {own}" if params.get("options") else own
    params.setdefault("application_name", APPLICATION_NAME)
    params.setdefault("connect_timeout", str(connect_timeout))
    params["client_encoding"] = "UTF8"
    for name, value in KEEPALIVE_PARAMS.items():
        params.setdefault(name, value)
    if require_tls and "sslmode" not in params and not os.environ.get("PGSSLMODE"):
        params["sslmode"] = "require"
    return params


def connect_sql(dsn: str, connect_timeout: int = 10, require_tls: bool = False) -> Any:
    """An autocommit SQL connection."""
    try:
        conn = psycopg2.connect(**connection_params(dsn, connect_timeout, require_tls))
    except psycopg2.Error as e:
        raise DatabaseError(f"cannot connect to PostgreSQL ({redact_dsn(dsn)}): "
                            f"{_tls_hint(error_text(e), require_tls)}") from None
    check_tls(conn, "connection", require_tls)
    conn.autocommit = True
    return conn


def connect_source(source: SourceConfig) -> Any:
    """An autocommit SQL connection to the configured database, refused without TLS under --require-tls."""
    return connect_sql(source.dsn.reveal(), source.connect_timeout_s, source.require_tls)


def connect_replication(dsn: str, connect_timeout: int = 10, require_tls: bool = False) -> Any:
    """A logical replication connection (``replication=database``).

    Raises ReplicationLost when the server cannot be reached now (worth trying again), and
    DatabaseError when it answered no for a reason that waiting does not change (credentials,
    pg_hba.conf, a missing database or role, TLS refused under --require-tls).
    """
    try:
        conn = psycopg2.connect(
            connection_factory=psycopg2.extras.LogicalReplicationConnection,
            **connection_params(dsn, connect_timeout, require_tls),
        )
    except psycopg2.Error as e:
        text = error_text(e)
        error = ReplicationLost if is_connection_failure(text) else DatabaseError
        raise error(f"cannot open a replication connection ({redact_dsn(dsn)}): "
                    f"{_tls_hint(text, require_tls)}") from None
    check_tls(conn, "replication connection", require_tls)
    return conn


# What the server (or libpq) says when it refuses a connection for a reason that waiting does not
# change. Everything else (refused, timed out, reset, starting up, shutting down, too many clients,
# no WAL sender free, a host name not resolving now) is a connection failure, retried.
_PERMANENT_RE = re.compile(
    r"authentication failed|no pg_hba\.conf entry|does not exist|must be superuser or replication role"
    r"|permission denied|not permitted|SSL was required|does not support SSL|certificate|invalid sslmode"
    r"|invalid connection option|unsupported|no password supplied|password is required",
    re.IGNORECASE,
)


def is_connection_failure(text: str) -> bool:
    """True when a failed connect is worth retrying: the server could not be reached or was not ready."""
    return _PERMANENT_RE.search(text) is None


def check_tls(conn: Any, kind: str, require_tls: bool) -> None:
    """Log how the connection is protected; refuse it unencrypted under --require-tls."""
    tls = tls_status(conn)
    info = conn.info
    where = f"{info.user}@{info.host}:{info.port}/{info.dbname}"
    if tls.in_use:
        logger.info("%s to %s: %s", kind, where, tls)
        return
    if require_tls:
        conn.close()
        raise DatabaseError(
            f"{kind} to {where} does not use TLS and --require-tls is set: set sslmode=verify-full "
            "(with sslrootcert) or sslmode=require in the DSN, and ssl=on on the server"
        )
    if is_local(info.host):
        logger.info("%s to %s: no TLS (local)", kind, where)
    else:
        logger.warning("%s to %s does not use TLS: passwords and changes cross the network in clear; "
                       "set sslmode=verify-full in the DSN, or pass --require-tls", kind, where)


def is_local(host: str) -> bool:
    """A Unix socket or a loopback address: traffic that never crosses a network."""
    return host.startswith("/") or is_loopback(host)


def _tls_hint(reason: str, require_tls: bool) -> str:
    if require_tls and "SSL" in reason:
        return f"{reason} (--require-tls is set: the server must accept TLS connections, ssl=on)"
    return reason


_QUOTED_RE = re.compile(r'"([^"]*)"')
_NAMES_AN_OPTION_RE = re.compile(r"(?:option|parameter:?) $")


def _without_dsn_text(message: str) -> str:
    """libpq's DSN parse error without the pieces of the DSN it quotes, which may hold a password.

    It quotes option names (kept), a token missing its '=' (hidden: it may be a glued
    ``password...``) or the whole URI (shown redacted).
    """

    def replace(match: re.Match[str]) -> str:
        quoted = match.group(1)
        if len(quoted) <= 1 or _NAMES_AN_OPTION_RE.search(message, 0, match.start()):
            return match.group(0)
        if is_url(quoted):
            return f'"{redact_dsn(quoted)}"'
        return '"..."'

    return _QUOTED_RE.sub(replace, message)


def query(conn: Any, statement: Any, params: Any = None, *, what: str) -> list[tuple[Any, ...]]:
    """Run one statement; its rows (none for a command); DatabaseError("cannot <what>: ...") on failure."""
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return list(cur.fetchall()) if cur.description is not None else []
    except psycopg2.Error as e:
        raise DatabaseError(f"cannot {what}: {error_text(e)}") from None


def error_text(error: BaseException) -> str:
    """A PostgreSQL error on one line (libpq's messages span several), or its type when empty."""
    return " ".join(str(error).split()) or type(error).__name__
