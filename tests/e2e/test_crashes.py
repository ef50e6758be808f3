"""Crashes between claim and record: the job is neither lost nor submitted twice."""

from __future__ import annotations

from datetime import datetime

import httpx

from app.catalog import DEFAULT_MODEL_ID
from app.fal.client import FalClient
from app.ids import uuid7
from app.jobs.schemas import job_id as public_job_id
from tests.stack import Stack, StackFactory
from tests.support import job_uuid


async def test_a_worker_killed_before_reaching_fal_loses_nothing(
    make_stack: StackFactory,
) -> None:
    async with make_stack() as stack:
        # A worker claimed the job, then died before its POST reached fal: the row is leased to
        # nobody alive. When the lease runs out, a live worker submits it, once.
        job_id = await _job_claimed_by_a_dead_worker(stack)
        await stack.pool.execute(
            "UPDATE jobs SET locked_until = now() - interval '1 second' WHERE id = $1",
            job_uuid(job_id),
        )
        job = await stack.wait_for(job_id)
        assert job["status"] == "succeeded"
        assert (await stack.fal_stats())["submitted"] == 1


async def test_a_worker_killed_after_fal_took_the_job_loses_nothing_and_submits_once(
    make_stack: StackFactory,
) -> None:
    async with make_stack() as stack:
        job_id = await _job_claimed_by_a_dead_worker(stack)
        # The dead worker's POST did reach fal, with our callback URL; its answer was lost.
        async with httpx.AsyncClient() as http:
            fal = FalClient(http, queue_url=stack.fal_url, key="k")
            await fal.submit(
                DEFAULT_MODEL_ID,
                {"prompt": "claimed", "resolution": "1K"},
                webhook_url=await stack.callback_url(job_id),
            )
        # fal's webhook arrives while the lease still holds the job: it finishes the job with
        # fal's request, and nobody submits again.
        job = await stack.wait_for(job_id)
        assert job["status"] == "succeeded"
        assert job["fal_request_id"]
        assert (await stack.fal_stats())["submitted"] == 1
        # The job adopted fal's request as it finished: submitted, then succeeded, in order.
        assert await stack.event_types(job_id) == ["job.submitted", "job.succeeded"]
        submitted_at, completed_at = job["submitted_at"], job["completed_at"]
        assert submitted_at is not None
        assert datetime.fromisoformat(submitted_at) <= datetime.fromisoformat(completed_at)


async def _job_claimed_by_a_dead_worker(stack: Stack) -> str:
    """A queued job whose lease is held (for two minutes) by a worker that no longer runs.
    Inserted already leased, so the live worker cannot claim it first."""
    job_uuid_ = uuid7()
    await stack.pool.execute(
        "INSERT INTO jobs (id, client_id, model, input, locked_until, attempts) "
        "VALUES ($1, $2, $3, $4, now() + interval '2 minutes', 1)",
        job_uuid_,
        stack.client_id,
        DEFAULT_MODEL_ID,
        {"prompt": "claimed", "resolution": "1K", "aspect_ratio": "1:1", "reasoning": "low"},
    )
    return public_job_id(job_uuid_)
