"""The job watcher and `Prefer: wait`: what a waiter reads, and when it is woken."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from app.db.pool import Pool
from app.db.wakeup import Wakeup
from app.jobs import lifecycle, repository
from app.jobs.models import JobStatus
from app.jobs.service import wait_until_finished
from app.jobs.watch import JobWatcher
from tests.support import Tenant, job_uuid

POLL = 0.05


class CountingPool:
    """The pool, counting the statements a wait runs of its own."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self.statements = 0

    async def fetchrow(self, *args: Any) -> asyncpg.Record | None:
        self.statements += 1
        return await self._pool.fetchrow(*args)


async def _job(pool: Pool, tenant: Tenant) -> asyncpg.Record:
    answer = await tenant.http.post("/v1/jobs", json={"input": {"prompt": "p"}})
    assert answer.status_code == 201, answer.text
    job = await repository.get(pool, tenant.client_id, job_uuid(answer.json()["id"]))
    assert job is not None
    return job


async def _cancel(pool: Pool, job: asyncpg.Record) -> None:
    await pool.execute(
        "UPDATE jobs SET status = 'canceled', completed_at = clock_timestamp(), "
        "updated_at = clock_timestamp() WHERE id = $1",
        job["id"],
    )


async def test_a_waiter_holding_the_jobs_status_is_woken_only_when_it_moves(
    pool: Pool, tenant: Tenant
) -> None:
    job = await _job(pool, tenant)
    watcher = JobWatcher(pool, poll_seconds=POLL)
    try:
        async with watcher.watch(job["id"], job["status"]) as watch:
            await asyncio.sleep(10 * POLL)  # several polls, the first included
            assert not watch.changed.is_set()
            assert watch.holds_current(within=5 * POLL)
            await _cancel(pool, job)
            await asyncio.wait_for(watch.changed.wait(), 20 * POLL)
            assert not watch.holds_current(within=5 * POLL)
    finally:
        await watcher.aclose()


async def test_a_change_before_the_waiter_registered_is_not_missed(
    pool: Pool, tenant: Tenant
) -> None:
    job = await _job(pool, tenant)
    watcher = JobWatcher(pool, poll_seconds=POLL)
    try:
        await _cancel(pool, job)  # after the waiter's read, before it registers
        async with watcher.watch(job["id"], job["status"]) as watch:
            await asyncio.wait_for(watch.changed.wait(), 20 * POLL)
    finally:
        await watcher.aclose()


async def test_a_wait_reads_nothing_until_its_job_moves(pool: Pool, tenant: Tenant) -> None:
    job = await _job(pool, tenant)
    watcher = JobWatcher(pool, poll_seconds=POLL)
    counting = CountingPool(pool)
    try:
        # Nothing moves: answered at the deadline with the job as it was, with no read at all.
        answer = await wait_until_finished(counting, watcher, tenant.client_id, job, 10 * POLL)  # type: ignore[arg-type]
        assert answer is job
        assert counting.statements == 0

        # It moves: one read, and the finished job is the answer at once.
        async def cancel_soon() -> None:
            await asyncio.sleep(4 * POLL)
            await _cancel(pool, job)

        started = time.monotonic()
        canceling = asyncio.create_task(cancel_soon())
        answer = await wait_until_finished(counting, watcher, tenant.client_id, job, 10.0)  # type: ignore[arg-type]
        await canceling
        assert answer["status"] == "canceled"
        assert counting.statements == 1
        assert time.monotonic() - started < 5.0
    finally:
        await watcher.aclose()


async def test_a_wait_whose_client_went_away_ends_and_is_no_longer_watched(
    pool: Pool, tenant: Tenant
) -> None:
    job = await _job(pool, tenant)
    watcher = JobWatcher(pool, poll_seconds=POLL)
    gone = asyncio.Event()
    try:
        waiting = asyncio.create_task(
            wait_until_finished(pool, watcher, tenant.client_id, job, 60.0, client_gone=gone.wait())
        )
        await asyncio.sleep(4 * POLL)
        assert not waiting.done()
        gone.set()
        assert await asyncio.wait_for(waiting, 2.0) is job
        for _ in range(10):  # the cancelled wait leaves its watch as it unwinds
            await asyncio.sleep(0)
        assert not watcher.watching(job["id"])
    finally:
        await watcher.aclose()


async def test_a_finished_job_wakes_its_waiters_before_the_next_poll(
    pool: Pool, tenant: Tenant, database_url: str
) -> None:
    job = await _job(pool, tenant)
    # Polls five seconds apart: only the NOTIFY of a finished job can wake the waiter sooner.
    watcher = JobWatcher(pool, poll_seconds=5.0, listen_url=database_url)
    # The notifications of the process that finishes the job, as the service sends them.
    wakeup = Wakeup(pool, coalesce=0)
    try:
        async with watcher.watch(job["id"], job["status"]) as watch:
            await asyncio.sleep(1.0)  # the first poll, early: the LISTEN began
            assert not watch.changed.is_set()
            await lifecycle.mark_canceled(
                pool, tenant.client_id, job["id"], from_statuses=[JobStatus.QUEUED], wakeup=wakeup
            )
            await asyncio.wait_for(watch.changed.wait(), 2.0)
    finally:
        await watcher.aclose()
        await wakeup.aclose()
