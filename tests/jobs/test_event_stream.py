"""GET /v1/jobs/{id}/events: the job's events as Server-Sent Events, over real HTTP."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx
import orjson

from app.catalog import DEFAULT_MODEL_ID
from app.db.pool import Pool
from app.fakefal import FakeFalConfig
from app.ids import uuid7
from app.jobs import repository
from tests.stack import Stack, StackFactory
from tests.support import Tenant, assert_problem, job_uuid


@dataclass
class Frame:
    id: str
    event: str
    data: bytes


async def read_stream(
    api: httpx.AsyncClient, job_id: str, headers: dict[str, str] | None = None, query: str = ""
) -> tuple[list[Frame], list[str]]:
    """Every event of the stream until the server closes it, and its other lines."""
    frames: list[Frame] = []
    other: list[str] = []
    fields: dict[str, str] = {}
    async with api.stream("GET", f"/v1/jobs/{job_id}/events{query}", headers=headers) as answer:
        assert answer.status_code == 200, await answer.aread()
        assert answer.headers["content-type"].startswith("text/event-stream")
        assert answer.headers["cache-control"] == "no-cache"
        async for line in answer.aiter_lines():
            if line == "":
                if fields:
                    frames.append(Frame(fields["id"], fields["event"], fields["data"].encode()))
                fields = {}
            elif line.startswith(("id: ", "event: ", "data: ")):
                name, _, value = line.partition(": ")
                fields[name] = value
            else:
                other.append(line)
    return frames, other


async def stored_events(stack: Stack, job_id: str) -> list[Frame]:
    rows = await stack.pool.fetch(
        "SELECT id, type, payload FROM events WHERE job_id = $1 ORDER BY created_at, id",
        job_uuid(job_id),
    )
    return [
        Frame(f"evt_{row['id'].hex}", row["type"], orjson.dumps(row["payload"])) for row in rows
    ]


async def test_the_stream_is_every_event_in_order_and_ends_at_the_terminal_one(
    make_stack: StackFactory,
) -> None:
    # fal holds the job for a while, so the stream is open before anything has happened and
    # follows the events live rather than replaying them.
    async with make_stack(fal=FakeFalConfig(random_seed=7, run_latency=0.6)) as stack:
        job_id = await stack.create_job()
        frames, other = await asyncio.wait_for(read_stream(stack.api, job_id), 15)

        assert other == ["retry: 1000"]
        assert [frame.event for frame in frames][-1] == "job.succeeded"
        # Byte for byte the stored events: ids are the deliveries' webhook-ids, data the body.
        assert frames == await stored_events(stack, job_id)
        last = orjson.loads(frames[-1].data)
        assert last["type"] == "job.succeeded"
        assert last["data"] == (await stack.api.get(f"/v1/jobs/{job_id}")).json()


async def test_a_stream_resumes_after_its_last_event_id(make_stack: StackFactory) -> None:
    async with make_stack() as stack:
        job_id = await stack.create_job()
        await stack.wait_for(job_id)
        # One event per transition: submitted, then succeeded.
        everything = await stored_events(stack, job_id)
        assert [frame.event for frame in everything] == ["job.submitted", "job.succeeded"]

        after_first, _ = await read_stream(
            stack.api, job_id, headers={"Last-Event-ID": everything[0].id}
        )
        assert after_first == everything[1:]
        by_query, _ = await read_stream(
            stack.api, job_id, query=f"?last_event_id={everything[0].id}"
        )
        assert by_query == everything[1:]

        # Everything was seen, up to the terminal event: an empty stream that closes at once.
        after_last, other = await asyncio.wait_for(
            read_stream(stack.api, job_id, headers={"Last-Event-ID": everything[-1].id}), 2
        )
        assert after_last == []
        assert other == ["retry: 1000"]


async def test_a_wrong_job_or_last_event_id_is_a_problem_not_a_stream(
    make_stack: StackFactory,
) -> None:
    async with make_stack() as stack:
        job_id = await stack.create_job()
        other_job_id = await stack.create_job("another")
        await stack.wait_for(other_job_id)
        foreign_event = (await stored_events(stack, other_job_id))[0].id

        for last_event_id in (foreign_event, "evt_nothex", "evt_" + "0" * 32):
            answer = await stack.api.get(
                f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": last_event_id}
            )
            assert_problem(answer, 400, "unknown-last-event-id")

        answer = await stack.api.get("/v1/jobs/job_" + "0" * 32 + "/events")
        assert_problem(answer, 404)
        answer = await stack.api.get(f"/v1/jobs/{job_id}/events", headers={"Authorization": ""})
        assert_problem(answer, 401)


async def test_another_clients_job_has_no_stream(make_stack: StackFactory) -> None:
    from app.auth import service as auth_service

    async with make_stack() as stack:
        job_id = await stack.create_job()
        _, other_key = await auth_service.create_client(stack.pool, "someone else")
        answer = await stack.api.get(
            f"/v1/jobs/{job_id}/events", headers={"Authorization": f"Bearer {other_key}"}
        )
        assert_problem(answer, 404)


async def test_waiting_streams_hold_no_database_connection(make_stack: StackFactory) -> None:
    # Three connections in the service's pool and twelve streams waiting on jobs at fal: were
    # a stream to keep its connection while it waits, the rest (and the job's own progress,
    # which needs the same pool) would stall and the streams would never end.
    async with make_stack(
        fal=FakeFalConfig(random_seed=7, run_latency=1.0), db_pool_min_size=1, db_pool_max_size=3
    ) as stack:
        job_ids = [await stack.create_job(f"fox {n}") for n in range(12)]
        results = await asyncio.wait_for(
            asyncio.gather(*(read_stream(stack.api, job_id) for job_id in job_ids)), 20
        )
        for job_id, (frames, _) in zip(job_ids, results, strict=True):
            assert frames[-1].event == "job.succeeded"
            assert frames == await stored_events(stack, job_id)


async def test_a_transition_that_waited_for_another_is_dated_after_it(
    pool: Pool, tenant: Tenant
) -> None:
    # The stream pages through a job's events by their time, so a transition whose transaction
    # began first but took the row lock second must still be dated second, else a reader past
    # the first event would never see the terminal one.
    job_id = uuid7()
    await pool.execute(
        "INSERT INTO jobs (id, client_id, model, input) VALUES ($1, $2, $3, $4)",
        job_id,
        tenant.client_id,
        DEFAULT_MODEL_ID,
        {"prompt": "race"},
    )
    async with pool.acquire() as callback, callback.transaction():
        await callback.execute("SELECT 1")  # the callback's transaction has begun
        await asyncio.sleep(0.01)
        submitted = await pool.fetchrow(
            repository.MARK_SUBMITTED, job_id, "req-1", "s", "r", "c", None
        )
        succeeded = await callback.fetchrow(repository.MARK_SUCCEEDED, job_id, {}, "req-1")
    assert submitted is not None
    assert succeeded is not None
    assert succeeded["updated_at"] > submitted["updated_at"]
