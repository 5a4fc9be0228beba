"""Open SQL and replication connections with the settings wal2http relies on."""

from __future__ import annotations

import logging
from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from wal2http.errors import ConfigError, DatabaseError

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


def connection_params(dsn: str, connect_timeout: int = 10) -> dict[str, Any]:
    """Merge the operator's DSN with wal2http's settings; the operator's own options are kept."""
    try:
        params: dict[str, Any] = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.ProgrammingError as e:
        # The libpq message quotes no part of the DSN, so it is safe to show.
        raise ConfigError(f"invalid database DSN: {e}") from None
    own = " ".join(f"-c {name}={value}" for name, value in SESSION_SETTINGS.items())
    params["options"] = f"{params['options']} {own}" if params.get("options") else own
    params.setdefault("application_name", APPLICATION_NAME)
    params.setdefault("connect_timeout", str(connect_timeout))
    params["client_encoding"] = "UTF8"
    for name, value in KEEPALIVE_PARAMS.items():
        params.setdefault(name, value)
    return params


def connect_sql(dsn: str, connect_timeout: int = 10) -> Any:
    """An autocommit SQL connection."""
    try:
        conn = psycopg2.connect(**connection_params(dsn, connect_timeout))
    except psycopg2.Error as e:
        raise DatabaseError(f"cannot connect to PostgreSQL: {_first_line(e)}") from None
    conn.autocommit = True
    return conn


def connect_replication(dsn: str, connect_timeout: int = 10) -> Any:
    """A logical replication connection (``replication=database``)."""
    try:
        return psycopg2.connect(
            connection_factory=psycopg2.extras.LogicalReplicationConnection,
            **connection_params(dsn, connect_timeout),
        )
    except psycopg2.Error as e:
        raise DatabaseError(f"cannot open a replication connection: {_first_line(e)}") from None


def query(conn: Any, statement: Any, params: Any = None, *, what: str) -> list[tuple[Any, ...]]:
    """Run one statement; its rows (none for a command); DatabaseError("cannot <what>: ...") on failure."""
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return list(cur.fetchall()) if cur.description is not None else []
    except psycopg2.Error as e:
        raise DatabaseError(f"cannot {what}: {_first_line(e)}") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return " ".join(line.strip() for line in text.splitlines()) if text else type(error).__name__
