"""Workers on committed state: a fresh database, the fake fal over real HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from app import ids
from app.auth import service as auth_service
from app.db.pool import Pool, create_pool
from app.fakefal import FakeFal, FakeFalConfig
from app.fal.client import FalClient
from app.ids import EVENT_ID_PREFIX, uuid7
from app.jobs import queue
from app.jobs import service as jobs_service
from app.jobs.schemas import JobCreate
from app.runtime import Runtime
from app.settings import Settings
from app.webhooks import fanout, signing
from app.webhooks import queue as webhooks_queue
from app.webhooks import repository as webhooks_repository
from app.webhooks.delivery import Sender
from app.worker.deliverer import Deliverer
from app.worker.runner import Worker
from tests.receivers import Answer, Receiver
from tests.servers import LiveServer
from tests.support import until, worker_runtime


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


async def _pings(pool: Pool, client: str, url: str, n: int) -> None:
    """A client with one endpoint at `url`, and `n` ping deliveries to it, due now."""
    client_id, _ = await auth_service.create_client(pool, client)
    endpoint = await webhooks_repository.insert_endpoint(
        pool,
        endpoint_id=uuid7(),
        client_id=client_id,
        url=url,
        description=None,
        event_types=["job.succeeded"],
        secret=signing.new_secret(),
    )
    now = datetime.now(UTC)
    async with pool.acquire() as conn, conn.transaction():
        for _ in range(n):
            await fanout.record_ping(
                conn,
                event_id=uuid7(),
                delivery_id=uuid7(),
                client_id=client_id,
                endpoint_id=endpoint["id"],
                payload={"type": "ping", "timestamp": now, "data": {}},
                at=now,
            )


def _counting_claims(worker: Worker, topic: str) -> tuple[Any, list[int]]:
    """The worker's loop for `topic`, and a one-item list counting the claims it makes."""
    loop = next(q for q in worker._queues if q.topic == topic)
    made = [0]
    real_claim = loop.claim

    async def counted(runtime: Runtime, free: int) -> Any:
        made[0] += 1
        return await real_claim(runtime, free)

    loop.claim = counted
    return loop, made


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
        workers.append(Worker(worker_runtime(pool, fal, settings), listen_url=None))
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
        first = (await queue.claim_submissions(pool, 3, 120)).rows
        second = (await queue.claim_submissions(pool, 10, 120)).rows
        third = (await queue.claim_submissions(pool, 10, 120)).rows
        assert len(first) == 3
        assert len(second) == 2
        assert third == []
        assert {r["id"] for r in first}.isdisjoint({r["id"] for r in second})
        # A lease that ran out makes the row claimable again (its worker died).
        await pool.execute(
            "UPDATE jobs SET locked_until = now() - interval '1 second' WHERE id = $1",
            first[0]["id"],
        )
        again = (await queue.claim_submissions(pool, 10, 120)).rows
        assert [r["id"] for r in again] == [first[0]["id"]]
        assert again[0]["attempts"] == 2
    finally:
        await pool.close()


async def test_two_delivery_workers_never_send_one_delivery_twice(
    fresh_database_url: str,
) -> None:
    inbox = Receiver()
    settings = Settings(
        database_url=fresh_database_url,
        fal_key="k",
        allow_private_webhook_urls=True,
        worker_poll_seconds=0.02,
        delivery_concurrency=16,
    )
    seed = await create_pool(fresh_database_url, min_size=1, max_size=2)
    with LiveServer(inbox.app) as receiver:
        await _pings(seed, "fan-out", f"{receiver.url}/hook", 150)

        sent = [0, 0]
        workers, closers = [], []
        async with httpx.AsyncClient() as http:
            for n in range(2):
                pool = await create_pool(fresh_database_url, min_size=1, max_size=4)
                runtime = worker_runtime(
                    pool, FalClient(http, queue_url="http://unused", key="k"), settings
                )
                session = Sender(concurrency=16, timeout=5, allow_private=True)
                deliverer = Deliverer(runtime, session)
                work = deliverer.work

                async def counted(runtime: Runtime, row: Any, n: int = n, work: Any = work) -> None:
                    sent[n] += 1
                    await work(runtime, row)

                deliverer.work = counted  # type: ignore[method-assign]
                workers.append(Worker(runtime, listen_url=None, deliverer=deliverer))
                closers.append((pool, session))
            runs = [asyncio.create_task(worker.run()) for worker in workers]
            deadline = time.monotonic() + 30
            while await seed.fetchval(
                "SELECT count(*) FROM deliveries WHERE status <> 'succeeded'"
            ):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            for worker in workers:
                worker.stop()
            await asyncio.gather(*runs)
            for pool, session in closers:
                await session.close()
                await pool.close()

    ids = [request.headers["webhook-id"] for request in inbox.received]
    assert len(ids) == 150
    assert len(set(ids)) == 150
    assert sum(sent) == 150
    assert min(sent) > 0, sent
    attempts = await seed.fetchval("SELECT count(*) FROM delivery_attempts")
    assert attempts == 150
    await seed.close()


