"""Which failures to open a replication connection are worth retrying, and which halt."""

from __future__ import annotations

import pytest

from wal2http.pg.connection import is_connection_failure


@pytest.mark.parametrize("text, retry", [
    ('connection to server at "127.0.0.1", port 5432 failed: Connection refused', True),
    ("timeout expired", True),
    ("FATAL: the database system is starting up", True),
    ("FATAL: sorry, too many clients already", True),
    ("FATAL: number of requested standby connections exceeds max_wal_senders (currently 2)", True),
    ('FATAL: password authentication failed for user "wal2http"', False),
    ('FATAL: no pg_hba.conf entry for replication connection from host "10.0.0.1"', False),
    ('FATAL: role "wal2http" is not permitted to log in', False),
    ('FATAL: database "app" does not exist', False),
    ("server does not support SSL, but SSL was required", False),
])
def test_only_connection_failures_are_retried(text: str, retry: bool) -> None:
    assert is_connection_failure(text) is retry
