"""Inputs people type: durations with units, and environment variables with a typo in their name."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wal2http.config.durations import parse_duration
from wal2http.config.environment import unknown_variables


@pytest.mark.parametrize(("text", "seconds"), [
    ("15", 15.0), ("0.5", 0.5), ("15s", 15.0), ("2m", 120.0), ("1h", 3600.0), ("1d", 86400.0),
    ("250ms", 0.25), ("1h30m", 5400.0), ("1m 30s", 90.0), (" 2M ", 120.0), ("1.5h", 5400.0),
    ("0", 0.0), ("1e3", 1000.0),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "15x", "15 parsecs", "-1s", "1s2", "nan", "inf", "m5", "1,5s",
                                  "1h1h"])
def test_not_durations(text: str) -> None:
    with pytest.raises(ValueError, match=r"15s, 2m, 1h"):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=10**6))
def test_plain_numbers_are_seconds(n: int) -> None:
    assert parse_duration(str(n)) == n == parse_duration(f"{n}s")


KNOWN = frozenset({"WAL2HTTP_BATCH_SIZE", "WAL2HTTP_BATCH_BYTES", "WAL2HTTP_DSN", "WAL2HTTP_HTTP_URL",
                   "WAL2HTTP_SHUTDOWN_TIMEOUT"})


def test_unknown_variables_are_named_with_the_nearest_known_one() -> None:
    environ = {"WAL2HTTP_BATCH_SIZ": "1", "WAL2HTTP_DSN": "x", "WAL2HTTP_SHUTDOWN_TIMOUT": "2",
               "WAL2HTTP_COMPLETELY_ELSE": "3", "PATH": "/bin", "WAL2HTTPX": "4", "wal2http_dsn": "5"}
    assert unknown_variables(environ, KNOWN) == [
        ("WAL2HTTP_BATCH_SIZ", "WAL2HTTP_BATCH_SIZE"),
        ("WAL2HTTP_COMPLETELY_ELSE", None),
        ("WAL2HTTP_SHUTDOWN_TIMOUT", "WAL2HTTP_SHUTDOWN_TIMEOUT"),
    ]


def test_known_variables_are_not_reported() -> None:
    assert unknown_variables(dict.fromkeys(KNOWN, "1"), KNOWN) == []
