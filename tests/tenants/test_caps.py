"""Caps on what a client may hold: webhook endpoints and queued jobs. A create beyond one is a
409 problem naming the limit, stores nothing, and concurrent creates at the edge never pass it."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from app.clients import service as clients
from app.db.pool import Pool
from app.main import create_app
from app.settings import Settings
from tests.conftest import make_tenant
from tests.support import Tenant, assert_problem, count_jobs
from tests.tenants.conftest import ENDPOINT_URL

JOB = {"input": {"prompt": "a red fox in snow", "resolution": "1K"}}


async def limit(pool: Pool, tenant: Tenant, **changes: object) -> None:
    # Before the tenant's first request: the key (and its limits) is not cached yet.
    await clients.set_limits(pool, str(tenant.client_id), dict(changes))


async def endpoints_of(pool: Pool, tenant: Tenant) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM webhook_endpoints WHERE client_id = $1", tenant.client_id
    )
    return count


async def test_endpoints_beyond_the_cap_are_refused_and_not_stored(
    pool: Pool, client_a: Tenant
) -> None:
    await limit(pool, client_a, max_endpoints=2)
    for n in range(2):
        created = await client_a.http.post(
            "/v1/webhook-endpoints", json={"url": f"{ENDPOINT_URL}/{n}"}
        )
        assert created.status_code == 201, created.text

    refused = await client_a.http.post("/v1/webhook-endpoints", json={"url": ENDPOINT_URL})
    body = assert_problem(refused, 409, "endpoint-limit-reached")
    assert "2 webhook endpoints" in body["detail"]
    assert await endpoints_of(pool, client_a) == 2

    # Deleting one makes room again.
    first = (await client_a.http.get("/v1/webhook-endpoints")).json()["data"][0]["id"]
    assert (await client_a.http.delete(f"/v1/webhook-endpoints/{first}")).status_code == 204
    again = await client_a.http.post("/v1/webhook-endpoints", json={"url": ENDPOINT_URL})
    assert again.status_code == 201
    assert await endpoints_of(pool, client_a) == 2


async def test_concurrent_endpoint_creates_never_pass_the_cap(pool: Pool, client_a: Tenant) -> None:
    await limit(pool, client_a, max_endpoints=5)
    answers = await asyncio.gather(
        *(
            client_a.http.post("/v1/webhook-endpoints", json={"url": f"{ENDPOINT_URL}/{n}"})
            for n in range(24)
        )
    )
    codes = sorted(answer.status_code for answer in answers)
    assert codes == [201] * 5 + [409] * 19
    assert await endpoints_of(pool, client_a) == 5


async def test_queued_jobs_beyond_the_cap_are_refused_and_not_stored(
    pool: Pool, client_a: Tenant
) -> None:
    await limit(pool, client_a, max_queued_jobs=2)
    first = await client_a.http.post("/v1/jobs", json=JOB, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 201
    assert (await client_a.http.post("/v1/jobs", json=JOB)).status_code == 201

    refused = await client_a.http.post("/v1/jobs", json=JOB)
    body = assert_problem(refused, 409, "queued-jobs-limit-reached")
    assert "2 of this client's jobs are queued" in body["detail"]
    with_new_key = await client_a.http.post(
        "/v1/jobs", json=JOB, headers={"Idempotency-Key": "k-2"}
    )
    assert_problem(with_new_key, 409, "queued-jobs-limit-reached")
    assert await count_jobs(pool, client_a.client_id) == 2
    assert not await pool.fetchval(
        "SELECT count(*) FROM jobs WHERE client_id = $1 AND idempotency_key = 'k-2'",
        client_a.client_id,
    )

    # A replay of an accepted job is answered even at the cap (and a reused key still is 422).
    replay = await client_a.http.post("/v1/jobs", json=JOB, headers={"Idempotency-Key": "k-1"})
    assert replay.status_code == 200
    assert replay.json()["id"] == first.json()["id"]
    other_body = {"input": {"prompt": "another"}}
    reused = await client_a.http.post(
        "/v1/jobs", json=other_body, headers={"Idempotency-Key": "k-1"}
    )
    assert_problem(reused, 422, "idempotency-key-reused")

    # Only queued jobs count: a canceled one frees its place.
    canceled = await client_a.http.post(f"/v1/jobs/{first.json()['id']}/cancel")
    assert canceled.json()["status"] == "canceled"
    assert (await client_a.http.post("/v1/jobs", json=JOB)).status_code == 201
    assert await count_jobs(pool, client_a.client_id) == 3


async def test_concurrent_job_creates_never_pass_the_cap(pool: Pool, client_a: Tenant) -> None:
    await limit(pool, client_a, max_queued_jobs=6)
    answers = await asyncio.gather(
        *(
            client_a.http.post("/v1/jobs", json=JOB, headers={"Idempotency-Key": f"c-{n}"})
            for n in range(24)
        )
    )
    codes = sorted(answer.status_code for answer in answers)
    assert codes == [201] * 6 + [409] * 18
    assert await count_jobs(pool, client_a.client_id) == 6


async def test_the_settings_give_the_default_cap_and_a_client_may_override_it(
    database_url: str, pool: Pool
) -> None:
    settings = Settings(
        database_url=database_url,
        allow_private_webhook_urls=True,
        default_max_endpoints=1,
        default_max_queued_jobs="unlimited",
    )
    app: FastAPI = create_app(settings)
    async with app.router.lifespan_context(app):
        async for tenant in make_tenant(app, pool, "defaults"):
            assert (
                await tenant.http.post("/v1/webhook-endpoints", json={"url": ENDPOINT_URL})
            ).status_code == 201
            refused = await tenant.http.post("/v1/webhook-endpoints", json={"url": ENDPOINT_URL})
            assert_problem(refused, 409, "endpoint-limit-reached")
        async for tenant in make_tenant(app, pool, "its-own"):
            await limit(pool, tenant, max_endpoints=2)
            for _ in range(2):
                created = await tenant.http.post(
                    "/v1/webhook-endpoints", json={"url": ENDPOINT_URL}
                )
                assert created.status_code == 201
            assert await endpoints_of(pool, tenant) == 2
