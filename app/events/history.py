"""A job's events read back, oldest first: the SSE stream (`app.jobs.stream`) replays and
follows them, the console shows the first page. The SQL stays private in `repository.py`."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from app.db.pool import Pool
from app.events import repository

PAGE_SIZE = repository.PAGE_SIZE
# Before every event of any job: the cursor of a stream that has seen nothing yet.
START = repository.START


async def list_after(
    pool: Pool, job_id: uuid.UUID, after: tuple[datetime, uuid.UUID]
) -> list[asyncpg.Record]:
    """Up to PAGE_SIZE of the job's events after the cursor `after`."""
    return await repository.list_after(pool, job_id, after)


async def first_page(pool: Pool, job_id: uuid.UUID) -> list[asyncpg.Record]:
    """The job's first page of events, oldest first."""
    return await repository.list_after(pool, job_id, START)


async def position(
    pool: Pool, job_id: uuid.UUID, event_id: uuid.UUID
) -> tuple[tuple[datetime, uuid.UUID], str] | None:
    """The stream cursor just after `event_id` and that event's type; None when it is not an
    event of the job."""
    return await repository.position(pool, job_id, event_id)
