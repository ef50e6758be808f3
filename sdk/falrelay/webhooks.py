"""For receivers: check that a webhook is a genuine, fresh falrelay delivery.

falrelay signs the Standard Webhooks v1 way: `webhook-signature` holds one `v1,<base64
HMAC-SHA256>` of `{webhook-id}.{webhook-timestamp}.{body}` per secret that is active (two
during a rotation), keyed by the base64 bytes after `whsec_`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence

from pydantic import TypeAdapter, ValidationError

from falrelay.errors import WebhookVerificationError
from falrelay.models import Event

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300  # seconds either way: replays of old deliveries are refused

_EVENT: TypeAdapter[Event] = TypeAdapter(Event)

__all__ = ["DEFAULT_TOLERANCE", "WebhookVerificationError", "sign", "verify"]


def verify(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str | Sequence[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> Event:
    """The event in a delivery, once its signature and timestamp check out.

    `body` must be the raw bytes as received (parsing and re-serialising changes them).
    `secret` is the endpoint's `whsec_...` secret, or several (e.g. while you roll yours
    out): any one of them may match. Raises `WebhookVerificationError` otherwise. The event's
    `id` is the `webhook-id`: deduplicate on it, since a retried delivery repeats it.
    """
    raw = body.encode() if isinstance(body, str) else body
    lowered = {name.lower(): value for name, value in headers.items()}
    try:
        message_id = lowered["webhook-id"]
        timestamp_text = lowered["webhook-timestamp"]
        signatures = lowered["webhook-signature"]
    except KeyError as missing:
        raise WebhookVerificationError(f"missing header {missing.args[0]}") from None
    # Digits only, and few: int() takes "+1_0" and 4,000-digit numbers, and a huge one makes
    # the tolerance check raise OverflowError instead of refusing the request.
    if not (timestamp_text.isascii() and timestamp_text.isdigit() and len(timestamp_text) <= 12):
        raise WebhookVerificationError("webhook-timestamp is not a Unix time")
    timestamp = int(timestamp_text)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError("webhook-timestamp is outside the tolerance")

    keys = [_key(value) for value in ([secret] if isinstance(secret, str) else secret)]
    expected = [_signature(key, message_id, timestamp, raw) for key in keys]
    offered = [
        value.encode()
        for version, _, value in (entry.partition(",") for entry in signatures.split())
        if version == "v1"
    ]
    # Every pair is compared, in constant time each, so timing says nothing about which
    # secret or which entry came close.
    matched = False
    for candidate in offered:
        for signature in expected:
            matched |= hmac.compare_digest(candidate, signature)
    if not matched:
        raise WebhookVerificationError("no signature matches")

    try:
        event = _EVENT.validate_json(raw)
    except ValidationError as exc:
        raise WebhookVerificationError(f"signed, but not a falrelay event: {exc}") from None
    event.id = message_id
    return event


def sign(message_id: str, timestamp: int, body: bytes, secret: str) -> str:
    """One `v1,...` signature entry, as falrelay sends it (for tests of receivers)."""
    return "v1," + _signature(_key(secret), message_id, timestamp, body).decode()


def _key(secret: str) -> bytes:
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error:
        # A configuration mistake, not a forged request: say so rather than refuse deliveries.
        raise ValueError("a webhook secret is whsec_ followed by base64") from None


def _signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> bytes:
    signed = b"%s.%d.%s" % (message_id.encode(), timestamp, body)
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
