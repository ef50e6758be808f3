"""Clients, their keys, and turning a bearer key into a client id."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from app import ids
from app.auth import keys, repository
from app.clients.limits import UNLIMITED, LimitDefaults, Limits, effective
from app.db.pool import Pool
from app.webhooks import signing


@dataclass(frozen=True, slots=True)
class Principal:
    client_id: uuid.UUID
    # As they stood when the key was resolved (cached with it, FALRELAY_API_KEY_CACHE_SECONDS).
    limits: Limits = UNLIMITED


async def create_client(pool: Pool, name: str) -> tuple[uuid.UUID, str]:
    """A new client and its first key; the key is returned once and never stored."""
    client_id = ids.uuid7()
    key = keys.generate_key()
    await repository.insert_client_with_key(
        pool,
        client_id=client_id,
        name=name,
        key_id=ids.uuid7(),
        key_hash=keys.hash_key(key),
        prefix=keys.shown_prefix(key),
        # It signs deliveries to jobs' own callback_url, so it exists before the first job.
        webhook_secret=signing.new_secret(),
    )
    return client_id, key


async def create_key(pool: Pool, client_id: uuid.UUID) -> str:
    key = keys.generate_key()
    await repository.insert_key(
        pool,
        client_id=client_id,
        key_id=ids.uuid7(),
        key_hash=keys.hash_key(key),
        prefix=keys.shown_prefix(key),
    )
    return key


async def revoke_key(pool: Pool, key: str) -> bool:
    return await repository.revoke_key(pool, keys.hash_key(key))


class KeyResolver:
    """Resolves bearer keys to clients, remembering good answers for `ttl` seconds.

    The cache takes a database round trip off every authenticated request. Its price: a revoked
    key keeps working in this process for at most `ttl` seconds, and a client's new limits
    apply within as long. Unknown keys are not cached, so guessing keys cannot fill memory; the
    cache is also bounded.
    """

    def __init__(
        self,
        pool: Pool,
        *,
        ttl: float,
        defaults: LimitDefaults | None = None,
        max_entries: int = 10_000,
    ) -> None:
        self._pool = pool
        self._ttl = ttl
        self._defaults = defaults or LimitDefaults()
        self._max_entries = max_entries
        self._cache: dict[bytes, tuple[Principal, float]] = {}

    async def resolve(self, key: str) -> Principal | None:
        key_hash = keys.hash_key(key)
        now = time.monotonic()
        hit = self._cache.get(key_hash)
        if hit is not None and hit[1] > now:
            return hit[0]
        row = await repository.find_client_by_key(self._pool, key_hash)
        if row is None:
            self._cache.pop(key_hash, None)
            return None
        principal = Principal(row["client_id"], effective(row, self._defaults))
        if self._ttl > 0:
            if len(self._cache) >= self._max_entries:
                self._cache.clear()
            self._cache[key_hash] = (principal, now + self._ttl)
        return principal