@pytest.mark.parametrize(("jobs", "capacity", "claims"), [(1, 4, 1), (2, 1, 3)])
async def test_a_step_that_ends_wakes_its_loop_only_if_the_claim_filled_every_slot(
    fresh_database_url: str, fal_url: str, jobs: int, capacity: int, claims: int
) -> None:
    """A submission that ends frees a slot; the loop claims again for it only if its last
    claim took as many jobs as it had slots (more may be waiting). One job in four slots: the
    claim found everything due, and waking the loop would cost a claim that finds nothing.
    Two jobs in one slot: the second is claimed as soon as the first's step ends, not at the
    next poll (set beyond the test's bounds); that claim too filled the slot, so the second's
    end brings one more, which finds nothing."""
    settings = Settings(
        database_url=fresh_database_url,
        fal_queue_url=fal_url,
        fal_key="k",
        worker_poll_seconds=600,
        loop_stall_seconds=1800,
        worker_concurrency=capacity,
    )
    pool = await create_pool(fresh_database_url, min_size=1, max_size=4)
    http = httpx.AsyncClient()
    try:
        await _create_jobs(pool, jobs)
        runtime = worker_runtime(pool, FalClient(http, queue_url=fal_url, key="k"), settings)
        worker = Worker(runtime, listen_url=None)
        submit, made = _counting_claims(worker, "submit")
        run = asyncio.create_task(worker.run())
        await until(
            lambda: pool.fetchval(
                "SELECT count(*) = $1 FROM jobs WHERE fal_request_id IS NOT NULL", jobs
            )
        )
        await until(lambda: not submit.in_flight)
        # A woken loop claims within a few turns of the event loop; none comes.
        for _ in range(20):
            await asyncio.sleep(0)
        assert made[0] == claims
        assert not runtime.wakeup.local["submit"].is_set()
        worker.stop()
        await run
    finally:
        await http.aclose()
        await pool.close()


@pytest.mark.parametrize(("deliveries", "claims"), [(1, 1), (7, None)])
async def test_a_delivery_that_ends_wakes_its_loop_only_if_its_claim_held_some_back(
    fresh_database_url: str, deliveries: int, claims: int | None
) -> None:
    """Eight slots, two of them held back for clients with nothing in flight: one client's
    share is six. One delivery: the claim took it and skipped nothing, so its end wakes no
    claim (which would find nothing). Seven: the claim skipped the seventh for the share, so the
    first delivery to end brings the claim that sends it, not the next poll (set beyond the
    test's bounds)."""
    inbox = Receiver()
    settings = Settings(
        database_url=fresh_database_url,
        fal_key="k",
        allow_private_webhook_urls=True,
        worker_poll_seconds=600,
        loop_stall_seconds=1800,
        delivery_concurrency=8,
    )
    pool = await create_pool(fresh_database_url, min_size=1, max_size=4)
    session = Sender(concurrency=8, timeout=5, allow_private=True)
    try:
        with LiveServer(inbox.app) as receiver:
            await _pings(pool, "gate", f"{receiver.url}/hook", deliveries)
            async with httpx.AsyncClient() as http:
                runtime = worker_runtime(
                    pool, FalClient(http, queue_url="http://unused", key="k"), settings
                )
                worker = Worker(runtime, listen_url=None, deliverer=Deliverer(runtime, session))
                deliver, made = _counting_claims(worker, "deliver")
                run = asyncio.create_task(worker.run())
                await until(lambda: len(inbox.received) == deliveries)
                await until(lambda: not deliver.in_flight)
                # A woken loop claims within a few turns of the event loop.
                for _ in range(20):
                    await asyncio.sleep(0)
                if claims is not None:
                    assert made[0] == claims
                    assert not runtime.wakeup.local["deliver"].is_set()
                worker.stop()
                await run
    finally:
        await session.close()
        await pool.close()


