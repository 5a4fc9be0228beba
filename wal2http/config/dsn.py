"""Find the secrets inside a libpq DSN (URL or key=value) to redact them, following libpq's parser."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

SECRET_KEYWORDS = frozenset({"password", "sslpassword"})
URL_PREFIXES = ("postgresql://", "postgres://")
REDACTED = "***"

_KEYWORD_RE = re.compile(r"\s*([^\s=]+)\s*=\s*")


@dataclass(frozen=True)
class SecretSpan:
    """One secret value inside a DSN: where its text is, and the value libpq reads from it."""

    start: int
    end: int
    raw: str  # the characters in the DSN (percent-encoded or backslash-escaped)
    value: str  # what libpq uses


def is_url(dsn: str) -> bool:
    return dsn.startswith(URL_PREFIXES)


def secret_spans(dsn: str) -> list[SecretSpan]:
    """Every password and sslpassword in ``dsn``, in order."""
    return _url_spans(dsn) if is_url(dsn) else _keyword_spans(dsn)


def dsn_secret_values(dsn: str) -> list[str]:
    """The secret values as written in the DSN and as libpq decodes them, for log scrubbing."""
    values: list[str] = []
    for span in secret_spans(dsn):
        values.extend(v for v in (span.raw, span.value) if v and v not in values)
    return values


def dsn_password(dsn: str) -> str | None:
    """The first secret value of ``dsn`` as libpq reads it, or None."""
    spans = [s for s in secret_spans(dsn) if s.value]
    return spans[0].value if spans else None


def redact_dsn(dsn: str) -> str:
    """The DSN with every password replaced by ``***`` (``postgresql://app:***@db:5432/app``)."""
    for span in reversed(secret_spans(dsn)):
        dsn = dsn[: span.start] + REDACTED + dsn[span.end :]
    return dsn


def _keyword_spans(dsn: str) -> list[SecretSpan]:
    """libpq's conninfo_parse: ``key = value``, values unquoted or in single quotes, ``\\`` escapes."""
    spans: list[SecretSpan] = []
    pos = 0
    while pos < len(dsn):
        match = _KEYWORD_RE.match(dsn, pos)
        if match is None:
            break  # libpq rejects the rest; nothing more to find
        keyword, pos = match.group(1), match.end()
        raw_start, raw_end, value, pos = _keyword_value(dsn, pos)
        if keyword in SECRET_KEYWORDS:
            spans.append(SecretSpan(raw_start, raw_end, dsn[raw_start:raw_end], value))
    return spans


def _keyword_value(dsn: str, pos: int) -> tuple[int, int, str, int]:
    """The value at ``pos``: start and end of its text (inside any quotes), decoded value, next position."""
    chars: list[str] = []
    quoted = dsn.startswith("'", pos)
    start = pos = pos + 1 if quoted else pos
    while pos < len(dsn) and (dsn[pos] != "'" if quoted else not dsn[pos].isspace()):
        if dsn[pos] == "\\" and pos + 1 < len(dsn):
            pos += 1
        chars.append(dsn[pos])
        pos += 1
    end = pos
    return start, end, "".join(chars), pos + 1 if quoted and pos < len(dsn) else pos


def _url_spans(dsn: str) -> list[SecretSpan]:
    """libpq's conninfo_uri_parse: ``scheme://[user[:password]@]hosts[/db][?key=value&...]``."""
    spans: list[SecretSpan] = []
    begin = dsn.index("://") + 3
    # libpq looks for the credentials up to the first '@' before any '/'.
    at = begin
    while at < len(dsn) and dsn[at] not in "@/":
        at += 1
    host_start = begin
    if at < len(dsn) and dsn[at] == "@":
        colon = dsn.find(":", begin, at)
        if colon != -1:
            spans.append(SecretSpan(colon + 1, at, dsn[colon + 1 : at], unquote(dsn[colon + 1 : at])))
        host_start = at + 1
    query = dsn.find("?", host_start)
    if query == -1:
        return spans
    pos = query + 1
    for part in dsn[query + 1 :].split("&"):
        key, sep, value = part.partition("=")
        if sep and unquote(key) in SECRET_KEYWORDS:
            start = pos + len(key) + 1
            spans.append(SecretSpan(start, start + len(value), value, unquote(value)))
        pos += len(part) + 1
    return spans
