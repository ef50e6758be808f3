"""The URL fal calls back for a job, with a token only this service can make.

fal signs every customer's webhooks with the same keys, so a valid signature proves a webhook
came from fal, not that it answers our request for this job. Anyone who learned a job id
could submit to fal from their own account with our callback URL. The token — an HMAC of
the job id under a key kept in the database (so every replica shares it) — makes the URL
unguessable: a webhook at a URL we did not hand out is refused before it touches the job.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import quote

from app.db.pool import Pool

KEY_NAME = "fal_callback"
SELECT_KEY = "SELECT value FROM service_secrets WHERE name = $1"
# Made by the migration; this is for a database migrated before that, or emptied by hand.
INSERT_KEY = """
INSERT INTO service_secrets (name, value) VALUES ($1, $2)
ON CONFLICT (name) DO NOTHING
"""


class CallbackUrls:
    def __init__(self, key: str, public_base_url: str | None) -> None:
        self._key = key.encode()
        self._base = public_base_url.rstrip("/") if public_base_url else None

    def token(self, public_job_id: str) -> str:
        return hmac.new(self._key, public_job_id.encode(), hashlib.sha256).hexdigest()[:32]

    def is_ours(self, public_job_id: str, token: str) -> bool:
        # Bytes: compare_digest refuses str with non-ASCII characters, and a URL may carry any.
        return hmac.compare_digest(self.token(public_job_id).encode(), token.encode())

    def for_job(self, public_job_id: str, model: str | None = None) -> str | None:
        """Where fal should POST its webhook for a job; None in poll mode. The URL names the
        job's model too: it lets fal's answer be recorded in one statement (the event's files
        need the model's output schema). The token does not cover it: the statement checks it
        against the job's, and a wrong one only takes the longer way (app.jobs.callbacks)."""
        if self._base is None:
            return None
        url = f"{self._base}/callbacks/fal/{public_job_id}/{self.token(public_job_id)}"
        return url if model is None else f"{url}?model={quote(model)}"


async def load(pool: Pool, public_base_url: str | None) -> CallbackUrls:
    await pool.execute(INSERT_KEY, KEY_NAME, secrets.token_hex(32))
    key: str = await pool.fetchval(SELECT_KEY, KEY_NAME)
    return CallbackUrls(key, public_base_url)


class CallbackUrlSource:
    """Loads the key on first use, so a process starts (and reports unready) while the
    database is down or not yet migrated."""

    def __init__(self, pool: Pool, public_base_url: str | None) -> None:
        self._pool = pool
        self._public_base_url = public_base_url
        self._urls: CallbackUrls | None = None

    async def get(self) -> CallbackUrls:
        if self._urls is None:
            self._urls = await load(self._pool, self._public_base_url)
        return self._urls
