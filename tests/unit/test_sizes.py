"""Sizes as operators write them (``512MB``, ``2GB``) and as ``slot status`` prints them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wal2http.sizes import format_size, parse_size

KB, MB, GB, TB = 1 << 10, 1 << 20, 1 << 30, 1 << 40


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512MB", 512 * MB), ("2GB", 2 * GB), ("2 GB", 2 * GB), ("2gb", 2 * GB), ("1.5GiB", 3 * GB // 2),
        ("64k", 64 * KB), ("64kB", 64 * KB), ("1TB", TB), ("1000", 1000), ("0", 0), ("10B", 10),
        ("3 bytes", 3), (" 7M ", 7 * MB),
    ],
)
def test_parse(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MB", "-1MB", "12XB", "1,5GB", "1e3", "2 G B"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 kB"), (1_288_490, "1.2 MB"), (MB - 1, "1.0 MB"),
     (2 * GB, "2.0 GB"), (3 * TB, "3.0 TB")],
)
def test_format(n: int, text: str) -> None:
    assert format_size(n) == text


@given(st.integers(min_value=0, max_value=1 << 60))
def test_format_then_parse_is_within_rounding(n: int) -> None:
    back = parse_size(format_size(n).replace(" ", ""))
    assert abs(back - n) <= max(n * 0.05, 0)
