"""The retention loop: FALRELAY_RETENTION_DAYS, a batch per iteration with a rest after a full
one, the outbox worked even with retention off, and the loop running in a real worker."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import httpx

from app.auth import service as auth_service
from app.db.pool import Pool
from app.fal.client import FalClient
from app.lifecycle.retention import Retention
from app.settings import Settings
from app.worker.runner import Worker
from tests.lifecycle.conftest import Seeded
from tests.lifecycle.support import RecordingStore, endpoint, hanging_off, keys_of, seed_job
from tests.support import worker_runtime

INTERVAL = 60.0


class Pauses:
    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


def settings(**values: object) -> Settings:
    return Settings(retention_interval_seconds=INTERVAL, **values)  # type: ignore[arg-type]


async def old_jobs_left(pool: Pool) -> int:
    value: int = await pool.fetchval(
        "SELECT count(*) FROM jobs WHERE completed_at < now() - interval '30 days'"
    )
    return value


def test_retention_days_defaults_to_30_and_off_or_0_turn_it_off() -> None:
    assert Settings().retention_days == 30
    for off in ("off", "OFF", "0", "", "none"):
        assert Settings(retention_days=off).retention_days is None  # type: ignore[arg-type]
    assert Settings(retention_days=0).retention_days is None
    assert Settings(retention_days="7").retention_days == 7  # type: ignore[arg-type]


async def test_an_iteration_purges_one_batch_and_rests_until_none_is_left(
    db: Pool, seeded: Seeded, store: RecordingStore
) -> None:
    pauses = Pauses()
    retention = Retention(
        db, settings(retention_days=30, retention_batch_size=2), store, pause=pauses
    )
    await retention.iterate()
    assert await old_jobs_left(db) == len(seeded.old) - 2
    assert len(pauses.seconds) == 1
    assert pauses.seconds[0] < INTERVAL  # a rest after a full batch, not the idle sleep

    for _ in range(10):
        await retention.iterate()
        if pauses.seconds[-1] == INTERVAL:
            break
    assert pauses.seconds[-1] == INTERVAL
    assert await old_jobs_left(db) == 0
    assert await db.fetchval("SELECT count(*) FROM console_sessions") == 1  # the live one
    assert sorted(store.deleted) == sorted(
        key for job_id in seeded.old_with_files for key in keys_of(job_id)
    )
    assert await hanging_off(db, seeded.old) == {
        table: set() for table in await hanging_off(db, seeded.kept)
    }


async def test_with_retention_off_nothing_is_purged_but_the_outbox_is_worked(
    db: Pool, seeded: Seeded, store: RecordingStore
) -> None:
    await db.execute("INSERT INTO file_deletions (key) VALUES ('jobs/x/0-a.png')")
    pauses = Pauses()
    retention = Retention(db, settings(retention_days="off"), store, pause=pauses)
    await retention.iterate()
    assert await old_jobs_left(db) == len(seeded.old)
    assert await db.fetchval("SELECT count(*) FROM console_sessions") == 2
    assert store.deleted == ["jobs/x/0-a.png"]
    assert await db.fetchval("SELECT count(*) FROM file_deletions") == 0
    assert pauses.seconds == [INTERVAL]


async def test_a_worker_runs_retention_from_its_start(
    db: Pool, fresh_database_url: str, store: RecordingStore
) -> None:
    client_id, _ = await auth_service.create_client(db, "retained")
    hook = await endpoint(db, client_id)
    old = [await seed_job(db, client_id, hook, finished_ago=timedelta(days=40)) for _ in range(3)]
    recent = await seed_job(db, client_id, hook, finished_ago=timedelta(days=20))
    worker_settings = Settings(
        database_url=fresh_database_url,
        retention_days=30,
        retention_interval_seconds=INTERVAL,
        worker_poll_seconds=0.05,
    )
    async with httpx.AsyncClient() as http:
        # No job is due for fal: nothing is sent to this (discard) port.
        fal = FalClient(http, queue_url="http://127.0.0.1:9", key="k")
        worker = Worker(worker_runtime(db, fal, worker_settings, store=store), listen_url=None)
        run = asyncio.create_task(worker.run())
        try:
            deadline = time.monotonic() + 30
            while await db.fetchval("SELECT count(*) FROM jobs WHERE id = ANY($1)", old):
                assert time.monotonic() < deadline, "retention did not purge the old jobs"
                await asyncio.sleep(0.05)
            assert "retention" in worker.supervisor.loops
        finally:
            worker.stop()
            await run
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE id = $1", recent) == 1
    assert sorted(store.deleted) == sorted(key for job_id in old for key in keys_of(job_id))
