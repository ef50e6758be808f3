"""Fair submission to fal: the account-wide cap counted in Postgres, fair share by weight between
clients, per-client caps, priority within a client, and fal's priority and start-deadline
headers at the fake fal. Fresh databases (committed state); fal is the fake over HTTP."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.auth import service as auth_service
from app.catalog import DEFAULT_MODEL_ID
from app.db.pool import Pool, create_pool
from app.fakefal import FakeFal, FakeFalConfig
from app.fal.client import FalClient
from app.jobs import queue
from app.jobs import service as jobs_service
from app.jobs.schemas import JobCreate
from app.settings import Settings
from app.worker.runner import Worker
from tests.servers import LiveServer
from tests.stack import StackFactory
from tests.support import job_uuid, worker_runtime

IN_FLIGHT = """
SELECT count(*) FROM jobs
WHERE status IN ('submitted', 'running') OR (status = 'queued' AND locked_until > now())
"""


@pytest.fixture
async def pool(fresh_database_url: str) -> AsyncIterator[Pool]:
    pool = await create_pool(fresh_database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


async def _client(pool: Pool, name: str, **limits: Any) -> uuid.UUID:
    client_id, _ = await auth_service.create_client(pool, name)
    for column, value in limits.items():
        await pool.execute(f"UPDATE clients SET {column} = $2 WHERE id = $1", client_id, value)
    return client_id


async def _jobs(pool: Pool, client_id: uuid.UUID, n: int, **options: Any) -> list[uuid.UUID]:
    made = []
    for i in range(n):
        request = JobCreate(input={"prompt": f"job {i}", "resolution": "1K"}, **options)
        created = await jobs_service.create_job(pool, client_id, request, None)
        made.append(created.job["id"])
    return made


async def _claim(pool: Pool, limit: int = 100, **options: Any) -> list[uuid.UUID]:
    rows = (await queue.claim_submissions(pool, limit, 60, **options)).rows
    return [row["id"] for row in rows]


async def _owners(pool: Pool, ids: list[uuid.UUID]) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT c.name, count(*) AS n FROM jobs j JOIN clients c ON c.id = j.client_id "
        "WHERE j.id = ANY($1::uuid[]) GROUP BY c.name",
        ids,
    )
    return {row["name"]: row["n"] for row in rows}


# -- the claim, on Postgres alone ---------------------------------------------------------------


async def test_a_backlog_does_not_take_the_slots_of_a_client_that_comes_later(pool: Pool) -> None:
    a = await _client(pool, "a")
    b = await _client(pool, "b")
    await _jobs(pool, a, 30)
    await _jobs(pool, b, 3)

    claimed = await _claim(pool, max_in_flight=4)
    assert await _owners(pool, claimed) == {"a": 2, "b": 2}
    # The cap counts what is leased: nothing more until a slot frees.
    assert await _claim(pool, max_in_flight=4) == []
    assert await pool.fetchval(IN_FLIGHT) == 4
    # One of b's finishes: the slot goes back to b, which now has fewer in flight than a,
    # though a's 28 waiting jobs were queued first.
    await pool.execute(
        "UPDATE jobs SET status = 'succeeded', locked_until = NULL "
        "WHERE id = (SELECT id FROM jobs WHERE id = ANY($1::uuid[]) AND client_id = $2 LIMIT 1)",
        claimed,
        b,
    )
    assert await _owners(pool, await _claim(pool, max_in_flight=4)) == {"b": 1}


async def test_fair_share_off_is_first_in_first_out(pool: Pool) -> None:
    a = await _client(pool, "a")
    b = await _client(pool, "b")
    await _jobs(pool, a, 30)
    await _jobs(pool, b, 3)
    claimed = await _claim(pool, max_in_flight=4, fair_share=False)
    assert await _owners(pool, claimed) == {"a": 4}


async def test_slots_go_by_weight(pool: Pool) -> None:
    heavy = await _client(pool, "heavy", weight=3)
    light = await _client(pool, "light")
    await _jobs(pool, light, 20)
    await _jobs(pool, heavy, 20)
    claimed = await _claim(pool, max_in_flight=8)
    assert await _owners(pool, claimed) == {"heavy": 6, "light": 2}


async def test_a_clients_own_cap_holds_while_slots_are_free(pool: Pool) -> None:
    capped = await _client(pool, "capped", max_in_flight=2)
    other = await _client(pool, "other")
    await _jobs(pool, capped, 10)
    await _jobs(pool, other, 1)
    assert await _owners(pool, await _claim(pool, max_in_flight=50)) == {"capped": 2, "other": 1}
    # At fal now: still counted against the client's cap.
    await pool.execute(
        "UPDATE jobs SET status = 'submitted', locked_until = NULL WHERE locked_until IS NOT NULL"
    )
    assert await _claim(pool, max_in_flight=50) == []
    # The default applies to clients with no cap of their own; a cap of their own wins.
    await _jobs(pool, other, 5)
    claimed = await _claim(pool, max_in_flight=50, default_client_max_in_flight=3)
    assert await _owners(pool, claimed) == {"other": 2}


async def test_a_claim_says_whether_it_left_due_jobs_for_want_of_a_slot_at_fal(
    pool: Pool,
) -> None:
    """`held_back` is what lets a job leaving fal wake the submission loop (app.db.wakeup.FREED):
    true whenever a cap kept a due job from this claim, false when the claim took everything
    due with slots to spare, so that a finished job then costs no claim."""

    async def held(**options: Any) -> bool:
        return (await queue.claim_submissions(pool, 10, 60, **options)).held_back

    a = await _client(pool, "a")
    assert not await held()  # nothing due, no cap
    assert not await held(max_in_flight=50, default_client_max_in_flight=5)
    await _jobs(pool, a, 3)
    claim = await queue.claim_submissions(pool, 10, 60, max_in_flight=50)
    assert len(claim.rows) == 3
    assert not claim.held_back  # all three, seven slots to spare
    # The account's cap leaves fewer slots than the worker has, but the claim needed fewer.
    await _jobs(pool, a, 1)
    claim = await queue.claim_submissions(pool, 10, 60, max_in_flight=6)
    assert len(claim.rows) == 1
    assert not claim.held_back
    await pool.execute("UPDATE jobs SET status = 'succeeded' WHERE id = $1", claim.rows[0]["id"])
    await _jobs(pool, a, 3)
    # The account's cap: 3 at fal (leased) and a cap of 4 leave one slot of the worker's ten.
    claim = await queue.claim_submissions(pool, 10, 60, max_in_flight=4)
    assert len(claim.rows) == 1
    assert claim.held_back
    assert await held(max_in_flight=4)  # none left at all: said on the row of its own
    # A client's own cap: four in flight against its cap of 5, with two due.
    assert await held(max_in_flight=50, default_client_max_in_flight=5)  # ranked past it
    assert await held(max_in_flight=50, default_client_max_in_flight=5)  # now at it
    # Every job finished: nothing at fal, nothing due.
    await pool.execute("UPDATE jobs SET status = 'succeeded' WHERE client_id = $1", a)
    assert not await held(max_in_flight=50, default_client_max_in_flight=5)


async def test_priority_orders_a_clients_own_jobs(pool: Pool) -> None:
    a = await _client(pool, "a")
    (low,) = await _jobs(pool, a, 1, priority="low")
    (normal,) = await _jobs(pool, a, 1)
    (high,) = await _jobs(pool, a, 1, priority="high")
    order = [await _claim(pool, limit=1) for _ in range(3)]
    assert order == [[high], [normal], [low]]
    stored = await pool.fetch("SELECT priority FROM jobs ORDER BY priority")
    assert [row["priority"] for row in stored] == [0, 1, 2]


async def test_a_claim_with_a_big_backlog_stays_fast(pool: Pool) -> None:
    """10,000 queued for one client, 10 for another: the claim reads each client's first
    `limit` jobs only. The bound is loose (a busy CI machine); the README states the figure."""
    a = await _client(pool, "a")
    b = await _client(pool, "b")
    await pool.execute(
        "INSERT INTO jobs (id, client_id, model, input) "
        "SELECT gen_random_uuid(), $1, $2, '{}'::jsonb FROM generate_series(1, 10000)",
        a,
        DEFAULT_MODEL_ID,
    )
    await _jobs(pool, b, 10)
    await pool.execute("ANALYZE jobs")
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        claimed = await _claim(pool, limit=8, max_in_flight=10_000)
        timings.append(time.perf_counter() - started)
        await pool.execute(
            "UPDATE jobs SET status = 'submitted', locked_until = NULL WHERE id = ANY($1)", claimed
        )
    assert sorted(timings)[len(timings) // 2] < 0.05, timings


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(node for child in plan.get("Plans", []) for node in _nodes(child))]


async def test_a_claim_reads_by_index_whatever_the_costs_say(pool: Pool) -> None:
    """The claim's count of what is in flight reads partial indexes full of dead entries
    (every job that left fal leaves one until the next vacuum): only a plain index scan learns
    to skip them, a bitmap scan visits each one's heap page on every claim. Here the costs are
    tilted towards a bitmap scan (random reads dear; no sequential scans, as with a big table),
    and the plan is checked: no bitmap scan, and the update finds its picks by primary key."""
    a = await _client(pool, "a")
    insert = (
        "INSERT INTO jobs (id, client_id, model, input, status) "
        "SELECT gen_random_uuid(), $1, $2, '{}'::jsonb, $3 FROM generate_series(1, $4)"
    )
    await pool.execute(insert, a, DEFAULT_MODEL_ID, "submitted", 40)
    await pool.execute(insert, a, DEFAULT_MODEL_ID, "queued", 2000)
    await pool.execute("ANALYZE jobs")
    async with pool.acquire() as conn, conn.transaction():
        # The statement of the installed function (migration 0023), run as it runs: with the
        # function's own settings.
        function = await conn.fetchrow(
            "SELECT prosrc, proconfig FROM pg_proc WHERE proname = 'claim_submissions'"
        )
        statement = function["prosrc"].split("RETURN QUERY", 1)[1].rsplit(";", 1)[0]
        for setting in function["proconfig"]:
            await conn.execute("SELECT set_config($1, $2, true)", *setting.split("=", 1))
        await conn.execute("SET LOCAL enable_seqscan = off; SET LOCAL random_page_cost = 40")
        plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {statement}", 8, 60, 1000, None, True)
    nodes = _nodes(plan[0]["Plan"])  # the pool decodes json
    assert not [n for n in nodes if "Bitmap" in n["Node Type"]], plan
    (update,) = [n for n in nodes if n["Node Type"] == "ModifyTable"]
    (scan,) = [n for n in update["Plans"] if n.get("Relation Name") == "jobs"]
    assert (scan["Node Type"], scan.get("Index Name")) == ("Index Scan", "pk_jobs"), plan


async def test_a_claim_reads_each_clients_due_jobs_only_up_to_the_free_slots(pool: Pool) -> None:
    """A worker with 128 free slots, and the account's cap leaving 3 (37 of 40 at fal): no
    client can be given more than 3, so no more than 3 of each client's 500 due jobs are read
    and ranked, under the claims' lock (migration 0024; before, all 128 the worker had)."""
    a, b = await _client(pool, "a"), await _client(pool, "b")
    insert = (
        "INSERT INTO jobs (id, client_id, model, input, status) "
        "SELECT gen_random_uuid(), $1, $2, '{}'::jsonb, $3 FROM generate_series(1, $4)"
    )
    await pool.execute(insert, a, DEFAULT_MODEL_ID, "submitted", 37)
    await pool.execute(insert, a, DEFAULT_MODEL_ID, "queued", 500)
    await pool.execute(insert, b, DEFAULT_MODEL_ID, "queued", 500)
    async with pool.acquire() as conn:
        function = await conn.fetchrow(
            "SELECT prosrc, proconfig FROM pg_proc WHERE proname = 'claim_submissions'"
        )
        statement = function["prosrc"].split("RETURN QUERY", 1)[1].rsplit(";", 1)[0]
        transaction = conn.transaction()
        await transaction.start()
        try:
            plan = await conn.fetchval(
                f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", 128, 60, 40, None, True
            )
        finally:
            await transaction.rollback()
    limits = [n for n in _nodes(plan[0]["Plan"]) if n["Node Type"] == "Limit"]
    assert limits, plan
    # Rows per loop: the LATERAL's limit runs once per client.
    assert max(n["Actual Rows"] for n in limits) <= 3, plan


