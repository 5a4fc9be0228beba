"""--header 'Name: value': literal values for plain headers, env:/file: for secret ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from wal2http.config.headers import Header, parse_headers
from wal2http.config.secrets import Secret
from wal2http.errors import ConfigError


def test_literal_env_and_file_values(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    headers = parse_headers(
        [
            "X-Team: billing",
            "",
            "X-Api-Key: env:API_KEY",
            f"X-Auth-Token:file:{key_file}",
            "X-Empty-Ok:  a  b ",
        ],
        {"API_KEY": "from-env"},
    )
    assert headers == (
        Header("X-Team", "billing"),
        Header("X-Api-Key", Secret("from-env")),
        Header("X-Auth-Token", Secret("from-file")),
        Header("X-Empty-Ok", "a  b"),
    )
    assert [h.reveal() for h in headers] == ["billing", "from-env", "from-file", "a  b"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("X-Team billing", "must be 'Name: value'"),
        ("X Team: billing", "must be 'Name: value'"),
        (": billing", "must be 'Name: value'"),
        ("Content-Type: text/plain", "wal2http sets this header itself"),
        ("webhook-signature: v1,abc", "wal2http sets this header itself"),
        ("Authorization: Bearer abc", "looks like a secret"),
        ("X-Api-Key: abc", "looks like a secret"),
        ("Cookie: session=abc", "looks like a secret"),
        ("X-Api-Key: env:MISSING", "environment variable MISSING is not set"),
        ("X-Api-Key: env:1BAD", "is not an environment variable name"),
        ("X-Team:", "must be 1-8192 printable ASCII"),
        ("X-Api-Key: env:MULTILINE", "the value (not shown: it is secret) must be"),
    ],
)
def test_rejected_headers(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as raised:
        parse_headers([spec], {"MULTILINE": "sec\nret"})
    assert str(raised.value).startswith("--header")
    assert "sec\nret" not in str(raised.value) and "Bearer abc" not in str(raised.value)


def test_a_header_given_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="--header x-team is given twice"):
        parse_headers(["X-Team: a", "x-team: b"], {})
