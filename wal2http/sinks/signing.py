"""Standard Webhooks v1 signatures: HMAC-SHA256 over ``{id}.{timestamp}.{body}`` with ``whsec_`` keys."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

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


class Signer:
    """Signs a request with every configured key, so receivers can rotate secrets without a gap."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("a Signer needs at least one key")
        self._keys = tuple(keys)

    def sign(self, msg_id: str, timestamp: int, body: bytes) -> str:
        """The ``webhook-signature`` value: ``v1,<base64>`` per key, separated by spaces."""
        content = f"{msg_id}.{timestamp}.".encode() + body
        return " ".join(
            "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode("ascii")
            for key in self._keys
        )

    def __repr__(self) -> str:
        return f"Signer({len(self._keys)} keys)"


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
