"""SQL for console sessions.

A session is only as good as the key it was started with, so the one statement that resolves a
cookie also reads that key's `revoked_at`: the console's only read of `api_keys`, kept here
rather than behind the key cache, because a revoked key must end its sessions at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from app.db.pool import Pool

# The key is checked and the session written in one statement: a key revoked a moment earlier
# starts nothing, and no key cache stands between the two.
INSERT_SESSION = """
WITH key AS (
    SELECT id, client_id FROM api_keys WHERE key_hash = $3 AND revoked_at IS NULL
), started AS (
    INSERT INTO console_sessions (id, token_hash, api_key_id, expires_at)
    SELECT $1, $2, key.id, $4 FROM key
    RETURNING api_key_id
)
SELECT key.client_id FROM key JOIN started ON started.api_key_id = key.id
"""

# One probe of the unique token_hash index, one of api_keys' primary key.
SELECT_SESSION = """
SELECT s.id, k.client_id
FROM console_sessions s JOIN api_keys k ON k.id = s.api_key_id
WHERE s.token_hash = $1 AND s.expires_at > $2 AND k.revoked_at IS NULL
"""

DELETE_SESSION = "DELETE FROM console_sessions WHERE id = $1"


@dataclass(frozen=True, slots=True)
class StoredSession:
    id: uuid.UUID
    client_id: uuid.UUID


async def insert_session(
    pool: Pool,
    *,
    session_id: uuid.UUID,
    token_hash: bytes,
    key_hash: bytes,
    expires_at: datetime,
) -> uuid.UUID | None:
    """The client of the session now started, or None (and nothing written) when the key is
    unknown or revoked."""
    client_id: uuid.UUID | None = await pool.fetchval(
        INSERT_SESSION, session_id, token_hash, key_hash, expires_at
    )
    return client_id


async def find_session(pool: Pool, token_hash: bytes, now: datetime) -> StoredSession | None:
    row = await pool.fetchrow(SELECT_SESSION, token_hash, now)
    return None if row is None else StoredSession(row["id"], row["client_id"])


async def delete_session(pool: Pool, session_id: uuid.UUID) -> None:
    await pool.execute(DELETE_SESSION, session_id)
