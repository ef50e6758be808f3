from __future__ import annotations

import time

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.fal.signatures import InvalidSignature, JwksCache, SignatureVerifier
from tests.fal.signing import fal_headers, jwk

BODY = b'{"request_id":"req-1","status":"OK","payload":{"images":[]}}'


class JwksHost:
    """A JWKS endpoint over httpx.MockTransport that counts its fetches."""

    def __init__(self, *keys: Ed25519PrivateKey) -> None:
        self.keys = list(keys)
        self.fetches = 0
        self.down = False

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        if self.down:
            return httpx.Response(503)
        return httpx.Response(
            200, json={"keys": [jwk(k, f"k{i}") for i, k in enumerate(self.keys)]}
        )

    def verifier(self, user_id: str | None = None, **kwargs: float) -> SignatureVerifier:
        http = httpx.AsyncClient(transport=httpx.MockTransport(self.handler))
        return SignatureVerifier(
            JwksCache(http, "http://jwks.test/.well-known/jwks.json", **kwargs), user_id=user_id
        )


async def test_a_genuine_signature_verifies_and_yields_the_request_id() -> None:
    key = Ed25519PrivateKey.generate()
    verifier = JwksHost(key).verifier()
    headers = fal_headers(key, BODY)
    assert await verifier.verify(_lower(headers), BODY, now=time.time()) == "req-1"


async def test_any_key_of_the_set_may_have_signed() -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    verifier = JwksHost(old, new).verifier()
    for key in (old, new):
        assert await verifier.verify(_lower(fal_headers(key, BODY)), BODY, now=time.time())


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


@pytest.mark.parametrize(
    "tamper",
    [
        "body",
        "request id",
        "user id",
        "timestamp",
        "signature",
        "wrong key",
        "missing header",
        "stale",
        "future",
        "not hex",
        "short",
        "not a number",
    ],
)
async def test_anything_but_a_genuine_signature_is_refused(tamper: str) -> None:
    key = Ed25519PrivateKey.generate()
    verifier = JwksHost(key).verifier()
    now = time.time()
    body = BODY
    signer = Ed25519PrivateKey.generate() if tamper == "wrong key" else key
    timestamp = {"stale": int(now) - 301, "future": int(now) + 301}.get(tamper)
    headers = _lower(fal_headers(signer, BODY, timestamp=timestamp))
    match tamper:
        case "body":
            body = BODY.replace(b"OK", b"ER")
        case "request id":
            headers["x-fal-webhook-request-id"] = "req-2"
        case "user id":
            headers["x-fal-webhook-user-id"] = "someone-else"
        case "timestamp":
            headers["x-fal-webhook-timestamp"] = str(int(headers["x-fal-webhook-timestamp"]) - 1)
        case "signature":
            signature = bytearray(bytes.fromhex(headers["x-fal-webhook-signature"]))
            signature[0] ^= 1
            headers["x-fal-webhook-signature"] = signature.hex()
        case "missing header":
            del headers["x-fal-webhook-user-id"]
        case "not hex":
            headers["x-fal-webhook-signature"] = "zz" * 64
        case "short":  # hexadecimal, but half an Ed25519 signature
            headers["x-fal-webhook-signature"] = headers["x-fal-webhook-signature"][:64]
        case "not a number":
            headers["x-fal-webhook-timestamp"] = "yesterday"
    with pytest.raises(InvalidSignature):
        await verifier.verify(headers, body, now=now)


async def test_the_timestamp_window_is_300_seconds_either_way() -> None:
    key = Ed25519PrivateKey.generate()
    verifier = JwksHost(key).verifier()
    now = time.time()
    for skew in (-300, 300):
        headers = _lower(fal_headers(key, BODY, timestamp=int(now) + skew))
        assert await verifier.verify(headers, BODY, now=int(now))


async def test_keys_are_cached_and_refetched_when_an_unknown_key_signs() -> None:
    old = Ed25519PrivateKey.generate()
    host = JwksHost(old)
    verifier = host.verifier(min_refetch_interval=0)
    for _ in range(3):
        await verifier.verify(_lower(fal_headers(old, BODY)), BODY, now=time.time())
    assert host.fetches == 1

    rotated = Ed25519PrivateKey.generate()
    host.keys = [rotated]
    assert await verifier.verify(_lower(fal_headers(rotated, BODY)), BODY, now=time.time())
    assert host.fetches == 2


async def test_forged_traffic_cannot_make_us_hammer_the_jwks_host() -> None:
    host = JwksHost(Ed25519PrivateKey.generate())
    verifier = host.verifier(min_refetch_interval=60)
    forger = Ed25519PrivateKey.generate()
    for _ in range(5):
        with pytest.raises(InvalidSignature):
            await verifier.verify(_lower(fal_headers(forger, BODY)), BODY, now=time.time())
    assert host.fetches == 1


async def test_an_unreachable_jwks_refuses_rather_than_accepts() -> None:
    host = JwksHost(Ed25519PrivateKey.generate())
    host.down = True
    with pytest.raises(InvalidSignature, match="unavailable"):
        await host.verifier().verify(_lower(fal_headers(host.keys[0], BODY)), BODY, now=time.time())


async def test_with_our_fal_user_id_set_another_accounts_webhook_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    host = JwksHost(key)
    ours = host.verifier(user_id="user-1")
    assert await ours.verify(_lower(fal_headers(key, BODY)), BODY, now=time.time()) == "req-1"
    theirs = _lower(fal_headers(key, BODY, user_id="someone-else"))
    with pytest.raises(InvalidSignature, match="another fal account"):
        await ours.verify(theirs, BODY, now=time.time())
    # Unset, the account is not checked (the callback URL's token ties it to our job).
    assert await host.verifier().verify(theirs, BODY, now=time.time()) == "req-1"
