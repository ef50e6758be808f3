"""Workers on committed state: a fresh database, the fake fal over real HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from app.auth import service as auth_service
from app.db.pool import Pool, create_pool
from app.db.wakeup import Wakeup
from app.fakefal import FakeFal, FakeFalConfig
from app.fal.client import FalClient
from app.jobs import service as jobs_service
from app.jobs.schemas import JobCreate
from app.settings import Settings
from app.worker import queue
from app.worker.context import WorkerContext
from app.worker.runner import Worker
from tests.servers import LiveServer


@pytest.fixture
async def fal_url() -> AsyncIterator[str]:
    with LiveServer(FakeFal(FakeFalConfig(random_seed=11)).app) as server:
        yield server.url


async def _create_jobs(pool: Pool, n: int) -> list[str]:
    client_id, _ = await auth_service.create_client(pool, "workers")
    jobs = []
    for i in range(n):
        request = JobCreate(input={"prompt": f"job {i}", "resolution": "1K"})
        created = await jobs_service.create_job(pool, client_id, request, None)
        jobs.append(created.job["id"])
    return jobs


async def test_two_workers_never_submit_one_job_twice(
    fresh_database_url: str, fal_url: str
) -> None:
    settings = Settings(
        database_url=fresh_database_url,
        fal_queue_url=fal_url,
        fal_key="k",
        worker_poll_seconds=0.02,
        worker_concurrency=8,
        poll_interval_seconds=0.05,
    )
    seed_pool = await create_pool(fresh_database_url, min_size=1, max_size=2)
    job_ids = await _create_jobs(seed_pool, 60)
    workers: list[Worker] = []
    pools: list[Pool] = []
    submits = [0, 0]
    clients = []
    for n in range(2):

        async def count(request: httpx.Request, n: int = n) -> None:
            if request.method == "POST":
                submits[n] += 1

        http = httpx.AsyncClient(event_hooks={"request": [count]})
        clients.append(http)
        pool = await create_pool(fresh_database_url, min_size=1, max_size=6)
        pools.append(pool)
        fal = FalClient(http, queue_url=fal_url, key="k")
        ctx = WorkerContext(pool=pool, fal=fal, settings=settings)
        workers.append(Worker(ctx, Wakeup(None), listen_url=None))
    runs = [asyncio.create_task(worker.run()) for worker in workers]
    deadline = time.monotonic() + 30
    while await seed_pool.fetchval("SELECT count(*) FROM jobs WHERE status <> 'succeeded'"):
        assert time.monotonic() < deadline, "jobs did not finish"
        await asyncio.sleep(0.05)
    for worker in workers:
        worker.stop()
    await asyncio.gather(*runs)
    stats = (await clients[0].get(f"{fal_url}/_fake/stats")).json()
    for http in clients:
        await http.aclose()

    rows = await seed_pool.fetch("SELECT id, fal_request_id, attempts FROM jobs")
    assert len(rows) == len(job_ids) == 60
    assert stats["submitted"] == 60
    assert len({row["fal_request_id"] for row in rows}) == 60
    assert all(row["attempts"] == 1 for row in rows)
    # Both workers did some of the work: SKIP LOCKED shares it out, it does not serialise it.
    assert sum(submits) == 60
    assert min(submits) > 0, submits
    for pool in pools:
        await pool.close()
    await seed_pool.close()


async def test_claims_skip_rows_another_worker_holds(fresh_database_url: str) -> None:
    pool = await create_pool(fresh_database_url, min_size=2, max_size=4)
    try:
        await _create_jobs(pool, 5)
        first = await queue.claim_submissions(pool, 3, 120)
        second = await queue.claim_submissions(pool, 10, 120)
        third = await queue.claim_submissions(pool, 10, 120)
        assert len(first) == 3
        assert len(second) == 2
        assert third == []
        assert {r["id"] for r in first}.isdisjoint({r["id"] for r in second})
        # A lease that ran out makes the row claimable again (its worker died).
        await pool.execute(
            "UPDATE jobs SET locked_until = now() - interval '1 second' WHERE id = $1",
            first[0]["id"],
        )
        again = await queue.claim_submissions(pool, 10, 120)
        assert [r["id"] for r in again] == [first[0]["id"]]
        assert again[0]["attempts"] == 2
    finally:
        await pool.close()
