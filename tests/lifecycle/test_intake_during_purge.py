"""A purge does not hold intake back: jobs are created, over real HTTP, one after another for
as long as a purge of 20,000 old jobs (with 180,000 events, deliveries and attempts) runs, and
none waits long. bench/benchmarks/purge.py measures the same at 1,000,000 jobs under load."""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from app.auth import service as auth_service
from app.db.pool import Pool
from app.lifecycle import purge
from app.main import create_app
from app.settings import Settings
from tests.lifecycle.support import RecordingStore, bulk_old_jobs, endpoint
from tests.servers import LiveServer

pytestmark = pytest.mark.slow

OLD_JOBS = 20_000
BODY = {"input": {"prompt": "a red fox in snow", "resolution": "1K"}}


async def test_jobs_are_created_while_a_purge_runs(
    db: Pool, fresh_database_url: str, store: RecordingStore
) -> None:
    client_id, key = await auth_service.create_client(db, "busy")
    await bulk_old_jobs(db, client_id, await endpoint(db, client_id), OLD_JOBS)
    app = create_app(Settings(database_url=fresh_database_url))
    with LiveServer(app) as server:
        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as http:
            assert (await http.post("/v1/jobs", json=BODY)).status_code == 201  # warm
            now = datetime.now(UTC)
            started = time.monotonic()
            purging = asyncio.create_task(
                purge.purge(
                    db,
                    now - timedelta(days=30),
                    now=now,
                    batch_size=200,
                    store=store,
                    copy_lease_seconds=600,
                )
            )
            during: list[float] = []
            answered = 1
            while not purging.done():
                sent = time.monotonic()
                response = await http.post("/v1/jobs", json=BODY)
                assert response.status_code == 201, response.text
                answered += 1
                if not purging.done():
                    during.append(time.monotonic() - sent)
            removed = await purging
            took = time.monotonic() - started

    assert removed.jobs == OLD_JOBS
    assert removed.files == OLD_JOBS
    assert len(during) >= 10, f"the purge ({took:.1f} s) ended before intake overlapped it"
    # A purge that locked intake out would make a create wait for a good part of it (seconds);
    # batches commit every few ms, so none waits more than a moment, even on a busy machine.
    assert max(during) < min(2.0, took / 2), (max(during), took)
    assert statistics.median(during) < 0.5
    created = await db.fetchval(
        "SELECT count(*) FROM jobs WHERE client_id = $1 AND status = 'queued'", client_id
    )
    assert created == answered  # every 201 is a stored job, none purged
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'succeeded'") == 0
