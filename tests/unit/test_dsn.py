"""DSN secrets are found exactly where libpq finds them, so redaction hides every password."""

from __future__ import annotations

from urllib.parse import quote

import psycopg2.extensions
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from wal2http.config.dsn import dsn_password, dsn_secret_values, redact_dsn
from wal2http.errors import ConfigError
from wal2http.pg.connection import connection_params

# Any printable text, including quotes, backslashes, spaces, '@', ':', '/', '?', '&', '%' and non-ASCII.
passwords = st.text(
    st.characters(codec="utf-8", min_codepoint=32, exclude_characters="\x7f"), min_size=1, max_size=30
)


def keyword_value(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def libpq_password(dsn: str) -> str | None:
    return psycopg2.extensions.parse_dsn(dsn).get("password")


@pytest.mark.parametrize(
    ("dsn", "redacted"),
    [
        ("postgresql://app:s3cret@db:5432/app", "postgresql://app:***@db:5432/app"),
        ("postgres://app:p%40ss@db/app?sslmode=require", "postgres://app:***@db/app?sslmode=require"),
        (
            "postgresql://app@db/app?password=x%2By&sslmode=require",
            "postgresql://app@db/app?password=***&sslmode=require",
        ),
        ("postgresql://u:pa?ss@h1:5432,h2:5433/db", "postgresql://u:***@h1:5432,h2:5433/db"),
        ("host=db password=secret user=app", "host=db password=*** user=app"),
        ("host=db password = 'it\\'s me' user=app", "host=db password = '***' user=app"),
        ("host=db sslpassword=keypass sslkey=/k", "host=db sslpassword=*** sslkey=/k"),
        ("postgresql://app@db/app", "postgresql://app@db/app"),
        ("host=db user=app", "host=db user=app"),
    ],
)
def test_redaction_examples(dsn: str, redacted: str) -> None:
    assert redact_dsn(dsn) == redacted


@given(passwords)
def test_keyword_dsn_matches_libpq(password: str) -> None:
    dsn = f"host=db.example.com user=app password={keyword_value(password)} dbname=app"
    assert dsn_password(dsn) == libpq_password(dsn) == password
    assert password in dsn_secret_values(dsn)
    redacted = redact_dsn(dsn)
    assert libpq_password(redacted) == "***"
    assume(password not in "host=db.example.com user=app password='***' dbname=app")
    assert password not in redacted


@given(passwords, st.booleans())
def test_url_dsn_matches_libpq(password: str, in_query: bool) -> None:
    encoded = quote(password, safe="")
    if in_query:
        dsn = f"postgresql://app@db.example.com:5432/app?sslmode=prefer&password={encoded}"
    else:
        dsn = f"postgresql://app:{encoded}@db.example.com:5432/app?sslmode=prefer"
    assert dsn_password(dsn) == libpq_password(dsn) == password
    assert {password, encoded} <= set(dsn_secret_values(dsn))
    redacted = redact_dsn(dsn)
    assert libpq_password(redacted) == "***"
    assume(password not in "postgresql://app:***@db.example.com:5432/app?sslmode=prefer&password=***")
    assert password not in redacted and encoded not in redacted


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("host=db passwordhunter22", 'missing "=" after "..." in connection info string'),
        (
            "postgresql://u:hunter22@[::1/db",
            'matching "]" in IPv6 host address in URI: "postgresql://u:***@[::1/db"',
        ),
        ("host=db bogus=hunter22", 'invalid connection option "bogus"'),
        ("postgresql://u:hunter22@h/db?bogus=hunter22", 'invalid URI query parameter: "bogus"'),
        ("host=db password='hunter22", "unterminated quoted string"),
    ],
)
def test_libpq_parse_errors_do_not_quote_the_dsn(dsn: str, message: str) -> None:
    """libpq quotes pieces of a DSN it cannot parse, even the whole URI: those are hidden or redacted."""
    with pytest.raises(ConfigError) as raised:
        connection_params(dsn)
    assert message in str(raised.value) and "hunter22" not in str(raised.value)