async def test_with_many_clients_due_a_claim_reads_about_what_it_picks(pool: Pool) -> None:
    """30 clients with 5 due jobs each, 8 free slots: every client's first job has the same key,
    so the 8 picked are first jobs, and no client's second is read (migration 0027; before, all
    five of each, 150 rows ranked under the claims' lock for 8 picks)."""
    clients = [await _client(pool, f"c{i}") for i in range(30)]
    for client_id in clients:
        await pool.execute(
            "INSERT INTO jobs (id, client_id, model, input) "
            "SELECT gen_random_uuid(), $1, $2, '{}'::jsonb FROM generate_series(1, 5)",
            client_id,
            DEFAULT_MODEL_ID,
        )
    async with pool.acquire() as conn:
        statement = await conn.fetchval(
            "SELECT prosrc FROM pg_proc WHERE proname = 'claim_submissions'"
        )
        statement = statement.split("RETURN QUERY", 1)[1].rsplit(";", 1)[0]
        transaction = conn.transaction()
        await transaction.start()
        try:
            plan = await conn.fetchval(
                f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", 8, 60, None, None, True
            )
            picked = await conn.fetch(
                "SELECT client_id, count(*) AS n FROM jobs WHERE locked_until IS NOT NULL"
                " GROUP BY client_id"
            )
        finally:
            await transaction.rollback()
    assert len(picked) == 8
    assert all(row["n"] == 1 for row in picked)
    scans = [
        n for n in _nodes(plan[0]["Plan"]) if n.get("Index Name") == "ix_jobs_client_submission_due"
    ]
    # A probe per client for its first due job, then at most that one job read per client.
    read = sum(n["Actual Rows"] * n["Actual Loops"] for n in scans)
    assert read <= 2 * 30, [(n["Actual Rows"], n["Actual Loops"]) for n in scans]


