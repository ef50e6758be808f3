"""Each client's count of queued jobs, kept by triggers, stays the true count."""

from __future__ import annotations

from app.db.pool import Pool
from tests.support import Tenant, job_uuid


async def _counted(pool: Pool, tenant: Tenant) -> tuple[int, int]:
    kept = await pool.fetchval("SELECT queued_jobs FROM clients WHERE id = $1", tenant.client_id)
    true = await pool.fetchval(
        "SELECT count(*) FROM jobs WHERE client_id = $1 AND status = 'queued'", tenant.client_id
    )
    return kept, true


async def test_the_kept_count_follows_every_way_in_and_out_of_queued(
    tenant: Tenant, pool: Pool
) -> None:
    ids = []
    for n in range(5):
        created = await tenant.http.post("/v1/jobs", json={"input": {"prompt": f"fox {n}"}})
        assert created.status_code == 201, created.text
        ids.append(job_uuid(created.json()["id"]))
    assert await _counted(pool, tenant) == (5, 5)

    canceled = await tenant.http.post(f"/v1/jobs/{created.json()['id']}/cancel")
    assert canceled.status_code == 200, canceled.text
    assert await _counted(pool, tenant) == (4, 4)
    # Submitted, then an update that leaves the status alone, then a delete.
    await pool.execute("UPDATE jobs SET status = 'submitted' WHERE id = $1", ids[0])
    await pool.execute("UPDATE jobs SET metadata = '{}' WHERE id = $1", ids[1])
    await pool.execute("DELETE FROM jobs WHERE id = $1", ids[2])
    assert await _counted(pool, tenant) == (2, 2)
    # A transaction that rolls back changes nothing.
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("DELETE FROM jobs WHERE id = $1", ids[3])
        await transaction.rollback()
    assert await _counted(pool, tenant) == (2, 2)


async def test_refusals_and_replays_leave_the_count_as_it_was(tenant: Tenant, pool: Pool) -> None:
    """Intake counts a job before its budget is checked: a refusal must take that back."""
    headers = {"Idempotency-Key": "counted-once"}
    first = await tenant.http.post("/v1/jobs", json={"input": {"prompt": "fox"}}, headers=headers)
    assert first.status_code == 201, first.text
    await pool.execute("UPDATE clients SET monthly_budget_usd = 0 WHERE id = $1", tenant.client_id)
    refused = await tenant.http.post("/v1/jobs", json={"input": {"prompt": "wolf"}})
    assert refused.status_code == 402, refused.text
    replayed = await tenant.http.post(
        "/v1/jobs", json={"input": {"prompt": "fox"}}, headers=headers
    )
    assert replayed.status_code == 200, replayed.text
    assert await _counted(pool, tenant) == (1, 1)
