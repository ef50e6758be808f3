"""The SDK's jobs against the whole product over real HTTP (service, workers, fake fal)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from app.fakefal import FakeFalConfig
from falrelay import (
    AsyncClient,
    AuthenticationError,
    Client,
    ConflictError,
    InternalServerError,
    JobEvent,
    JobStatus,
    NotFoundError,
    UnprocessableEntityError,
    WaitTimeoutError,
)
from tests.sdk.support import Fault, FaultyProxy, key_of
from tests.servers import LiveServer
from tests.stack import Stack, StackFactory
from tests.support import job_uuid

FOX = {"prompt": "a red fox in snow", "aspect_ratio": "16:9", "resolution": "1K"}


def client_for(stack: Stack, url: str | None = None, *, max_retries: int = 2) -> AsyncClient:
    return AsyncClient(key_of(stack), base_url=url or stack.service_url, max_retries=max_retries)


async def stored_event_ids(stack: Stack, job_id: str) -> list[str]:
    rows = await stack.pool.fetch(
        "SELECT id FROM events WHERE job_id = $1 ORDER BY created_at, id", job_uuid(job_id)
    )
    return [f"evt_{row['id'].hex}" for row in rows]


async def test_create_with_wait_answers_the_finished_job(make_stack: StackFactory) -> None:
    async with make_stack() as stack, client_for(stack) as client:
        job = await client.jobs.create(FOX, metadata={"order_id": "A-1001"}, wait=True)

        assert job.status is JobStatus.SUCCEEDED
        assert job.metadata == {"order_id": "A-1001"}
        (image,) = job.images
        assert (image.width, image.height) == (1280, 720)
        assert image.url.startswith(stack.fal_url)
        assert await client.jobs.get(job.id) == job
        row = await stack.pool.fetchrow(
            "SELECT status, idempotency_key, metadata FROM jobs WHERE id = $1", job_uuid(job.id)
        )
        assert row is not None
        assert row["status"] == "succeeded"
        # The SDK made the key (a uuid4), so a resend of the create could not make a second job.
        assert uuid.UUID(row["idempotency_key"]).version == 4


async def test_wait_and_events_follow_a_running_job(make_stack: StackFactory) -> None:
    async with (
        make_stack(fal=FakeFalConfig(random_seed=7, run_latency=1.0)) as stack,
        client_for(stack) as client,
    ):
        job = await client.jobs.create(FOX)
        assert job.status is JobStatus.QUEUED

        started = time.monotonic()
        with pytest.raises(WaitTimeoutError) as timed_out:
            await client.jobs.wait(job.id, timeout=0.3)
        # The deadline bounds the stream's reads too: no waiting for the next keep-alive (15 s).
        # Generous above the 0.3 s asked for: a busy machine delays the two round trips.
        assert time.monotonic() - started < 5
        assert not timed_out.value.job.is_terminal

        events = [event async for event in client.jobs.events(job.id)]
        assert [event.type for event in events][-1] == "job.succeeded"
        assert [event.id for event in events] == await stored_event_ids(stack, job.id)
        finished = await client.jobs.wait(job.id, timeout=10)
        assert finished == events[-1].data
        assert finished.status is JobStatus.SUCCEEDED
        # A finished job's stream, resumed after its last event, is empty and ends at once.
        resumed = [e async for e in client.jobs.events(job.id, last_event_id=events[-1].id)]
        assert resumed == []


async def test_list_follows_the_cursor_across_pages(make_stack: StackFactory) -> None:
    async with make_stack() as stack:
        recorder = FaultyProxy(stack.service_url)
        with LiveServer(recorder.app) as proxy:
            async with client_for(stack, proxy.url) as client:
                for n in range(5):
                    await client.jobs.create({"prompt": f"fox {n}", "resolution": "1K"})
                listed = [job.id async for job in client.jobs.list(limit=2)]
                none_failed = [job async for job in client.jobs.list(status="failed", limit=2)]

        rows = await stack.pool.fetch(
            "SELECT id FROM jobs WHERE client_id = $1 ORDER BY created_at DESC, id DESC",
            stack.client_id,
        )
        assert listed == [f"job_{row['id'].hex}" for row in rows]
        assert none_failed == []
        pages = recorder.requests("GET", "/v1/jobs")
        assert len(pages) == 3 + 1  # 2 + 2 + 1 jobs, then the empty failed listing
        assert "cursor=" not in pages[0].query
        assert all("cursor=" in page.query and "limit=2" in page.query for page in pages[1:3])


async def test_cancel_and_the_conflict_after_it(make_stack: StackFactory) -> None:
    async with (
        make_stack(fal=FakeFalConfig(random_seed=7, queue_latency=60)) as stack,
        client_for(stack) as client,
    ):
        job = await client.jobs.create(FOX)
        await stack.wait_for(job.id, {"submitted"})

        canceled = await client.jobs.cancel(job.id)
        assert canceled.status is JobStatus.CANCELED
        status = await stack.pool.fetchval(
            "SELECT status FROM jobs WHERE id = $1", job_uuid(job.id)
        )
        assert status == "canceled"

        with pytest.raises(ConflictError) as conflict:
            await client.jobs.cancel(job.id)
        error = conflict.value
        assert (error.status, error.title) == (409, "Job cannot be canceled")
        assert error.type.endswith("/job-not-cancelable")
        assert error.detail
        assert error.request_id == error.response.headers["x-request-id"]


async def test_errors_carry_the_problem_fields(make_stack: StackFactory) -> None:
    async with make_stack() as stack, client_for(stack) as client:
        with pytest.raises(NotFoundError) as missing:
            await client.jobs.get("job_" + "0" * 32)
        assert missing.value.status == 404
        assert missing.value.type.endswith("/not-found")
        assert missing.value.request_id

        with pytest.raises(UnprocessableEntityError) as invalid:
            await client.jobs.create({"prompt": "a fox", "aspect_ratio": "7:5", "seed": "x"})
        problem = invalid.value
        assert problem.status == 422
        assert problem.type.endswith("/validation")
        locs = sorted(tuple(issue.loc) for issue in problem.errors)
        assert locs == [("body", "input", "aspect_ratio"), ("body", "input", "seed")]
        assert "aspect_ratio" in str(problem)
        count = await stack.pool.fetchval(
            "SELECT count(*) FROM jobs WHERE client_id = $1", stack.client_id
        )
        assert count == 0

        async with AsyncClient("frk_not-a-key", base_url=stack.service_url) as stranger:
            with pytest.raises(AuthenticationError) as refused:
                await stranger.jobs.get("job_" + "0" * 32)
        assert refused.value.status == 401
        assert refused.value.type.endswith("/unauthorized")


async def test_a_create_whose_answer_was_lost_is_sent_again_and_makes_one_job(
    make_stack: StackFactory,
) -> None:
    async with make_stack() as stack:
        proxy = FaultyProxy(stack.service_url)
        # The first create reaches the service, and its 201 is lost: a 502 comes back instead.
        proxy.fail(Fault("POST", "/v1/jobs", status=502, forward=True))
        with LiveServer(proxy.app) as server:
            async with client_for(stack, server.url) as client:
                job = await client.jobs.create(FOX, wait=5)

        assert job.status is JobStatus.SUCCEEDED
        first, second = proxy.requests("POST", "/v1/jobs")
        key = first.headers["idempotency-key"]
        assert second.headers["idempotency-key"] == key
        assert first.headers["prefer"] == second.headers["prefer"] == "wait=5"
        rows = await stack.pool.fetch(
            "SELECT id, idempotency_key FROM jobs WHERE client_id = $1", stack.client_id
        )
        assert [(f"job_{r['id'].hex}", r["idempotency_key"]) for r in rows] == [(job.id, key)]


async def test_a_given_idempotency_key_returns_the_first_job(make_stack: StackFactory) -> None:
    async with make_stack() as stack, client_for(stack) as client:
        first = await client.jobs.create(FOX, idempotency_key="order-A-1001")
        again = await client.jobs.create(FOX, idempotency_key="order-A-1001")
        # The same job, as it is now: the worker may have moved it on between the two calls.
        assert again.id == first.id
        assert again.model_dump(include={"input", "metadata", "created_at"}) == first.model_dump(
            include={"input", "metadata", "created_at"}
        )
        count = await stack.pool.fetchval(
            "SELECT count(*) FROM jobs WHERE client_id = $1", stack.client_id
        )
        assert count == 1


async def test_reads_are_retried_after_503_and_other_posts_are_not(
    make_stack: StackFactory,
) -> None:
    async with make_stack(fal=FakeFalConfig(random_seed=7, queue_latency=60)) as stack:
        proxy = FaultyProxy(stack.service_url)
        with LiveServer(proxy.app) as server:
            async with client_for(stack, server.url) as client:
                job = await client.jobs.create(FOX)
                path = f"/v1/jobs/{job.id}"
                proxy.fail(Fault("GET", path, status=503, headers={"Retry-After": "1"}))
                started = time.monotonic()
                assert (await client.jobs.get(job.id)).id == job.id
                assert time.monotonic() - started >= 1.0  # Retry-After was honoured
                assert len(proxy.requests("GET", path)) == 2

                proxy.fail(Fault("POST", f"{path}/cancel", status=503))
                with pytest.raises(InternalServerError) as failed:
                    await client.jobs.cancel(job.id)
                assert failed.value.status == 503
                assert failed.value.title == "Injected fault"
                assert len(proxy.requests("POST", f"{path}/cancel")) == 1

            async with client_for(stack, server.url, max_retries=0) as impatient:
                proxy.fail(Fault("GET", path, status=503))
                with pytest.raises(InternalServerError):
                    await impatient.jobs.get(job.id)
                assert len(proxy.requests("GET", path)) == 3

        status = await stack.pool.fetchval(
            "SELECT status FROM jobs WHERE id = $1", job_uuid(job.id)
        )
        assert status != "canceled"


async def test_an_event_stream_resumes_after_a_dropped_connection(
    make_stack: StackFactory,
) -> None:
    async with make_stack(fal=FakeFalConfig(random_seed=7, run_latency=0.5)) as stack:
        proxy = FaultyProxy(stack.service_url)
        with LiveServer(proxy.app) as server:
            async with client_for(stack, server.url) as client:
                job = await client.jobs.create(FOX)
                await stack.wait_for(job.id, {"submitted", "running"})
                path = f"/v1/jobs/{job.id}/events"
                proxy.fail(Fault("GET", path, cut_after_first_event=True))
                events = await asyncio.wait_for(_collect(client, job.id), timeout=10)

        # Every event once, in order, although the first connection broke after one.
        assert [event.id for event in events] == await stored_event_ids(stack, job.id)
        first, second = proxy.requests("GET", path)
        assert "last-event-id" not in first.headers
        assert second.headers["last-event-id"] == events[0].id


async def _collect(client: AsyncClient, job_id: str) -> list[JobEvent]:
    return [event async for event in client.jobs.events(job_id)]


async def test_the_sync_client_does_the_same(make_stack: StackFactory) -> None:
    async with make_stack(fal=FakeFalConfig(random_seed=7, run_latency=0.3)) as stack:

        def scenario() -> None:
            with Client(key_of(stack), base_url=stack.service_url) as client:
                job = client.jobs.create(FOX)
                finished = client.jobs.wait(job.id, timeout=10)
                assert finished.status is JobStatus.SUCCEEDED
                events = list(client.jobs.events(job.id))
                assert events[-1].data == finished
                assert client.jobs.create(FOX, wait=True).status is JobStatus.SUCCEEDED
                listed = list(client.jobs.list(limit=1))
                assert [j.id for j in listed][1] == job.id
                with pytest.raises(NotFoundError):
                    client.jobs.cancel("job_" + "0" * 32)

        await asyncio.to_thread(scenario)
