"""SQL for clients and API keys."""

from __future__ import annotations

import uuid

from app.db.pool import Pool

INSERT_CLIENT = "INSERT INTO clients (id, name, webhook_secret) VALUES ($1, $2, $3)"
INSERT_KEY = "INSERT INTO api_keys (id, client_id, key_hash, prefix) VALUES ($1, $2, $3, $4)"
SELECT_CLIENT_ID_BY_KEY = (
    "SELECT client_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"
)
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


async def find_client_id_by_key(pool: Pool, key_hash: bytes) -> uuid.UUID | None:
    value: uuid.UUID | None = await pool.fetchval(SELECT_CLIENT_ID_BY_KEY, key_hash)
    return value


async def revoke_key(pool: Pool, key_hash: bytes) -> bool:
    return await pool.fetchval(REVOKE_KEY, key_hash) is not None