# -- two workers, one account-wide cap ------------------------------------------------------


async def test_two_workers_never_exceed_the_account_cap(fresh_database_url: str) -> None:
    fake = FakeFal(FakeFalConfig(random_seed=3, run_latency=0.2))
    cap = 5
    with LiveServer(fake.app) as fal_server:
        settings = Settings(
            database_url=fresh_database_url,
            fal_queue_url=fal_server.url,
            fal_key="k",
            worker_poll_seconds=0.01,
            worker_concurrency=8,
            poll_interval_seconds=0.05,
            fal_max_in_flight=cap,
        )
        seed = await create_pool(fresh_database_url, min_size=1, max_size=2)
        await _jobs(seed, await _client(seed, "a"), 30)
        await _jobs(seed, await _client(seed, "b"), 10)
        pools, https, workers = [], [], []
        for _ in range(2):
            pool = await create_pool(fresh_database_url, min_size=1, max_size=6)
            http = httpx.AsyncClient()
            fal = FalClient(http, queue_url=fal_server.url, key="k")
            pools.append(pool)
            https.append(http)
            workers.append(Worker(worker_runtime(pool, fal, settings), listen_url=None))
        runs = [asyncio.create_task(worker.run()) for worker in workers]
        samples = []
        deadline = time.monotonic() + 60
        while await seed.fetchval("SELECT count(*) FROM jobs WHERE status <> 'succeeded'"):
            assert time.monotonic() < deadline, "jobs did not finish"
            samples.append(await seed.fetchval(IN_FLIGHT))
            await asyncio.sleep(0.005)
        for worker in workers:
            worker.stop()
        await asyncio.gather(*runs)
        # The fake's own timeline: never more than `cap` requests open at once.
        spans = [(r.queued_at, r.completes_at) for r in fake.requests]
        for http in https:
            await http.aclose()
        for pool in pools:
            await pool.close()
        await seed.close()
    assert len(spans) == 40
    assert max(samples) <= cap, max(samples)
    assert max(samples) == cap  # the cap is reached, not just respected
    for start, _ in spans:
        # A request submitted at `start` while the previous holder of its slot was being
        # recorded may overlap it by the recording's few milliseconds: fal finished that one
        # before we learned of it, so count a request open until its completion.
        assert sum(1 for s, e in spans if s <= start < e) <= cap


