from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.db.pool import Pool
from app.pagination import encode_cursor
from tests.support import Tenant, assert_problem, job_uuid


async def _create_many(tenant: Tenant, n: int, prefix: str = "job") -> list[str]:
    ids = []
    for i in range(n):
        response = await tenant.http.post(
            "/v1/jobs", json={"input": {"prompt": f"{prefix} {i}"}, "metadata": {"i": str(i)}}
        )
        assert response.status_code == 201
        ids.append(response.json()["id"])
    return ids


async def _all_pages(tenant: Tenant, **params: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await tenant.http.get("/v1/jobs", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([job["id"] for job in body["data"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


async def test_newest_first_in_pages_that_cover_everything_once(tenant: Tenant) -> None:
    created = await _create_many(tenant, 7)
    pages = await _all_pages(tenant, limit=3)

    assert [len(page) for page in pages] == [3, 3, 1]
    assert [job_id for page in pages for job_id in page] == created[::-1]


async def test_an_exact_multiple_of_the_limit_ends_without_an_empty_page(
    tenant: Tenant,
) -> None:
    await _create_many(tenant, 4)
    assert [len(page) for page in await _all_pages(tenant, limit=2)] == [2, 2]


async def test_jobs_created_between_pages_do_not_shift_or_repeat_the_walk(
    tenant: Tenant,
) -> None:
    created = await _create_many(tenant, 6, "old")
    first = (await tenant.http.get("/v1/jobs", params={"limit": 2})).json()
    newer = await _create_many(tenant, 3, "new")  # inserted mid-walk

    seen = [job["id"] for job in first["data"]]
    cursor = first["next_cursor"]
    while cursor:
        body = (await tenant.http.get("/v1/jobs", params={"limit": 2, "cursor": cursor})).json()
        seen += [job["id"] for job in body["data"]]
        cursor = body["next_cursor"]

    assert seen == created[::-1]  # every old job exactly once, in order
    fresh_walk = [job_id for page in await _all_pages(tenant, limit=4) for job_id in page]
    assert fresh_walk == (created + newer)[::-1]


async def test_jobs_with_the_same_created_at_are_ordered_by_id(tenant: Tenant, pool: Pool) -> None:
    created = await _create_many(tenant, 5)
    await pool.execute(
        "UPDATE jobs SET created_at = '2026-01-01T00:00:00Z' WHERE client_id = $1",
        tenant.client_id,
    )
    walk = [job_id for page in await _all_pages(tenant, limit=2) for job_id in page]
    assert walk == sorted(created, reverse=True)


async def test_filter_by_status(tenant: Tenant, pool: Pool) -> None:
    created = await _create_many(tenant, 4)
    await pool.execute(
        "UPDATE jobs SET status = 'succeeded' WHERE id = ANY($1::uuid[])",
        [job_uuid(created[0]), job_uuid(created[2])],
    )
    succeeded = await _all_pages(tenant, status="succeeded", limit=1)
    assert [page[0] for page in succeeded] == [created[2], created[0]]
    queued = await _all_pages(tenant, status="queued")
    assert queued == [[created[3], created[1]]]


async def test_filter_by_model(tenant: Tenant) -> None:
    created = await _create_many(tenant, 2)
    assert await _all_pages(tenant, model="imagineart/imagineart-2.0-preview/text-to-image") == [
        created[::-1]
    ]
    assert await _all_pages(tenant, model="fal-ai/other") == [[]]


async def test_filter_by_creation_time(tenant: Tenant, pool: Pool) -> None:
    created = await _create_many(tenant, 3)
    base = datetime(2026, 3, 1, tzinfo=UTC)
    for i, job_id in enumerate(created):
        await pool.execute(
            "UPDATE jobs SET created_at = $2 WHERE id = $1",
            job_uuid(job_id),
            base + timedelta(days=i),
        )
    after = await _all_pages(tenant, created_after=(base + timedelta(hours=1)).isoformat())
    assert after == [[created[2], created[1]]]
    window = await _all_pages(
        tenant,
        created_after=(base - timedelta(hours=1)).isoformat(),
        created_before=(base + timedelta(days=1, hours=1)).isoformat(),
    )
    assert window == [[created[1], created[0]]]


async def test_a_client_lists_only_its_own_jobs(tenant: Tenant, other_tenant: Tenant) -> None:
    mine = await _create_many(tenant, 2)
    theirs = await _create_many(other_tenant, 2)
    assert await _all_pages(tenant) == [mine[::-1]]
    assert await _all_pages(other_tenant) == [theirs[::-1]]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": "ten"},
        {"status": "done"},
        {"created_after": "yesterday"},
        {"created_after": "2026-01-01T00:00:00"},  # no time zone: ambiguous
        {"cursor": "garbage"},
        # Well-formed base64 JSON, but an id that is not a string.
        {"cursor": base64.urlsafe_b64encode(b'["2024-01-01T00:00:00+00:00",5]').decode()},
        {
            "cursor": encode_cursor(datetime(2026, 1, 1, tzinfo=UTC), job_uuid("job_" + "0" * 32))[
                :-3
            ]
        },
    ],
)
async def test_bad_query_parameters_are_422_problems(
    tenant: Tenant, params: dict[str, Any]
) -> None:
    response = await tenant.http.get("/v1/jobs", params=params)
    problem = assert_problem(response, 422, "validation")
    assert problem["errors"][0]["loc"][0] == "query"


async def test_limit_defaults_to_20_and_allows_100(tenant: Tenant) -> None:
    await _create_many(tenant, 21)
    default = (await tenant.http.get("/v1/jobs")).json()
    assert len(default["data"]) == 20
    assert default["next_cursor"] is not None
    widest = (await tenant.http.get("/v1/jobs", params={"limit": 100})).json()
    assert len(widest["data"]) == 21
    assert widest["next_cursor"] is None
