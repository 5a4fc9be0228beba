"""Standard Webhooks signing secrets: ``whsec_<base64>`` keys, decoded and checked once at start."""

from __future__ import annotations

import base64
import binascii

from wal2http.config.secrets import SIGNING_SECRET, Secret
from wal2http.errors import ConfigError

SECRET_PREFIX = "whsec_"
# The spec asks for keys of 24 to 64 bytes; a shorter one is too weak, a longer one is someone's mistake.
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; ValueError says what is wrong without quoting it."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"does not start with {SECRET_PREFIX}")
    text = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"is not {SECRET_PREFIX} followed by standard base64") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(f"holds a {len(key)}-byte key; use {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes")
    return key


def signing_keys(secrets: tuple[Secret, ...]) -> list[bytes]:
    """The HMAC keys of the signing secrets; ConfigError names the faulty one by position only."""
    keys = []
    for n, secret in enumerate(secrets, 1):
        try:
            keys.append(decode_secret(secret.reveal()))
        except ValueError as e:
            which = f"secret {n} of {len(secrets)}" if len(secrets) > 1 else "the secret"
            raise ConfigError(
                f"signing secret ({SIGNING_SECRET.describe()}): {which} {e} "
                f"(expected {SECRET_PREFIX}<base64>, several separated by spaces)"
            ) from None
    return keys
