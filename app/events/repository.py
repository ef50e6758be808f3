"""The SQL that reads a job's events back (`app.events.history` is its public face)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg

from app.db.pool import Pool

# (created_at, id) is the order events happened in: a job's transitions are compare-and-set
# updates, so each one commits after the one before it. ix_events_job_created serves both.
SELECT_AFTER = """
SELECT id, type, payload, created_at FROM events
WHERE job_id = $1 AND (created_at, id) > ($2, $3)
ORDER BY created_at, id
LIMIT $4
"""

SELECT_POSITION = "SELECT created_at, type FROM events WHERE id = $1 AND job_id = $2"
PAGE_SIZE = 100

# Before every event of any job.
START = (datetime(1970, 1, 1, tzinfo=UTC), uuid.UUID(int=0))


async def list_after(
    pool: Pool, job_id: uuid.UUID, after: tuple[datetime, uuid.UUID]
) -> list[asyncpg.Record]:
    return await pool.fetch(SELECT_AFTER, job_id, *after, PAGE_SIZE)


async def position(
    pool: Pool, job_id: uuid.UUID, event_id: uuid.UUID
) -> tuple[tuple[datetime, uuid.UUID], str] | None:
    """The stream cursor just after `event_id` and that event's type; None when it is not an
    event of the job."""
    row = await pool.fetchrow(SELECT_POSITION, event_id, job_id)
    return None if row is None else ((row["created_at"], event_id), row["type"])