# -- end to end: the service and the fake fal ---------------------------------------------


async def test_a_later_client_is_not_queued_behind_a_backlog(make_stack: StackFactory) -> None:
    async with make_stack(
        fal=FakeFalConfig(random_seed=5, run_latency=0.3), fal_max_in_flight=3
    ) as stack:
        backlog = [await stack.create_job(f"a {i}") for i in range(30)]
        _, other_key = await auth_service.create_client(stack.pool, "later")
        async with httpx.AsyncClient(
            base_url=stack.service_url, headers={"Authorization": f"Bearer {other_key}"}
        ) as other:
            response = await other.post("/v1/jobs", json={"input": {"prompt": "b"}})
            assert response.status_code == 201, response.text
            # After the job's commit: on a busy machine the request itself can outlast a
            # slot's turnover, and what went to fal meanwhile says nothing of the order.
            answered_at = await stack.pool.fetchval("SELECT now()")
            late = response.json()["id"]
            deadline = time.monotonic() + 30
            while (await other.get(f"/v1/jobs/{late}")).json()["status"] != "succeeded":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        late_submitted = await stack.pool.fetchval(
            "SELECT submitted_at FROM jobs WHERE id = $1", job_uuid(late)
        )
        # Submitted ahead of the backlog. What of a's can still be recorded as submitted
        # first: the 3 it had in flight when b's job was stored (claimed before, their fal
        # calls answering after), and the 2 a claim may take beside b's when it finds 3 slots
        # free. First in, first out would send 27 or more of a's first.
        went_first = await stack.pool.fetchval(
            "SELECT count(*) FROM jobs WHERE client_id = $1 AND submitted_at > $2 "
            "AND submitted_at < $3",
            stack.client_id,
            answered_at,
            late_submitted,
        )
        assert went_first <= 3 + 2, went_first
        waiting = await stack.pool.fetchval(
            "SELECT count(*) FROM jobs WHERE id = ANY($1::uuid[]) AND submitted_at IS NULL",
            [job_uuid(j) for j in backlog],
        )
        assert waiting > 10  # the backlog was still there when the later job went


