"""Validation rules shared by options: identifiers, UUIDs, loopback hosts."""

from __future__ import annotations

import pytest

from wal2http.config.validation import is_loopback, validate_identifier, validate_uuid
from wal2http.errors import ConfigError


def test_identifier_and_uuid_rules() -> None:
    """The shared rules, also for options that do not exist yet (a table name)."""
    assert (
        validate_uuid("3FA85F64-5717-4562-B3FC-2C963F66AFA6", "--x") == "3fa85f64-5717-4562-b3fc-2c963f66afa6"
    )
    for bad in ("", "3fa85f64", "not-a-uuid-at-all-0000-000000000000"):
        with pytest.raises(ConfigError, match=r"--x must be a UUID, not .*like 3fa85f64-"):
            validate_uuid(bad, "--x")
    validate_identifier("orders_2026", "--table")
    for bad in ("Orders", "1t", "t-x", "t x", 'a"b', "x" * 64):
        with pytest.raises(ConfigError, match="invalid --table"):
            validate_identifier(bad, "--table")


def test_loopback_hosts() -> None:
    assert all(map(is_loopback, ["localhost", "127.0.0.1", "127.8.9.10", "::1", "[::1]"]))
    assert not any(map(is_loopback, ["db.example.com", "10.0.0.1", "0.0.0.0", "localhost.example.com"]))
