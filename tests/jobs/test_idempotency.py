from __future__ import annotations

import asyncio

from app.db.pool import Pool
from tests.support import Tenant, assert_problem, count_jobs

BODY = {"input": {"prompt": "a red fox in snow", "seed": 7}, "metadata": {"order": "A-1"}}


async def test_same_key_and_body_returns_the_same_job_once(tenant: Tenant, pool: Pool) -> None:
    headers = {"Idempotency-Key": "order-A-1"}
    first = await tenant.http.post("/v1/jobs", json=BODY, headers=headers)
    again = await tenant.http.post("/v1/jobs", json=BODY, headers=headers)

    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert await count_jobs(pool, tenant.client_id) == 1


async def test_same_key_and_equivalent_body_is_a_replay(tenant: Tenant, pool: Pool) -> None:
    """Defaults spelled out, keys reordered: the same request."""
    headers = {"Idempotency-Key": "k-equivalent"}
    first = await tenant.http.post("/v1/jobs", json=BODY, headers=headers)
    spelled_out = {
        "metadata": {"order": "A-1"},
        "input": {"seed": 7, "aspect_ratio": "1:1", "prompt": "a red fox in snow"},
        "callback_url": None,
    }
    again = await tenant.http.post("/v1/jobs", json=spelled_out, headers=headers)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert await count_jobs(pool, tenant.client_id) == 1


async def test_same_key_other_body_is_a_422_and_changes_nothing(tenant: Tenant, pool: Pool) -> None:
    headers = {"Idempotency-Key": "k-reused"}
    first = await tenant.http.post("/v1/jobs", json=BODY, headers=headers)
    other = {**BODY, "input": {"prompt": "a grey wolf"}}
    response = await tenant.http.post("/v1/jobs", json=other, headers=headers)

    assert_problem(response, 422, "idempotency-key-reused")
    assert await count_jobs(pool, tenant.client_id) == 1
    stored = await pool.fetchval(
        "SELECT input->>'prompt' FROM jobs WHERE client_id = $1", tenant.client_id
    )
    assert stored == "a red fox in snow"
    assert first.status_code == 201


async def test_concurrent_requests_with_one_key_make_one_job(tenant: Tenant, pool: Pool) -> None:
    headers = {"Idempotency-Key": "k-race"}
    responses = await asyncio.gather(
        *(tenant.http.post("/v1/jobs", json=BODY, headers=headers) for _ in range(12))
    )

    assert sorted(r.status_code for r in responses) == [200] * 11 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert await count_jobs(pool, tenant.client_id) == 1


async def test_keys_are_scoped_to_the_client(
    tenant: Tenant, other_tenant: Tenant, pool: Pool
) -> None:
    headers = {"Idempotency-Key": "shared-name"}
    mine = await tenant.http.post("/v1/jobs", json=BODY, headers=headers)
    theirs = await other_tenant.http.post(
        "/v1/jobs", json={"input": {"prompt": "other"}}, headers=headers
    )
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]
    assert await count_jobs(pool, other_tenant.client_id) == 1


async def test_without_a_key_every_request_is_a_new_job(tenant: Tenant, pool: Pool) -> None:
    for _ in range(2):
        assert (await tenant.http.post("/v1/jobs", json=BODY)).status_code == 201
    assert await count_jobs(pool, tenant.client_id) == 2


async def test_invalid_key_header_is_refused(tenant: Tenant, pool: Pool) -> None:
    for key in ["", "x" * 256, "has space"]:
        response = await tenant.http.post("/v1/jobs", json=BODY, headers={"Idempotency-Key": key})
        problem = assert_problem(response, 422, "validation")
        assert problem["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    assert await count_jobs(pool, tenant.client_id) == 0