async def test_priority_and_start_timeout_reach_fal_as_headers(make_stack: StackFactory) -> None:
    async with make_stack() as stack:
        sent = {}
        for options in ({}, {"priority": "low", "start_timeout": 30}, {"priority": "high"}):
            response = await stack.api.post(
                "/v1/jobs", json={"input": {"prompt": "p", "resolution": "1K"}, **options}
            )
            assert response.status_code == 201, response.text
            job = response.json()
            assert job["priority"] == options.get("priority", "normal")
            assert job["start_timeout"] == options.get("start_timeout")
            done = await stack.wait_for(job["id"])
            assert done["status"] == "succeeded", done
            sent[done["fal_request_id"]] = options
        at_fal = {r["id"]: r for r in (await stack.fal.get("/_fake/requests")).json()["requests"]}
    by_options = {
        (o.get("priority"), o.get("start_timeout")): at_fal[rid] for rid, o in sent.items()
    }
    # fal knows normal and low only: high orders our own queue and reaches fal as normal.
    assert by_options[(None, None)]["priority"] == "normal"
    assert by_options[("low", 30)]["priority"] == "low"
    assert by_options[("low", 30)]["start_timeout"] == 30
    assert by_options[("high", None)]["priority"] == "normal"
    assert by_options[("high", None)]["start_timeout"] is None


