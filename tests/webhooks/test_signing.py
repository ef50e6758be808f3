from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from app.webhooks import signing
from app.webhooks.signing import WebhookVerificationError


def test_the_standard_webhooks_test_vector() -> None:
    secret = "whsec_plJ3nmyCDGBKInavdOK15jsl"
    at = datetime.fromtimestamp(1731705121, UTC)
    body = b'{"event_type":"ping","data":{"success":true}}'
    headers = signing.sign_headers("msg_loFOjxBNrRLzqYUf", body, [secret], at=at)
    assert headers == {
        "webhook-id": "msg_loFOjxBNrRLzqYUf",
        "webhook-timestamp": "1731705121",
        "webhook-signature": "v1,rAvfW3dJ/X/qxhsaXPOyyCGmRKsaKWcsNccKXlIktD0=",
    }


def test_every_secret_signs_and_each_verifies() -> None:
    one, two = signing.new_secret(), signing.new_secret()
    body = b'{"type":"job.succeeded"}'
    headers = signing.sign_headers("evt_1", body, [one, two], at=datetime.now(UTC))
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (one, two):
        assert signing.verify(secret, body, headers) == {"type": "job.succeeded"}
        assert Webhook(secret).verify(body, headers) == {"type": "job.succeeded"}
    with pytest.raises(WebhookVerificationError):
        signing.verify(signing.new_secret(), body, headers)


def test_a_signature_is_hmac_sha256_of_id_timestamp_body() -> None:
    secret = signing.new_secret()
    at = datetime(2026, 1, 2, tzinfo=UTC)
    headers = signing.sign_headers("evt_x", b"{}", [secret], at=at)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = hmac.new(key, f"evt_x.{int(at.timestamp())}.{{}}".encode(), hashlib.sha256)
    assert headers["webhook-signature"] == "v1," + base64.b64encode(expected.digest()).decode()


def test_verify_refuses_malformed_and_stale_headers() -> None:
    secret = signing.new_secret()
    body = b"{}"
    headers = signing.sign_headers("evt_1", body, [secret], at=datetime.now(UTC))
    with pytest.raises(WebhookVerificationError):
        signing.verify(secret, body, {**headers, "webhook-signature": "garbage"})
    stale = signing.sign_headers("evt_1", body, [secret], at=datetime(2020, 1, 1, tzinfo=UTC))
    with pytest.raises(WebhookVerificationError):
        signing.verify(secret, body, stale)
    with pytest.raises(WebhookVerificationError):
        signing.verify(secret, b'{"tampered": 1}', headers)