async def test_work_woken_for_with_too_few_free_slots_is_claimed_as_soon_as_they_free(
    fresh_database_url: str,
) -> None:
    """While work is in flight a loop claims only once a batch of its slots is free (an
    eighth). Woken for new work with fewer free than that, it cannot claim yet; the step that
    frees enough must then wake it, even though its last claim took everything due and held
    nothing back. The loop's claim and steps are stand-ins here, the poll interval beyond the
    test's bounds."""
    settings = Settings(
        database_url=fresh_database_url,
        fal_key="k",
        worker_poll_seconds=600,
        loop_stall_seconds=1800,
        mirror_concurrency=16,  # a batch of two
    )
    pool = await create_pool(fresh_database_url, min_size=1, max_size=4)
    try:
        async with httpx.AsyncClient() as http:
            runtime = worker_runtime(
                pool, FalClient(http, queue_url="http://unused", key="k"), settings
            )
            worker = Worker(runtime, listen_url=None)
            mirror = next(q for q in worker._queues if q.topic == "mirror")
            due = list(range(15))
            claims: list[int] = []
            ends = {n: asyncio.Event() for n in range(16)}

            async def claim(runtime: Runtime, free: int) -> Any:
                taken, due[:] = due[:free], due[free:]
                claims.append(len(taken))
                return taken

            async def work(runtime: Runtime, n: Any) -> None:
                await ends[n].wait()

            mirror.claim, mirror.work = claim, work
            run = asyncio.create_task(worker.run())
            await until(lambda: claims == [15])  # one slot left free: less than a batch
            due.append(15)
            runtime.wakeup.notify("mirror")
            for _ in range(20):
                await asyncio.sleep(0)
            assert claims == [15]
            ends[0].set()  # two free now
            await until(lambda: claims == [15, 1])
            for event in ends.values():
                event.set()
            worker.stop()
            await run
    finally:
        await pool.close()


@asynccontextmanager
async def _delivering(database_url: str, settings: Settings) -> AsyncIterator[Worker]:
    """A worker with a delivery loop on a pool and delivery sender of its own, running for the
    block, then stopped and drained."""
    pool = await create_pool(database_url, min_size=1, max_size=4)
    session = Sender(concurrency=8, timeout=settings.delivery_timeout_seconds, allow_private=True)
    http = httpx.AsyncClient()
    try:
        runtime = worker_runtime(
            pool, FalClient(http, queue_url="http://unused", key="k"), settings
        )
        deliverer = Deliverer(runtime, session)
        worker = Worker(runtime, listen_url=None, deliverer=deliverer)
        run = asyncio.create_task(worker.run())
        try:
            yield worker
        finally:
            worker.stop()
            await run
            await deliverer.aclose()
    finally:
        await http.aclose()
        await session.close()
        await pool.close()


def _delivery_settings(database_url: str, **overrides: Any) -> Settings:
    return Settings(
        database_url=database_url,
        fal_key="k",
        allow_private_webhook_urls=True,
        worker_poll_seconds=0.02,
        **overrides,
    )


async def test_rows_leased_beyond_the_send_slots_go_back_unsent_when_the_worker_stops(
    fresh_database_url: str,
) -> None:
    """Two send slots, one of them held back for other clients: one client sends one at a time
    and leases three (LEASE_FACTOR). The first hangs; the other two wait for its slot. A stop
    hands them back at once, as if never claimed: no request, no lease, no attempt counted."""
    inbox = Receiver()
    inbox.script("/hook", then=Answer(delay=5))  # past the test: the one send hangs
    settings = _delivery_settings(
        fresh_database_url, delivery_concurrency=2, shutdown_timeout_seconds=0.5
    )
    pool = await create_pool(fresh_database_url, min_size=1, max_size=2)
    try:
        with LiveServer(inbox.app) as receiver:
            await _pings(pool, "leases", f"{receiver.url}/hook", 3)
            async with _delivering(fresh_database_url, settings):
                await until(lambda: len(inbox.received) == 1)
                await until(
                    lambda: pool.fetchval(
                        "SELECT count(*) = 3 FROM delivery_queue WHERE locked_until > now()"
                    )
                )
            sent = inbox.received[0].headers["webhook-id"]
            rows = await pool.fetch(
                "SELECT q.event_id, q.locked_until, q.attempt_count FROM delivery_queue q"
            )
        assert len(inbox.received) == 1
        waited = [row for row in rows if ids.encode(EVENT_ID_PREFIX, row["event_id"]) != sent]
        assert len(waited) == 2
        assert all(row["locked_until"] is None for row in waited), rows
        assert all(row["attempt_count"] == 0 for row in waited), rows
    finally:
        await pool.close()


