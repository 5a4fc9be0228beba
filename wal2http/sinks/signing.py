"""Standard Webhooks v1 signatures: HMAC-SHA256 over ``{id}.{timestamp}.{body}`` with ``whsec_`` keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence


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
