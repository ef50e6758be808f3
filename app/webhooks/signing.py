"""Standard Webhooks v1 signatures (HMAC-SHA256 over `id.timestamp.body`), via the
`standardwebhooks` package, and the secrets behind them."""

from __future__ import annotations

import base64
import secrets as random_secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

SECRET_PREFIX = "whsec_"
# Active secrets an endpoint (or a client's default) holds at most: the current one and the
# two newest still in their grace period. Each signs every delivery, so this bounds the
# `webhook-signature` header and the signing work however often a secret is rotated; a
# rotation beyond it ends the oldest grace period early.
MAX_ACTIVE_SECRETS = 3

__all__ = ["WebhookVerificationError", "new_secret", "sign_headers", "verify"]


def new_secret() -> str:
    """24 random bytes, base64, `whsec_` prefix: the Standard Webhooks format."""
    return SECRET_PREFIX + base64.b64encode(random_secrets.token_bytes(24)).decode()


@lru_cache(maxsize=4096)
def _signer(secret: str) -> Webhook:
    return Webhook(secret)


def sign_headers(
    message_id: str, body: bytes, secrets: Iterable[str], *, at: datetime
) -> dict[str, str]:
    """The three `webhook-*` headers; one `v1,` signature per secret (rotation overlap)."""
    text = body.decode()
    signatures = " ".join(_signer(secret).sign(message_id, at, text) for secret in secrets)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.astimezone(UTC).timestamp())),
        "webhook-signature": signatures,
    }


def verify(secret: str, body: bytes | str, headers: Mapping[str, str]) -> Any:
    """For receivers: the parsed body of a genuine falrelay delivery.

    Raises `WebhookVerificationError` for a missing header, a timestamp more than 5 minutes
    off, or no matching signature. Deduplicate on the `webhook-id` header: a retry of the same
    event carries the same id.
    """
    try:
        return Webhook(secret).verify(body, dict(headers))
    except ValueError as exc:  # a malformed signature entry makes the library raise this
        raise WebhookVerificationError("Malformed signature header") from exc