async def test_a_row_that_waited_out_most_of_its_lease_goes_back_rather_than_out(
    fresh_database_url: str,
) -> None:
    """A leased row that waited for a slot past half its lease's slack beyond one send
    ((7 s - 6 s) / 2 here) is handed back and claimed afresh, never sent on what is left of its
    lease: sent then, it could outlive the lease, and a second worker would send it again.
    One send slot for this client: the first ping is answered in 4 s (within the 6 s timeout,
    so not a failure that would hand the second back by itself), the second in 4 s too (past
    the first claim's lease, had it gone out on it), and a second worker, started once the
    first holds both, claims whatever comes free."""
    inbox = Receiver()
    inbox.script("/hook", then=Answer(delay=4))
    settings = _delivery_settings(
        fresh_database_url,
        delivery_concurrency=2,
        delivery_timeout_seconds=6.0,
        delivery_lease_seconds=7.0,
        shutdown_timeout_seconds=0.5,
    )
    pool = await create_pool(fresh_database_url, min_size=1, max_size=2)
    try:
        with LiveServer(inbox.app) as receiver:
            await _pings(pool, "leases", f"{receiver.url}/hook", 2)
            second = await pool.fetchval("SELECT event_id FROM deliveries ORDER BY id DESC LIMIT 1")
            async with _delivering(fresh_database_url, settings):
                await until(
                    lambda: pool.fetchval(
                        "SELECT count(*) = 2 FROM delivery_queue WHERE locked_until > now()"
                    )
                )
                async with _delivering(fresh_database_url, settings):
                    await until(
                        lambda: pool.fetchval(
                            "SELECT status = 'succeeded' FROM deliveries WHERE event_id = $1",
                            second,
                        )
                    )
        received = [r.headers["webhook-id"] for r in inbox.received]
        assert received.count(ids.encode(EVENT_ID_PREFIX, second)) == 1, received
        attempts = await pool.fetchval(
            "SELECT count(*) FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id"
            " WHERE d.event_id = $1",
            second,
        )
        assert attempts == 1
    finally:
        await pool.close()


async def test_a_late_hand_back_leaves_another_workers_lease_alone(
    fresh_database_url: str,
) -> None:
    """A worker hands a leased row back only while the lease is still the one it claimed: one
    that comes after its lease ran out and another worker leased the row again changes
    nothing (the attempt count is the lease's token, as when results are recorded)."""
    pool = await create_pool(fresh_database_url, min_size=1, max_size=2)
    try:
        await _pings(pool, "late", "http://127.0.0.1:9/hook", 1)  # claimed, never sent

        async def claim() -> Any:
            claimed = await webhooks_queue.claim_deliveries(
                pool, 1, 60, [], in_flight={}, capacity=8, reserve=2
            )
            return claimed.rows

        first = await claim()
        await pool.execute("UPDATE delivery_queue SET locked_until = now() - interval '1 second'")
        second = await claim()
        assert [row["attempt_count"] for row in (*first, *second)] == [1, 2]
        await webhooks_queue.release_deliveries(pool, first)
        row = await pool.fetchrow("SELECT locked_until, attempt_count FROM delivery_queue")
        assert row["attempt_count"] == 2
        assert row["locked_until"] is not None
        await webhooks_queue.release_deliveries(pool, second)
        row = await pool.fetchrow("SELECT locked_until, attempt_count FROM delivery_queue")
        assert (row["locked_until"], row["attempt_count"]) == (None, 1)
    finally:
        await pool.close()


async def test_rows_waiting_behind_a_failed_send_go_back_and_the_open_breaker_keeps_them(
    fresh_database_url: str,
) -> None:
    """One send at a time for this client, three rows leased. The first gets no answer in
    time: a breaker failure, which opens the breaker here (one failure is enough). The two
    waiting behind it are not sent on their old leases: they go back unsent, claims skip
    their endpoint until the failure is recorded, and then its open breaker keeps them."""
    inbox = Receiver()
    inbox.script("/hook", then=Answer(delay=3))  # past the 1 s delivery timeout
    settings = _delivery_settings(
        fresh_database_url,
        delivery_concurrency=2,
        delivery_timeout_seconds=1.0,
        delivery_lease_seconds=10.0,
        delivery_breaker_failures=1,
        shutdown_timeout_seconds=0.5,
    )
    pool = await create_pool(fresh_database_url, min_size=1, max_size=2)
    try:
        with LiveServer(inbox.app) as receiver:
            await _pings(pool, "breaker", f"{receiver.url}/hook", 3)
            async with _delivering(fresh_database_url, settings):
                await until(
                    lambda: pool.fetchval(
                        "SELECT breaker_open_until IS NOT NULL FROM webhook_endpoints"
                    )
                )
                await until(
                    lambda: pool.fetchval(
                        "SELECT count(*) = 2 FROM delivery_queue"
                        " WHERE locked_until IS NULL AND attempt_count = 0"
                    )
                )
            sent = len(inbox.received)
        assert sent == 1
        assert await pool.fetchval("SELECT count(*) FROM delivery_attempts") == 1
    finally:
        await pool.close()