async def test_a_job_that_misses_its_start_deadline_fails_with_request_timeout(
    make_stack: StackFactory,
) -> None:
    async with make_stack(fal=FakeFalConfig(random_seed=5, run_latency=4, concurrency=1)) as stack:
        first = await stack.create_job("takes the only runner")
        await stack.wait_for(first, {"submitted", "running"})
        response = await stack.api.post(
            "/v1/jobs",
            json={"input": {"prompt": "in a hurry", "resolution": "1K"}, "start_timeout": 1.5},
        )
        late = response.json()["id"]
        job = await stack.wait_for(late, within=20)
        assert job["status"] == "failed", job
        assert job["error"]["type"] == "request_timeout"
        assert job["started_at"] is None
        assert (await stack.wait_for(first, within=20))["status"] == "succeeded"
        # Sent once: a missed start deadline is not retried.
        assert (await stack.fal_stats())["submitted"] == 2


# -- the fake fal honours both headers -----------------------------------------------------


@pytest.fixture
async def fake_fal() -> AsyncIterator[tuple[FakeFal, str]]:
    fake = FakeFal(FakeFalConfig(random_seed=1, run_latency=0.3, concurrency=1))
    with LiveServer(fake.app) as server:
        yield fake, server.url


async def test_the_fake_starts_low_priority_only_when_no_normal_one_waits(
    fake_fal: tuple[FakeFal, str],
) -> None:
    fake, url = fake_fal
    async with httpx.AsyncClient() as http:
        fal = FalClient(http, queue_url=url, key="k")
        first = await fal.submit(DEFAULT_MODEL_ID, {"prompt": "1"}, webhook_url=None)
        low = await fal.submit(
            DEFAULT_MODEL_ID, {"prompt": "2"}, webhook_url=None, low_priority=True
        )
        normal = await fal.submit(DEFAULT_MODEL_ID, {"prompt": "3"}, webhook_url=None)
        assert (await fal.status(low.status_url)).queue_position == 0
        deadline = time.monotonic() + 10
        while (await fal.status(low.status_url)).status != "COMPLETED":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        results = [await fal.result(s.response_url) for s in (first, normal, low)]
    assert all(result.ok for result in results)
    started = {r.id: r.started_at for r in fake.requests}
    assert started[first.request_id] < started[normal.request_id] < started[low.request_id]
    # One at a time (concurrency 1): each started when the one before completed.
    spans = sorted((r.started_at, r.completes_at) for r in fake.requests)
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1))


async def test_the_fake_ends_a_request_that_missed_its_start_deadline_with_504(
    fake_fal: tuple[FakeFal, str],
) -> None:
    fake, url = fake_fal
    await _patch(url, run_latency=2.0)
    async with httpx.AsyncClient() as http:
        fal = FalClient(http, queue_url=url, key="k")
        await fal.submit(DEFAULT_MODEL_ID, {"prompt": "1"}, webhook_url=None)
        hurried = await fal.submit(
            DEFAULT_MODEL_ID, {"prompt": "2"}, webhook_url=None, start_timeout=0.5
        )
        deadline = time.monotonic() + 10
        while (status := await fal.status(hurried.status_url)).status != "COMPLETED":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert status.error_type == "request_timeout"
        raw = await http.get(hurried.response_url, headers={"Authorization": "Key k"})
    assert raw.status_code == 504
    assert raw.headers["x-fal-request-timeout-type"] == "user"
    assert raw.headers["x-fal-error-type"] == "request_timeout"
    assert raw.json() == {"detail": "Request timed out", "error_type": "request_timeout"}
    (summary,) = [r.summary(time.monotonic()) for r in fake.requests if r.id == hurried.request_id]
    assert summary["started_at"] is None
    assert summary["start_timeout"] == 0.5


async def test_the_fake_refuses_bad_priority_and_timeout_headers(
    fake_fal: tuple[FakeFal, str],
) -> None:
    _, url = fake_fal
    async with httpx.AsyncClient() as http:
        for headers in (
            {"X-Fal-Queue-Priority": "urgent"},
            {"X-Fal-Request-Timeout": "0.05"},
            {"X-Fal-Request-Timeout": "soon"},
        ):
            response = await http.post(
                f"{url}/{DEFAULT_MODEL_ID}",
                json={"prompt": "p"},
                headers={"Authorization": "Key k", **headers},
            )
            assert response.status_code == 422, headers


async def _patch(url: str, **knobs: Any) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.patch(f"{url}/_fake/config", json=knobs)
        assert response.status_code == 200, response.text
