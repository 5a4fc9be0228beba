"""Open SQL and replication connections with the settings wal2http relies on."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import time
from collections.abc import Callable, Iterator
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

# What the rest of the package names the connections and cursors it is handed (only pg/ opens them).
Connection = psycopg2.extensions.connection
Cursor = psycopg2.extensions.cursor

APPLICATION_NAME = "wal2http"
NAME_BYTES = 63  # NAMEDATALEN - 1: PostgreSQL cuts application_name there

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


def tls_status(conn: Connection) -> TlsStatus:
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


def connect_sql(dsn: str, connect_timeout: int = 10, require_tls: bool = False) -> Connection:
    """An autocommit SQL connection."""
    try:
        conn: Connection = psycopg2.connect(**connection_params(dsn, connect_timeout, require_tls))
    except psycopg2.Error as e:
        raise DatabaseError(f"cannot connect to PostgreSQL ({redact_dsn(dsn)}): "
                            f"{_tls_hint(error_text(e), require_tls)}") from None
    check_tls(conn, "connection", require_tls)
    conn.autocommit = True
    return conn


@contextlib.contextmanager
def source_connection(source: SourceConfig) -> Iterator[Connection]:
    """An autocommit SQL connection to the configured database, closed on leaving the block.

    Refused without TLS under --require-tls. Every operator command opens its connection this way.
    """
    conn = connect_sql(source.dsn.reveal(), source.connect_timeout_s, source.require_tls)
    try:
        yield conn
    finally:
        with contextlib.suppress(psycopg2.Error):
            conn.close()


def connect_replication(dsn: str, connect_timeout: int = 10,
                        require_tls: bool = False) -> psycopg2.extras.LogicalReplicationConnection:
    """A logical replication connection (``replication=database``).

    Raises ReplicationLost when the server cannot be reached now (worth trying again), and
    DatabaseError when it answered no for a reason that waiting does not change (credentials,
    pg_hba.conf, a missing database or role, TLS refused under --require-tls).
    """
    try:
        conn: psycopg2.extras.LogicalReplicationConnection = psycopg2.connect(
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


# How each kind of connection to each server was last reported: a stand-by instance reconnects every few
# seconds, and the same line each time would bury everything else.
_reported: dict[tuple[str, str], TlsStatus] = {}


def check_tls(conn: Connection, kind: str, require_tls: bool) -> None:
    """Log how the connection is protected (again only when that changed); refuse it unencrypted under
    --require-tls."""
    tls = tls_status(conn)
    info = conn.info
    where = f"{info.user}@{info.host}:{info.port}/{info.dbname}"
    if require_tls and not tls.in_use:
        conn.close()
        raise DatabaseError(
            f"{kind} to {where} does not use TLS and --require-tls is set: set sslmode=verify-full "
            "(with sslrootcert) or sslmode=require in the DSN, and ssl=on on the server"
        )
    repeated = _reported.get((kind, where)) == tls
    _reported[(kind, where)] = tls
    if tls.in_use or is_local(info.host):
        (logger.debug if repeated else logger.info)("%s to %s: %s", kind, where,
                                                    tls if tls.in_use else "no TLS (local)")
    else:
        (logger.debug if repeated else logger.warning)(
            "%s to %s does not use TLS: passwords and changes cross the network in clear; "
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


def error_text(error: BaseException) -> str:
    """A PostgreSQL error on one line (libpq's messages span several), or its type when empty."""
    return " ".join(str(error).split()) or type(error).__name__


ANSWER_TIMEOUT_S = 15.0  # longest wait for any answer on the run's SQL connection
WAKE_EVERY_S = 0.5  # how often a wait lets the run look after its replication stream


class _RunConnection(psycopg2.extensions.connection):
    """A connection that knows how long to wait for an answer and what to do meanwhile."""

    on_wait: Callable[[], None] | None = None
    answer_timeout_s: float = ANSWER_TIMEOUT_S


class LazyConnection:
    """An SQL connection of ``run`` beside the replication one: opened on first use, dropped on error.

    Asynchronous (psycopg2 ``async_``), so that every wait for PostgreSQL has a deadline: the main
    loop must never hang on a stalled network path (a statement timeout cannot help there), or the
    replication stream would go unanswered. Async connections are autocommit. ``purpose`` ends its
    application_name, so pg_stat_activity tells the catalogue, backfill and slot monitor sessions apart.
    """

    def __init__(self, dsn: str, *, connect_timeout_s: int = 5, statement_timeout_ms: int = 10_000,
                 answer_timeout_s: float = ANSWER_TIMEOUT_S, require_tls: bool = False,
                 purpose: str = "catalogue") -> None:
        self._dsn = dsn
        # Called at least every WAKE_EVERY_S while waiting for PostgreSQL; may raise to give up.
        self.on_wait: Callable[[], None] | None = None
        self.connect_timeout_s = connect_timeout_s
        self.statement_timeout_ms = statement_timeout_ms
        self.answer_timeout_s = answer_timeout_s
        self.require_tls = require_tls
        self.purpose = purpose
        self._conn: Connection | None = None

    def get(self) -> Connection:
        if self._conn is None:
            params = connection_params(self._dsn, self.connect_timeout_s, self.require_tls)
            try:
                conn = psycopg2.connect(**params, async_=True, connection_factory=_RunConnection)
                conn.on_wait = self.on_wait
                conn.answer_timeout_s = self.answer_timeout_s
                wait(conn, self.connect_timeout_s, "connect")
            except psycopg2.Error as e:
                raise DatabaseError(f"cannot connect to PostgreSQL ({redact_dsn(self._dsn)}): "
                                    f"{error_text(e)}") from None
            check_tls(conn, "connection", self.require_tls)
            self._conn = conn
            # Watermarks and progress need no standby's confirmation: waiting for one would hold up
            # the run (the stream decodes them once flushed locally either way).
            room = NAME_BYTES - len(self.purpose.encode()) - 1
            query(conn, "SELECT set_config('statement_timeout', %s, false),"
                        " set_config('synchronous_commit', 'local', false),"
                        " set_config('application_name', left(current_setting('application_name'), %s) || ' ' || %s,"
                        " false)", (str(self.statement_timeout_ms), room, self.purpose), what="set up the SQL session")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self._conn.close()
        self._conn = None


def wait(conn: Connection, seconds: float, what: str) -> None:
    """Poll an asynchronous connection until its operation is done; DatabaseError after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            with contextlib.suppress(psycopg2.Error):
                conn.close()
            raise DatabaseError(f"no answer from PostgreSQL within {seconds:g} s ({what})")
        fd = conn.fileno()
        pause = min(remaining, WAKE_EVERY_S)
        if state == psycopg2.extensions.POLL_READ:
            ready = select.select([fd], [], [], pause)[0]
        else:
            ready = select.select([], [fd], [], pause)[1]
        on_wait = getattr(conn, "on_wait", None)
        if not ready and on_wait is not None:
            try:
                on_wait()
            except BaseException:
                with contextlib.suppress(psycopg2.Error):
                    conn.close()
                raise


def execute(cur: Cursor, statement: Any, params: Any = None, *, what: str) -> None:
    """``cur.execute``, waiting at most the connection's answer timeout when it is asynchronous."""
    cur.execute(statement, params)
    if cur.connection.async_:
        wait(cur.connection, getattr(cur.connection, "answer_timeout_s", ANSWER_TIMEOUT_S), what)


def query(conn: Connection, statement: Any, params: Any = None, *, what: str) -> list[tuple[Any, ...]]:
    """Run one statement; its rows (none for a command); DatabaseError("cannot <what>: ...") on failure.

    Bounded in time on an asynchronous connection (``LazyConnection``'s).
    """
    try:
        with conn.cursor() as cur:
            execute(cur, statement, params, what=what)
            return list(cur.fetchall()) if cur.description is not None else []
    except psycopg2.Error as e:
        raise DatabaseError(f"cannot {what}: {error_text(e)}") from None
