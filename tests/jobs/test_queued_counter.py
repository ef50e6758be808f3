"""Each client's count of queued jobs, kept as entries (intake) less exits (triggers), stays the
true count."""

from __future__ import annotations

from typing import Any

import asyncpg

from app.db.pool import Pool, asyncpg_dsn
from tests.support import Tenant, job_uuid


async def _counted(pool: Pool, tenant: Tenant) -> tuple[int, int]:
    kept = await pool.fetchval(
        "SELECT queue_entries - (SELECT COALESCE(sum(exits), 0) FROM client_queue_exits "
        "WHERE client_id = $1) FROM clients WHERE id = $1",
        tenant.client_id,
    )
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


async def test_exits_land_on_the_shard_of_the_session_that_moved_the_job(
    tenant: Tenant, pool: Pool, database_url: str
) -> None:
    """Two sessions moving a client's jobs out of `queued` at once write rows of their own, so
    neither waits for the other's commit; the count still comes out true."""
    ids = []
    for n in range(4):
        created = await tenant.http.post("/v1/jobs", json={"input": {"prompt": f"fox {n}"}})
        assert created.status_code == 201, created.text
        ids.append(job_uuid(created.json()["id"]))
    # Two sessions on different shards (pids are the server's: open until two differ).
    sessions: list[asyncpg.Connection[Any]] = []
    try:
        while len({pid % 64 for pid in [s.get_server_pid() for s in sessions]}) < 2:
            sessions.append(await asyncpg.connect(asyncpg_dsn(database_url)))
        by_shard = {s.get_server_pid() % 64: s for s in sessions}
        first, second = list(by_shard.values())[:2]
        pids = [first.get_server_pid(), second.get_server_pid()]
        moving = [first.transaction(), second.transaction()]
        for conn, transaction, job_id in zip((first, second), moving, ids, strict=False):
            await transaction.start()
            # With the clients row as the counter, the second would wait here for the first.
            await conn.execute(
                "UPDATE jobs SET status = 'submitted' WHERE id = $1", job_id, timeout=5
            )
        for transaction in moving:
            await transaction.commit()
    finally:
        for session in sessions:
            await session.close()
    shards = await pool.fetch(
        "SELECT shard, exits FROM client_queue_exits WHERE client_id = $1 ORDER BY shard",
        tenant.client_id,
    )
    assert {row["shard"]: row["exits"] for row in shards} == {pid % 64: 1 for pid in pids}
    assert await _counted(pool, tenant) == (2, 2)
    # Entries never fall on the way out: 4 came in.
    assert (
        await pool.fetchval("SELECT queue_entries FROM clients WHERE id = $1", tenant.client_id)
        == 4
    )
