from __future__ import annotations

import uuid

from app.db.pool import Pool
from app.jobs.schemas import JobRead
from tests.support import Tenant, assert_problem, job_uuid


async def _create(tenant: Tenant, prompt: str = "p", **extra: object) -> dict[str, object]:
    response = await tenant.http.post("/v1/jobs", json={"input": {"prompt": prompt}, **extra})
    assert response.status_code == 201, response.text
    job: dict[str, object] = response.json()
    return job


async def test_get_returns_the_job(tenant: Tenant) -> None:
    job = await _create(tenant, metadata={"k": "v"})
    response = await tenant.http.get(f"/v1/jobs/{job['id']}")
    assert response.status_code == 200
    assert response.json() == job
    JobRead.model_validate(response.json())


async def test_get_reflects_the_row_in_postgres(tenant: Tenant, pool: Pool) -> None:
    job = await _create(tenant)
    output = {"images": [{"url": "https://cdn.example/x.png", "width": 2048, "height": 2048}]}
    await pool.execute(
        "UPDATE jobs SET status = 'succeeded', output = $2, fal_request_id = $3, "
        "completed_at = now() WHERE id = $1",
        job_uuid(str(job["id"])),
        output,
        f"req-{uuid.uuid4()}",
    )
    body = (await tenant.http.get(f"/v1/jobs/{job['id']}")).json()
    assert body["status"] == "succeeded"
    assert body["output"] == output
    assert body["fal_request_id"].startswith("req-")
    assert body["completed_at"] is not None


async def test_unknown_and_malformed_ids_are_404(tenant: Tenant) -> None:
    for job_id in [f"job_{uuid.uuid4().hex}", "job_nothex", "nope", f"ep_{uuid.uuid4().hex}"]:
        assert_problem(await tenant.http.get(f"/v1/jobs/{job_id}"), 404, "not-found")


async def test_another_clients_job_is_404_on_every_job_route(
    tenant: Tenant, other_tenant: Tenant, pool: Pool
) -> None:
    job = await _create(tenant)
    assert_problem(await other_tenant.http.get(f"/v1/jobs/{job['id']}"), 404, "not-found")
    assert_problem(await other_tenant.http.post(f"/v1/jobs/{job['id']}/cancel"), 404, "not-found")
    assert_problem(await other_tenant.http.get(f"/v1/jobs/{job['id']}/deliveries"), 404)
    listing = (await other_tenant.http.get("/v1/jobs")).json()
    assert job["id"] not in {j["id"] for j in listing["data"]}
    # The failed cancel changed nothing.
    status = await pool.fetchval("SELECT status FROM jobs WHERE id = $1", job_uuid(str(job["id"])))
    assert status == "queued"


async def test_cancel_a_queued_job(tenant: Tenant, pool: Pool) -> None:
    job = await _create(tenant)
    response = await tenant.http.post(f"/v1/jobs/{job['id']}/cancel")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "canceled"
    assert body["completed_at"] is not None
    row = await pool.fetchrow(
        "SELECT status, completed_at, next_attempt_at FROM jobs WHERE id = $1",
        job_uuid(str(job["id"])),
    )
    assert row is not None
    assert row["status"] == "canceled"
    assert row["completed_at"] is not None
    assert row["next_attempt_at"] is None  # off the submission queue

    again = await tenant.http.post(f"/v1/jobs/{job['id']}/cancel")
    assert_problem(again, 409, "job-not-cancelable")


async def test_cancel_of_a_finished_job_is_409_and_changes_nothing(
    tenant: Tenant, pool: Pool
) -> None:
    job = await _create(tenant)
    job_id = job_uuid(str(job["id"]))
    await pool.execute(
        "UPDATE jobs SET status = 'succeeded', completed_at = now() WHERE id = $1", job_id
    )
    assert_problem(await tenant.http.post(f"/v1/jobs/{job['id']}/cancel"), 409)
    assert await pool.fetchval("SELECT status FROM jobs WHERE id = $1", job_id) == "succeeded"


async def test_cancel_unknown_job_is_404(tenant: Tenant) -> None:
    response = await tenant.http.post(f"/v1/jobs/job_{uuid.uuid4().hex}/cancel")
    assert_problem(response, 404, "not-found")
