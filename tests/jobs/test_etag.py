"""GET /v1/jobs/{id} for pollers: an ETag of the body, and a bodiless 304 while it holds."""

from __future__ import annotations

import re

from app.db.pool import Pool
from tests.support import Tenant, assert_problem, job_uuid


async def _create(tenant: Tenant) -> str:
    response = await tenant.http.post("/v1/jobs", json={"input": {"prompt": "a lighthouse"}})
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


async def test_a_job_has_a_strong_etag_that_holds_while_it_is_unchanged(tenant: Tenant) -> None:
    job_id = await _create(tenant)
    first = await tenant.http.get(f"/v1/jobs/{job_id}")
    assert first.status_code == 200
    etag = first.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag), etag  # strong: no W/
    again = await tenant.http.get(f"/v1/jobs/{job_id}")
    assert again.headers["etag"] == etag
    assert again.content == first.content


async def test_if_none_match_with_the_current_etag_is_a_304_with_no_body(tenant: Tenant) -> None:
    job_id = await _create(tenant)
    etag = (await tenant.http.get(f"/v1/jobs/{job_id}")).headers["etag"]
    for header in (etag, f'"other", {etag}', f"W/{etag}", "*"):
        response = await tenant.http.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": header})
        assert response.status_code == 304, header
        assert response.content == b""
        assert response.headers["etag"] == etag
        assert "content-type" not in response.headers


async def test_a_stale_etag_gets_the_new_job_and_its_new_etag(tenant: Tenant, pool: Pool) -> None:
    job_id = await _create(tenant)
    before = await tenant.http.get(f"/v1/jobs/{job_id}")
    # A request id of this job's own: the session's database is shared, and the column unique.
    await pool.execute(
        "UPDATE jobs SET status = 'submitted', fal_request_id = $2, submitted_at = now() "
        "WHERE id = $1",
        job_uuid(job_id),
        f"req-{job_id}",
    )
    after = await tenant.http.get(
        f"/v1/jobs/{job_id}", headers={"If-None-Match": before.headers["etag"]}
    )
    assert after.status_code == 200
    assert after.json()["status"] == "submitted"
    assert after.headers["etag"] != before.headers["etag"]
    unchanged = await tenant.http.get(
        f"/v1/jobs/{job_id}", headers={"If-None-Match": after.headers["etag"]}
    )
    assert unchanged.status_code == 304


async def test_an_unmatched_etag_gets_the_job(tenant: Tenant) -> None:
    job_id = await _create(tenant)
    response = await tenant.http.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": '"nope"'})
    assert response.status_code == 200
    assert response.json()["id"] == job_id


async def test_another_clients_etag_reveals_nothing(tenant: Tenant, other_tenant: Tenant) -> None:
    job_id = await _create(tenant)
    etag = (await tenant.http.get(f"/v1/jobs/{job_id}")).headers["etag"]
    for header in (etag, "*"):
        response = await other_tenant.http.get(
            f"/v1/jobs/{job_id}", headers={"If-None-Match": header}
        )
        assert_problem(response, 404, "not-found")
