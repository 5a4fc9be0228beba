"""Standard Webhooks signatures made by wal2http verify with the reference library."""

from __future__ import annotations

import base64
import os
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from wal2http.config.signing import decode_secret
from wal2http.sinks.signing import Signer


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def headers(msg_id: str, timestamp: int, signature: str) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def test_one_secret_verifies_and_matches_the_reference_signature() -> None:
    secret = new_secret()
    body = b'{"id":"00000000016B3800-1","op":"insert","new":{"name":"\xc3\xa9t\xc3\xa9"}}'
    now = int(time.time())
    signature = Signer([decode_secret(secret)]).sign("00000000016B3800-1", now, body)
    assert Webhook(secret).verify(body, headers("00000000016B3800-1", now, signature))["op"] == "insert"
    reference = Webhook(secret).sign("00000000016B3800-1", datetime.fromtimestamp(now, UTC), body.decode())
    assert signature == reference


def test_rotation_signs_with_every_secret() -> None:
    new, old, other = new_secret(), new_secret(), new_secret()
    body = b'[{"id":"A-1"},{"id":"A-2"}]'
    now = int(time.time())
    signature = Signer([decode_secret(new), decode_secret(old)]).sign("A-1--A-2", now, body)
    assert len(signature.split(" ")) == 2
    assert all(part.startswith("v1,") for part in signature.split(" "))
    for secret in (new, old):
        assert Webhook(secret).verify(body, headers("A-1--A-2", now, signature)) == [
            {"id": "A-1"},
            {"id": "A-2"},
        ]
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers("A-1--A-2", now, signature))


@pytest.mark.parametrize("change", ["body", "id", "timestamp"])
def test_tampering_fails(change: str) -> None:
    secret = new_secret()
    body, msg_id, now = b'{"id":"B-1","new":{"amount":"10.00"}}', "B-1", int(time.time())
    signature = Signer([decode_secret(secret)]).sign(msg_id, now, body)
    if change == "body":
        body = body.replace(b"10.00", b"99.00")
    elif change == "id":
        msg_id = "B-2"
    else:
        now -= 1
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers(msg_id, now, signature))


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", "does not start with whsec_"),
        ("whsec_not base64!", "standard base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "5-byte key"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "65-byte key"),
    ],
)
def test_bad_secrets_are_refused_without_being_quoted(secret: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as raised:
        decode_secret(secret)
    assert secret not in str(raised.value)


def test_unpadded_secrets_decode_like_the_reference_library() -> None:
    key = os.urandom(25)
    unpadded = "whsec_" + base64.b64encode(key).decode().rstrip("=")
    assert decode_secret(unpadded) == key
    assert repr(Signer([key])) == "Signer(1 keys)"
