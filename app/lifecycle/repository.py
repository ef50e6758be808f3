"""SQL of the data lifecycle: deleting finished jobs with everything that references them, the
outbox of their files, and expired console sessions.

Children are deleted before the jobs, each table by its own index on the job (the foreign keys
cascade too, but a cascade runs one trigger query per parent row and reports no counts).
Every statement of a batch is short; the batch is one transaction, so its row locks (on jobs
nobody else touches any more) last milliseconds.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from app.db.pool import Connection, Pool

FINISHED_STATUSES = "('succeeded', 'failed', 'canceled')"
FINISHED = f"status IN {FINISHED_STATUSES}"

# The oldest finished jobs, locked until the batch commits. SKIP LOCKED is the lease: another
# replica (or `falrelay purge`) takes the next batch, never this one, and never waits for it.
# ORDER BY completed_at reads ix_jobs_finished_completed from its oldest end.
#
# Skipped for now: a job whose failed copy may be being retried. The mirror loop's claim moves
# `mirror_retry_at` to the end of its lease ($3 seconds), so a copy in flight has it within the
# next $3 seconds; its files are not in `files` yet, so deleting the job now could leave the
# copy behind. Such a job goes in a later batch. (Due and unclaimed, it cannot be claimed while
# this batch holds its row, and afterwards it is gone.)
CLAIM_FINISHED = f"""
SELECT id, files FROM jobs
WHERE {FINISHED} AND completed_at < $1
  AND (mirror_retry_at IS NULL OR mirror_retry_at <= now()
       OR mirror_retry_at > now() + make_interval(secs => $3))
ORDER BY completed_at
LIMIT $2
FOR UPDATE SKIP LOCKED
"""

# One job of one client, waited for (not skipped): a purge holding it ends in milliseconds, and
# then the row is gone and the caller answers 404.
LOCK_ONE = """
SELECT id, status, files FROM jobs
WHERE id = $1 AND client_id = $2
FOR UPDATE
"""

DELETE_ATTEMPTS = """
DELETE FROM delivery_attempts WHERE delivery_id IN (
    SELECT id FROM deliveries WHERE job_id = ANY($1::uuid[])
)
"""
# Every delivery of a job's event carries the job's id (app.webhooks.fanout), so this finds
# them all through ix_deliveries_job_created.
DELETE_DELIVERIES = "DELETE FROM deliveries WHERE job_id = ANY($1::uuid[])"
DELETE_EVENTS = "DELETE FROM events WHERE job_id = ANY($1::uuid[])"
# The idempotency key and request fingerprint live on the row, and go with it.
DELETE_JOBS = "DELETE FROM jobs WHERE id = ANY($1::uuid[])"

# What a purge would remove, for --dry-run: plain reads, no locks beyond MVCC snapshots.
COUNT_FINISHED = f"""
SELECT count(*) AS jobs,
       coalesce(sum((
           SELECT count(f ->> 'key') + count(f ->> 'thumbnail_key')
           FROM jsonb_array_elements(
               CASE WHEN jsonb_typeof(files) = 'array' THEN files ELSE '[]'::jsonb END
           ) AS f
       )), 0)::bigint AS files
FROM jobs WHERE {FINISHED} AND completed_at < $1
"""
COUNT_EVENTS = f"""
SELECT count(*) FROM events e JOIN jobs j ON j.id = e.job_id
WHERE j.status IN {FINISHED_STATUSES} AND j.completed_at < $1
"""
COUNT_DELIVERIES = f"""
SELECT count(*) FROM deliveries d JOIN jobs j ON j.id = d.job_id
WHERE j.status IN {FINISHED_STATUSES} AND j.completed_at < $1
"""
COUNT_ATTEMPTS = f"""
SELECT count(*) FROM delivery_attempts a
JOIN deliveries d ON d.id = a.delivery_id JOIN jobs j ON j.id = d.job_id
WHERE j.status IN {FINISHED_STATUSES} AND j.completed_at < $1
"""

# The outbox. `due_at` is both when a key is next tried and its lease: a key written by the
# batch that deleted its job is due only after `$2` seconds, so the process that wrote it
# deletes it right after the commit without any other replica taking it meanwhile.
RECORD_FILES = """
INSERT INTO file_deletions (key, due_at)
SELECT u.key, now() + make_interval(secs => u.after)
FROM unnest($1::text[], $2::float8[]) AS u(key, after)
ON CONFLICT (key) DO NOTHING
"""
CLAIM_FILES = """
UPDATE file_deletions SET due_at = now() + make_interval(secs => $2)
WHERE key IN (
    SELECT key FROM file_deletions WHERE due_at <= now() ORDER BY due_at LIMIT $1
    FOR UPDATE SKIP LOCKED
)
RETURNING key
"""
FILES_DELETED = "DELETE FROM file_deletions WHERE key = ANY($1::text[])"
# Backoff doubling from 30 s to an hour: a store that is down for a day is asked 30-odd times.
FILES_FAILED = """
UPDATE file_deletions
SET attempts = attempts + 1, last_error = $2,
    due_at = now() + make_interval(secs => least(3600, 30 * 2 ^ least(attempts, 8)))
