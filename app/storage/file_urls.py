"""Signed, expiring URLs for a `file://` store's objects, served by falrelay itself
(app/api/files.py): `{public_base_url}/files/{key}?expires=<unix>&signature=<hmac>`.

The signature is an HMAC-SHA256 of the key and the expiry under a secret kept in
`service_secrets` (made on first use), so every replica signs and checks alike, and a URL
handed out by one is served by any. It is the only credential: the route asks for no API key,
so a URL can go into an `<img>` tag or a webhook payload.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from enum import StrEnum
from urllib.parse import quote

from app.db.pool import Pool

FILES_PATH = "/files"
KEY_NAME = "file_urls"
SELECT_KEY = "SELECT value FROM service_secrets WHERE name = $1"
INSERT_KEY = """
INSERT INTO service_secrets (name, value) VALUES ($1, $2)
ON CONFLICT (name) DO NOTHING
"""
# Expiries are rounded up to a step (an hour at most), so the URL of an object stays the same
# for that long and browsers reuse what they cached (the console's gallery renders its
# thumbnails' URLs afresh on every page). A URL lives between ttl and ttl + step.
MAX_EXPIRY_STEP_SECONDS = 3600


class Verdict(StrEnum):
    VALID = "valid"
    FORGED = "forged"  # no signature, a malformed one, or one we did not make
    EXPIRED = "expired"


class FileUrls:
    def __init__(self, secret: str, public_base_url: str | None, ttl_seconds: int) -> None:
        self._secret = secret.encode()
        self._base = (public_base_url.rstrip("/") if public_base_url else "") + FILES_PATH
        self._ttl = ttl_seconds
        self._step = max(1, min(MAX_EXPIRY_STEP_SECONDS, ttl_seconds // 10))

    def signature(self, key: str, expires: int) -> str:
        message = f"{expires}\n{key}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def expiry(self, now: float) -> int:
        return math.ceil((now + self._ttl) / self._step) * self._step

    def url(self, key: str, *, now: float) -> str:
        """Relative (`/files/...`) when public_base_url is unset."""
        expires = self.expiry(now)
        signature = self.signature(key, expires)
        return f"{self._base}/{quote(key, safe='/')}?expires={expires}&signature={signature}"

    def check(self, key: str, expires: str | None, signature: str | None, *, now: float) -> Verdict:
        # At most 12 digits: int() of a long digit string costs quadratic time.
        if not expires or len(expires) > 12 or not expires.isascii() or not expires.isdigit():
            return Verdict.FORGED
        if not signature:
            return Verdict.FORGED
        # Bytes: compare_digest refuses str with non-ASCII characters, and a URL may carry any.
        expected = self.signature(key, int(expires)).encode()
        if not hmac.compare_digest(expected, signature.encode()):
            return Verdict.FORGED
        return Verdict.EXPIRED if int(expires) <= now else Verdict.VALID


async def load(pool: Pool, public_base_url: str | None, ttl_seconds: int) -> FileUrls:
    await pool.execute(INSERT_KEY, KEY_NAME, secrets.token_hex(32))
    secret: str = await pool.fetchval(SELECT_KEY, KEY_NAME)
    return FileUrls(secret, public_base_url, ttl_seconds)
