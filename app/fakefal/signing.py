"""The fake's webhook signing key: fal's signature scheme, with a key of its own.

fal signs `request_id \\n user_id \\n timestamp \\n sha256(body).hex()` with Ed25519 and publishes
the public keys as a JWKS; receivers verify against any key in it (protocol notes 2.3).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from nacl.signing import SigningKey


def signed_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    return f"{request_id}\n{user_id}\n{timestamp}\n{hashlib.sha256(body).hexdigest()}".encode()


class WebhookSigner:
    """A fresh key per instance: nothing to store, and nothing a real fal key could verify."""

    def __init__(self) -> None:
        self._key = SigningKey.generate()
        public = bytes(self._key.verify_key)
        self.kid = hashlib.sha256(public).hexdigest()[:16]
        self._x = base64.urlsafe_b64encode(public).rstrip(b"=").decode()

    def jwks(self) -> dict[str, Any]:
        return {
            "keys": [
                {"kty": "OKP", "crv": "Ed25519", "x": self._x, "kid": self.kid, "use": "sig"},
            ]
        }

    def headers(self, request_id: str, user_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        """The four `X-Fal-Webhook-*` headers for one delivery attempt."""
        message = signed_message(request_id, user_id, str(timestamp), body)
        signature = self._key.sign(message).signature
        return {
            "X-Fal-Webhook-Request-Id": request_id,
            "X-Fal-Webhook-User-Id": user_id,
            "X-Fal-Webhook-Timestamp": str(timestamp),
            "X-Fal-Webhook-Signature": signature.hex(),
        }
