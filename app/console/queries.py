"""Read-only SQL that only the console's pages need.

Every statement is scoped to one client and bounded (a LIMIT, or a list of ids already
bounded by a page), and walks an existing index in its order.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence

import asyncpg

from app.db.pool import Pool

SELECT_CLIENT_NAME = "SELECT name FROM clients WHERE id = $1"

SELECT_ATTEMPTS = """
SELECT delivery_id, attempted_at, duration_ms, status_code, error, response_body
FROM delivery_attempts WHERE delivery_id = ANY($1::uuid[])
ORDER BY delivery_id, attempted_at, id
LIMIT $2
"""
# Attempts shown per page of deliveries: the schedule makes at most nine per delivery, manual
# retries add more; a page never shows more than this many in all.
MAX_ATTEMPTS = 2000


async def client_name(pool: Pool, client_id: uuid.UUID) -> str | None:
    name: str | None = await pool.fetchval(SELECT_CLIENT_NAME, client_id)
    return name


async def attempts_of(
    pool: Pool, delivery_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[asyncpg.Record]]:
    """Every attempt of these deliveries, oldest first, in one round trip (not one a row).
    The ids come from a delivery listing already scoped to the client."""
    if not delivery_ids:
        return {}
    rows = await pool.fetch(SELECT_ATTEMPTS, list(delivery_ids), MAX_ATTEMPTS)
    grouped: dict[uuid.UUID, list[asyncpg.Record]] = defaultdict(list)
    for row in rows:
        grouped[row["delivery_id"]].append(row)
    return dict(grouped)
