"""Deleting finished jobs: in batches by age (retention, `falrelay purge`) or one by id
(`DELETE /v1/jobs/{id}`). Both take the same path: lock the jobs, delete their rows, record
their files in the outbox, commit; then delete the files (app.lifecycle.files).

Never purged: clients, API keys, and the monthly spend ledger (`client_spend`), which is money
history. `/v1/usage` itemises from jobs, so its per-day and per-model lines cover the retention
window; the month's spend and reservations come from the ledger and stay whole.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime

import asyncpg

from app import ids
from app.db.pool import Connection, Pool
from app.errors import Conflict, NotFound
from app.ids import JOB_ID_PREFIX
from app.jobs.models import JobStatus
from app.lifecycle import files, repository
from app.lifecycle.files import ObjectDeleter
from app.metrics import DELETED

# Expired console sessions deleted per statement.
SESSIONS_BATCH = 1000


class JobNotFinished(Conflict):
    title = "Job not finished"
    slug = "job-not-finished"


@dataclass(slots=True)
class Removed:
    """What a purge or a delete removed (or, for a dry run, would remove)."""

    jobs: int = 0
    events: int = 0
    deliveries: int = 0
    delivery_attempts: int = 0
    console_sessions: int = 0
    # Deleted from the store now...
    files: int = 0
    # ...and left in the outbox for later (no store in this process, or the store failed).
    # After a whole `purge`, everything the outbox holds.
    files_pending: int = 0

    def add(self, other: Removed) -> None:
        for field in fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    def as_dict(self) -> dict[str, int]:
        return {field.name: getattr(self, field.name) for field in fields(self)}


async def _delete_locked(
    conn: Connection, rows: list[asyncpg.Record], store: ObjectDeleter | None
) -> tuple[Removed, list[str]]:
    """Delete locked jobs with their children and record their files in the outbox. Returns
    what went and the keys this transaction holds for deletion right after the commit."""
    deleted = await repository.delete_jobs(conn, [row["id"] for row in rows])
    removed = Removed(
        jobs=deleted.jobs,
        events=deleted.events,
        deliveries=deleted.deliveries,
        delivery_attempts=deleted.delivery_attempts,
    )
    now_keys: list[str] = []
    keys: list[str] = []
    due_in: list[float] = []
    for row in rows:
        for key in files.keys_of(row["files"]):
            keys.append(key)
            if store is None:
                due_in.append(0.0)  # for a replica with a store
                removed.files_pending += 1
            else:
                due_in.append(files.DELETE_LEASE_SECONDS)
                now_keys.append(key)
    await repository.record_files(conn, keys, due_in)
    return removed, now_keys


def _counted(removed: Removed) -> None:
    """After the commit: the rows are gone."""
    for kind in ("jobs", "events", "deliveries", "delivery_attempts"):
        DELETED.labels(kind).inc(getattr(removed, kind))


async def _delete_files(
    pool: Pool, store: ObjectDeleter | None, removed: Removed, keys: list[str]
) -> None:
    _counted(removed)
    if store is None or not keys:
        return
    gone = await files.delete_held(pool, store, keys)
    removed.files += gone
    removed.files_pending += len(keys) - gone


async def purge_batch(
    pool: Pool,
    completed_before: datetime,
    *,
    limit: int,
    store: ObjectDeleter | None,
    copy_lease_seconds: float,
) -> Removed:
    """Up to `limit` jobs finished before `completed_before`, oldest first, in one short
    transaction; their files after it. Fewer than `limit` jobs: nothing more is due now.
    `copy_lease_seconds`: the mirror loop's lease (a job whose copy may be in flight waits)."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await repository.claim_finished(conn, completed_before, limit, copy_lease_seconds)
        if not rows:
            return Removed()
        removed, keys = await _delete_locked(conn, rows, store)
    await _delete_files(pool, store, removed, keys)
    return removed


async def purge_sessions(pool: Pool, now: datetime, *, limit: int = SESSIONS_BATCH) -> int:
    """One batch of expired console sessions (a console login tidies a few too)."""
    deleted = await repository.delete_expired_sessions(pool, now, limit=limit)
    DELETED.labels("console_sessions").inc(deleted)
    return deleted


async def purge(
    pool: Pool,
    completed_before: datetime,
    *,
    now: datetime,
    batch_size: int,
    store: ObjectDeleter | None,
    copy_lease_seconds: float,
    rest: float = 0.0,
    progress: Callable[[Removed], None] | None = None,
) -> Removed:
    """Everything finished before `completed_before`, batch after batch, then the expired
    console sessions and the files left in the outbox. `rest`: after each batch, sleep this
    fraction of the time it took, leaving the database to live traffic in between."""
    total = Removed()
    while True:
        started = time.monotonic()
        batch = await purge_batch(
            pool,
            completed_before,
            limit=batch_size,
            store=store,
            copy_lease_seconds=copy_lease_seconds,
        )
        total.add(batch)
        if progress is not None and batch.jobs:
            progress(total)
        if batch.jobs < batch_size:
            break
        if rest > 0:
            await asyncio.sleep(rest * (time.monotonic() - started))
    while (sessions := await purge_sessions(pool, now)) > 0:
        total.console_sessions += sessions
        if sessions < SESSIONS_BATCH:
            break
    if store is not None:
        while (drained := await files.drain(pool, store)) > 0:
            total.files += drained
    # Whatever is still in the outbox, this run's or earlier ones': the retention loop of a
    # process with a store deletes it once due.
    total.files_pending = await repository.count_files_pending(pool)
    return total


async def count(pool: Pool, completed_before: datetime, *, now: datetime) -> Removed:
    """What `purge` would remove, changing nothing (`falrelay purge --dry-run`)."""
    rows, file_keys = await repository.count_finished(pool, completed_before)
    return Removed(
        jobs=rows.jobs,
        events=rows.events,
        deliveries=rows.deliveries,
        delivery_attempts=rows.delivery_attempts,
        console_sessions=await repository.count_expired_sessions(pool, now),
        files=file_keys,
    )


async def delete_job(
    pool: Pool, store: ObjectDeleter | None, client_id: uuid.UUID, public_id: str
) -> Removed:
    """Delete one finished job of this client with its events, deliveries and files.
    NotFound for an unknown id or another client's; JobNotFinished while it can still change
    (cancel it first)."""
    job_uuid = ids.decode(JOB_ID_PREFIX, public_id)
    if job_uuid is None:
        raise NotFound(f"No job {public_id!r}.")
    async with pool.acquire() as conn, conn.transaction():
        row = await repository.lock_one(conn, client_id, job_uuid)
        if row is None:
            raise NotFound(f"No job {public_id!r}.")
        status = JobStatus(row["status"])
        if not status.is_terminal:
            raise JobNotFinished(
                f"Job {public_id} is {status}; only a finished job can be deleted "
                "(cancel it first)."
            )
        removed, keys = await _delete_locked(conn, [row], store)
    await _delete_files(pool, store, removed, keys)
    return removed
