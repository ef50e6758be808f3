"""Verifying fal's webhook signatures (Ed25519 over a digest of the raw body, keys from a JWKS).

The signed message is `request_id \\n user_id \\n timestamp \\n sha256(body).hex()`; any key of
the JWKS may have signed it. Keys are cached for at most 24 h (fal's advice) and fetched again
at once when no cached key verifies, so a key rotation costs one fetch, not an outage; that
re-fetch is rate-limited so forged traffic cannot make us hammer the JWKS host.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import time
from collections.abc import Mapping

import httpx
import nacl.exceptions
from nacl.signing import VerifyKey

TIMESTAMP_TOLERANCE = 300.0
HEADER_REQUEST_ID = "x-fal-webhook-request-id"
HEADER_USER_ID = "x-fal-webhook-user-id"
HEADER_TIMESTAMP = "x-fal-webhook-timestamp"
HEADER_SIGNATURE = "x-fal-webhook-signature"


class InvalidSignature(Exception):
    """The callback is not provably from fal; its reason is safe to show."""


def signed_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return f"{request_id}\n{user_id}\n{timestamp}\n{digest}".encode()


def _public_key(jwk: object) -> VerifyKey | None:
    # libsodium (PyNaCl, as in fal's own verification example): 55 µs a check where
    # `cryptography`'s Ed25519 took 104, one per callback (bench/README.md, issue 17).
    if not isinstance(jwk, dict) or not isinstance(jwk.get("x"), str):
        return None
    x: str = jwk["x"]
    try:
        raw = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
        return VerifyKey(raw)
    except (ValueError, TypeError, binascii.Error):
        return None


class JwksCache:
    def __init__(
        self,
        http: httpx.AsyncClient,
        url: str,
        *,
        max_age: float = 24 * 3600,
        min_refetch_interval: float = 30.0,
    ) -> None:
        self._http = http
        self._url = url
        self._max_age = max_age
        self._min_refetch_interval = min_refetch_interval
        self._keys: list[VerifyKey] = []
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def keys(self, *, refresh: bool = False) -> list[VerifyKey]:
        now = time.monotonic()
        if self._fresh(now) and not (refresh and self._may_refetch(now)):
            return self._keys
        async with self._lock:
            now = time.monotonic()
            if self._fresh(now) and not (refresh and self._may_refetch(now)):
                return self._keys  # another caller fetched while we waited
            await self._fetch()
            return self._keys

    def _fresh(self, now: float) -> bool:
        return self._fetched_at is not None and now - self._fetched_at < self._max_age

    def _may_refetch(self, now: float) -> bool:
        return self._fetched_at is None or now - self._fetched_at >= self._min_refetch_interval

    async def _fetch(self) -> None:
        try:
            response = await self._http.get(self._url)
            response.raise_for_status()
            jwks = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            if self._keys:
                return  # keep verifying with what we have
            raise InvalidSignature(f"fal's signing keys are unavailable: {exc}") from exc
        keys = [key for jwk in jwks.get("keys", []) if (key := _public_key(jwk)) is not None]
        self._keys = keys
        self._fetched_at = time.monotonic()


class SignatureVerifier:
    def __init__(
        self,
        jwks: JwksCache,
        *,
        tolerance: float = TIMESTAMP_TOLERANCE,
        user_id: str | None = None,
    ) -> None:
        self._jwks = jwks
        self._tolerance = tolerance
        self._user_id = user_id  # ours; None accepts any account's (the URL token decides)

    async def verify(self, headers: Mapping[str, str], body: bytes, *, now: float) -> str:
        """The verified fal request id; raises InvalidSignature otherwise."""
        values = [
            headers.get(name)
            for name in (HEADER_REQUEST_ID, HEADER_USER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE)
        ]
        request_id, user_id, timestamp, signature_hex = values
        if request_id is None or user_id is None or timestamp is None or signature_hex is None:
            raise InvalidSignature("missing X-Fal-Webhook-* signature headers")
        if self._user_id is not None and user_id != self._user_id:
            raise InvalidSignature("the webhook was sent for another fal account")
        try:
            sent_at = int(timestamp)
        except ValueError:
            raise InvalidSignature("the signature timestamp is not an integer") from None
        if abs(now - sent_at) > self._tolerance:
            raise InvalidSignature("the signature timestamp is outside the allowed window")
        try:
            signature = bytes.fromhex(signature_hex)
        except ValueError:
            raise InvalidSignature("the signature is not hexadecimal") from None
        message = signed_message(request_id, user_id, timestamp, body)

        for refresh in (False, True):
            for key in await self._jwks.keys(refresh=refresh):
                try:
                    key.verify(message, signature)
                except (nacl.exceptions.BadSignatureError, ValueError):
                    continue  # another key's, or not 64 bytes
                return request_id
        raise InvalidSignature("no signing key of fal's verifies this signature")
