"""SQL for clients and API keys."""

from __future__ import annotations

import uuid

import asyncpg

from app.db.pool import Pool

INSERT_CLIENT = "INSERT INTO clients (id, name, webhook_secret) VALUES ($1, $2, $3)"
INSERT_KEY = "INSERT INTO api_keys (id, client_id, key_hash, prefix) VALUES ($1, $2, $3, $4)"
# The client's limits come with its key: the principal carries them, so that a request needs
# no second lookup to know them.
SELECT_CLIENT_BY_KEY = """
SELECT k.client_id, c.requests_per_second, c.burst, c.max_endpoints, c.max_queued_jobs,
       c.max_in_flight, c.monthly_budget_usd, c.weight
FROM api_keys k JOIN clients c ON c.id = k.client_id
WHERE k.key_hash = $1 AND k.revoked_at IS NULL
"""
REVOKE_KEY = (
    "UPDATE api_keys SET revoked_at = now() WHERE key_hash = $1 AND revoked_at IS NULL RETURNING id"
)


async def insert_client_with_key(
    pool: Pool,
    *,
    client_id: uuid.UUID,
    name: str,
    key_id: uuid.UUID,
    key_hash: bytes,
    prefix: str,
    webhook_secret: str,
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(INSERT_CLIENT, client_id, name, webhook_secret)
        await conn.execute(INSERT_KEY, key_id, client_id, key_hash, prefix)


async def insert_key(
    pool: Pool, *, client_id: uuid.UUID, key_id: uuid.UUID, key_hash: bytes, prefix: str
) -> None:
    await pool.execute(INSERT_KEY, key_id, client_id, key_hash, prefix)


async def find_client_by_key(pool: Pool, key_hash: bytes) -> asyncpg.Record | None:
    """The key's client id and the client's limit columns."""
    return await pool.fetchrow(SELECT_CLIENT_BY_KEY, key_hash)


async def revoke_key(pool: Pool, key_hash: bytes) -> bool:
    return await pool.fetchval(REVOKE_KEY, key_hash) is not None