WHERE key = ANY($1::text[])
"""
COUNT_FILES_PENDING = "SELECT count(*) FROM file_deletions"

# Expired console sessions, a bounded batch: the purge takes them batch after batch, and each
# console login takes a few (so that a login after a long quiet spell does not pay for every
# session that expired meanwhile).
DELETE_EXPIRED_SESSIONS = """
DELETE FROM console_sessions WHERE id IN (
    SELECT id FROM console_sessions WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2
)
"""

COUNT_EXPIRED_SESSIONS = "SELECT count(*) FROM console_sessions WHERE expires_at <= $1"


@dataclass(frozen=True, slots=True)
class RowsDeleted:
    jobs: int
    events: int
    deliveries: int
    delivery_attempts: int


def _count(status: str) -> int:
    # asyncpg's command tag: "DELETE <rows>"
    return int(status.rsplit(" ", 1)[-1])


async def claim_finished(
    conn: Connection, completed_before: datetime, limit: int, copy_lease_seconds: float
) -> list[asyncpg.Record]:
    return await conn.fetch(CLAIM_FINISHED, completed_before, limit, copy_lease_seconds)


async def lock_one(
    conn: Connection, client_id: uuid.UUID, job_id: uuid.UUID
) -> asyncpg.Record | None:
    return await conn.fetchrow(LOCK_ONE, job_id, client_id)


async def delete_jobs(conn: Connection, job_ids: Sequence[uuid.UUID]) -> RowsDeleted:
    """Jobs the caller has locked, children first. In the caller's transaction."""
    ids = list(job_ids)
    attempts = _count(await conn.execute(DELETE_ATTEMPTS, ids))
    deliveries = _count(await conn.execute(DELETE_DELIVERIES, ids))
    events = _count(await conn.execute(DELETE_EVENTS, ids))
    jobs = _count(await conn.execute(DELETE_JOBS, ids))
    return RowsDeleted(jobs, events, deliveries, attempts)


async def count_finished(pool: Pool, completed_before: datetime) -> tuple[RowsDeleted, int]:
    """What deleting the jobs finished before then would remove, and their file keys."""
    row = await pool.fetchrow(COUNT_FINISHED, completed_before)
    assert row is not None
    counted = RowsDeleted(
        jobs=row["jobs"],
        events=await pool.fetchval(COUNT_EVENTS, completed_before),
        deliveries=await pool.fetchval(COUNT_DELIVERIES, completed_before),
        delivery_attempts=await pool.fetchval(COUNT_ATTEMPTS, completed_before),
    )
    return counted, int(row["files"])


async def record_files(conn: Connection, keys: Sequence[str], due_in: Sequence[float]) -> None:
    if keys:
        await conn.execute(RECORD_FILES, list(keys), list(due_in))


async def claim_files(pool: Pool, limit: int, lease_seconds: float) -> list[str]:
    rows = await pool.fetch(CLAIM_FILES, limit, lease_seconds)
    return [row["key"] for row in rows]


async def files_deleted(pool: Pool, keys: Sequence[str]) -> None:
    await pool.execute(FILES_DELETED, list(keys))


async def files_failed(pool: Pool, keys: Sequence[str], error: str) -> None:
    await pool.execute(FILES_FAILED, list(keys), error)


async def count_files_pending(pool: Pool) -> int:
    value: int = await pool.fetchval(COUNT_FILES_PENDING)
    return value


async def delete_expired_sessions(pool: Pool, now: datetime, *, limit: int) -> int:
    status: str = await pool.execute(DELETE_EXPIRED_SESSIONS, now, limit)
    return int(status.split()[-1])


async def count_expired_sessions(pool: Pool, now: datetime) -> int:
    """Sessions `delete_expired_sessions` would remove (`falrelay purge --dry-run`)."""
    value: int = await pool.fetchval(COUNT_EXPIRED_SESSIONS, now)
    return value
