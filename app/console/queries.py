"""Read-only SQL that only the console's pages need.

Every statement is scoped to one client and bounded (a LIMIT, or a list of ids already
bounded by a page), and walks an existing index in its order.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from app.db.pool import Pool
from app.jobs.repository import JOB_COLUMNS

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


async def gallery_page(
    pool: Pool,
    client_id: uuid.UUID,
    *,
    status: str | None,
    metadata: dict[str, str],
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Up to `limit` jobs, newest first: the /v1/jobs listing plus a metadata filter.

    Served by ix_jobs_client_created (or ix_jobs_client_status_created with a status) in
    keyset order; `metadata @> ...` filters rows along that scan, which stops at the LIMIT.
    """
    clauses = ["client_id = $1"]
    args: list[Any] = [client_id]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if status is not None:
        clauses.append(f"status = {arg(status)}")
    if metadata:
        clauses.append(f"metadata @> {arg(metadata)}::jsonb")
    if after is not None:
        clauses.append(f"(created_at, id) < ({arg(after[0])}, {arg(after[1])})")
    sql = (
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE {' AND '.join(clauses)} "
        f"ORDER BY created_at DESC, id DESC LIMIT {arg(limit)}"
    )
    return await pool.fetch(sql, *args)


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
