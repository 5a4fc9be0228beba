"""Input rules shared by the configuration: identifiers, UUIDs, URLs, ranges, TLS files, hosts."""

from __future__ import annotations

import ipaddress
import re
import ssl
import uuid
from urllib.parse import urlsplit

from wal2http.errors import ConfigError

# Unquoted identifiers only: pgoutput folds publication_names to lower case like SQL does.
IDENTIFIER_RE = re.compile(r"^[a-z_][a-z0-9_$]{0,62}$")
MAX_URL_LENGTH = 2048
BEARER_TOKEN_RE = re.compile(r"^[\x21-\x7e]{1,4096}$")


class _EncryptedKey(Exception):
    pass


def _no_passphrase() -> str:
    raise _EncryptedKey()  # rather than OpenSSL prompting on a terminal a service does not have


def check_tls_files(ca_file: str | None, client_cert: str | None, client_key: str | None) -> None:
    """Load the CA and client certificate files once, so a mistake is a usage error at start."""
    if client_key and not client_cert:
        raise ConfigError("--client-key needs --client-cert")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except OSError as e:  # ssl.SSLError is an OSError too
            reason = "holds no PEM certificate" if isinstance(e, ssl.SSLError) else e.strerror or str(e)
            raise ConfigError(f"cannot use --ca-file {ca_file!r}: {reason}") from None
    if client_cert:
        try:
            context.load_cert_chain(client_cert, client_key or None, password=_no_passphrase)
        except _EncryptedKey:
            raise ConfigError(
                f"--client-key {client_key or client_cert!r} is encrypted: wal2http cannot ask for a "
                "passphrase; give it an unencrypted key readable only by its user"
            ) from None
        except OSError as e:
            reason = (
                "not a PEM certificate with its matching private key"
                if isinstance(e, ssl.SSLError) else e.strerror or str(e)
            )
            which = f"--client-cert {client_cert!r}"
            if client_key:
                which += f" and --client-key {client_key!r}"
            raise ConfigError(f"cannot use {which}: {reason}") from None


def check_range(option: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{option} must be between {low:g} and {high:g}, not {value:g}")


def validate_identifier(value: str, option: str) -> None:
    """A publication, schema or table name as wal2http accepts it: an unquoted PostgreSQL identifier."""
    if not IDENTIFIER_RE.match(value):
        raise ConfigError(
            f"invalid {option} {value!r}: use 1-63 lower-case letters, digits, _ or $, "
            "not starting with a digit or $"
        )


def validate_uuid(value: str, option: str) -> str:
    """The canonical form of a UUID option (any case, with or without hyphens or braces)."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ConfigError(
            f"{option} must be a UUID, not {value!r} (like 3fa85f64-5717-4562-b3fc-2c963f66afa6)"
        ) from None


def validate_url(url: str, option: str) -> None:
    """http or https, a host, a valid port, no credentials, no white space or control characters."""
    if len(url) > MAX_URL_LENGTH or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ConfigError(
            f"{option} must be a URL of at most {MAX_URL_LENGTH} characters, "
            "without spaces or control characters"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{option} must start with http:// or https://")
    if not parts.hostname:
        raise ConfigError(f"{option} has no host")
    if "@" in parts.netloc:
        raise ConfigError(
            f"{option} must not contain credentials (user:password@): "
            f"use WAL2HTTP_HTTP_BEARER_TOKEN or --header 'Name: env:VARIABLE'"
        )
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(f"{option} has an invalid port: use 1-65535")


def public_url(url: str) -> str:
    """The URL without credentials, query or fragment (they may hold tokens), for showing."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    try:
        if parts.port is not None:
            netloc += f":{parts.port}"
    except ValueError:
        pass
    hidden = " (query hidden)" if parts.query else ""
    return f"{parts.scheme}://{netloc}{parts.path}{hidden}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bearer_token(token: str, source: str) -> None:
    """A token sent as ``Authorization: Bearer``: 1-4096 printable ASCII characters, never quoted back."""
    if not BEARER_TOKEN_RE.match(token):
        raise ConfigError(
            f"{source} must be 1-4096 printable ASCII characters without spaces (the value is not shown)"
        )
