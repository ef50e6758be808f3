"""Each client's count of queued jobs, kept as entries (intake) less exits (triggers), stays the
true count, and writers of one client's count do not wait for each other's commits."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, cast

import asyncpg
import pytest

from app import ids
from app.db.pool import Pool, create_pool
from app.jobs import repository
from tests.support import Tenant, job_uuid, until


async def _counted(pool: Pool, tenant: Tenant) -> tuple[int, int]:
    kept = await pool.fetchval(
        "SELECT queue_entries + (SELECT COALESCE(sum(entries - exits - allowance), 0) "
        "FROM client_queue_counts WHERE client_id = $1) FROM clients WHERE id = $1",
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
    entries = await _entries(pool, tenant)
    async with _two_shards(database_url) as (first, second):
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
    shards = await pool.fetch(
        "SELECT shard, exits FROM client_queue_counts WHERE client_id = $1 AND exits > 0",
        tenant.client_id,
    )
    assert {row["shard"]: row["exits"] for row in shards} == {pid % 64: 1 for pid in pids}
    assert await _counted(pool, tenant) == (2, 2)
    # Entries never fall on the way out.
    assert await _entries(pool, tenant) == entries


async def _entries(pool: Pool, tenant: Tenant) -> tuple[int, int, int]:
    """(the clients row's entries, the shards' entries, the shards' allowance)"""
    row = await pool.fetchrow(
        "SELECT queue_entries, (SELECT (COALESCE(sum(entries), 0), COALESCE(sum(allowance), 0)) "
        "FROM client_queue_counts WHERE client_id = $1) AS shards FROM clients WHERE id = $1",
        tenant.client_id,
    )
    assert row is not None
    return row["queue_entries"], *row["shards"]


@asynccontextmanager
async def _two_shards(
    database_url: str,
) -> AsyncIterator[tuple[asyncpg.Connection[Any], asyncpg.Connection[Any]]]:
    """Two sessions, set up as the service's are, on different shards (pids are the server's:
    open until two differ)."""
    async with AsyncExitStack() as stack:
        sessions: list[asyncpg.Connection[Any]] = []
        while len({session.get_server_pid() % 64 for session in sessions}) < 2:
            pool = await create_pool(database_url, min_size=1, max_size=1)
            stack.push_async_callback(pool.close)
            sessions.append(await stack.enter_async_context(pool.acquire()))
        by_shard = {session.get_server_pid() % 64: session for session in sessions}
        first, second = list(by_shard.values())[:2]
        yield first, second


def _job(client_id: uuid.UUID) -> repository.NewJob:
    return repository.NewJob(
        id=ids.uuid7(), client_id=client_id, model="m", input={}, metadata={}, callback_url=None
    )


async def _intake(conn: asyncpg.Connection[Any], client_id: uuid.UUID, cap: int | None) -> Any:
    """The stored job, or None: the queue is full."""
    return await repository.intake(
        cast(Pool, conn),
        _job(client_id),
        key=None,
        fingerprint=None,
        max_queued_jobs=cap,
        default_budget=None,
    )


async def test_creates_of_one_client_do_not_wait_for_each_other(
    tenant: Tenant, pool: Pool, database_url: str
) -> None:
    """A second create of the same client goes through while the first is still uncommitted:
    without a cap, each entry goes on its session's shard; with one, each spends a place its
    shard was granted. Near the cap, places are taken one at a time on the clients row, and
    the second waits for the first, as a timeout shows."""
    async with _two_shards(database_url) as (first, second):
        pids = [first.get_server_pid(), second.get_server_pid()]
        async with first.transaction():
            assert await _intake(first, tenant.client_id, None) is not None
            # With the clients row as the counter, this would wait for the first's commit.
            async with second.transaction():
                assert await asyncio.wait_for(_intake(second, tenant.client_id, None), 5)
        shards = await pool.fetch(
            "SELECT shard, entries FROM client_queue_counts WHERE client_id = $1",
            tenant.client_id,
        )
        assert {row["shard"]: row["entries"] for row in shards} == {pid % 64: 1 for pid in pids}
        assert await _counted(pool, tenant) == (2, 2)

        # With a cap: each session's first create is a grant, one turn on the clients row.
        assert await _intake(first, tenant.client_id, 100) is not None
        assert await _intake(second, tenant.client_id, 100) is not None
        grant = repository.QUEUE_GRANT
        assert await _entries(pool, tenant) == (2 * grant, 2, 2 * (grant - 1))
        async with first.transaction():
            assert await _intake(first, tenant.client_id, 100) is not None
            async with second.transaction():
                assert await asyncio.wait_for(_intake(second, tenant.client_id, 100), 5)
        assert await _entries(pool, tenant) == (2 * grant, 2, 2 * (grant - 2))
        assert await _counted(pool, tenant) == (6, 6)

        # Near the cap (no room for a grant, none left on the shards), one at a time.
        await pool.execute(
            "UPDATE client_queue_counts SET allowance = 0 WHERE client_id = $1", tenant.client_id
        )
        cap = 2 * grant + 2 + 2
        async with first.transaction():
            assert await _intake(first, tenant.client_id, cap) is not None
            async with second.transaction():
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(_intake(second, tenant.client_id, cap), 1)
    # The one that timed out left nothing.
    assert await _entries(pool, tenant) == (2 * grant + 1, 2, 0)


async def test_the_cap_is_exact_across_shards_and_grants(
    tenant: Tenant, pool: Pool, database_url: str
) -> None:
    """Creates through two sessions fill a capped queue to exactly its cap: places granted
    to a shard and not taken are spent by the other's creates near the cap, and entries
    taken in without a cap count against it."""
    async with _two_shards(database_url) as (first, second):
        assert await _intake(first, tenant.client_id, None) is not None
        cap = 2 * repository.QUEUE_GRANT + 7
        admitted = 1
        for n in range(3 * cap):
            if await _intake((first, second)[n % 2 if n < 20 else 0], tenant.client_id, cap):
                admitted += 1
        assert admitted == cap
        # Full: neither session gets a place.
        assert await _intake(second, tenant.client_id, cap) is None
    assert await _counted(pool, tenant) == (cap, cap)
    assert await _entries(pool, tenant) == (cap - 1, 1, 0)


async def test_concurrent_creates_never_pass_the_cap(
    tenant: Tenant, pool: Pool, database_url: str
) -> None:
    """Twice the cap's creates at once through 12 sessions: none past the cap, and any place
    refused a moment early (a grant not yet seen) is there for the next create."""
    cap = 3 * repository.QUEUE_GRANT + 5
    pools = [await create_pool(database_url, min_size=4, max_size=4) for _ in range(3)]
    try:
        results = await asyncio.gather(
            *(_intake(cast(Any, pools[n % 3]), tenant.client_id, cap) for n in range(2 * cap))
        )
        admitted = sum(row is not None for row in results)
        assert admitted <= cap
        while await _intake(cast(Any, pools[0]), tenant.client_id, cap) is not None:
            admitted += 1
    finally:
        for each in pools:
            await each.close()
    assert admitted == cap
    assert await _counted(pool, tenant) == (cap, cap)


async def test_a_lowered_cap_stops_the_places_granted_before_it(
    tenant: Tenant, pool: Pool, database_url: str
) -> None:
    """Places a shard was granted under a cap of 100 are not spent once the cap is lowered
    below what was granted: the queue refuses until it is back under the new cap."""
    async with _two_shards(database_url) as (first, _):
        # No row on the session's shard yet: one place on the clients row, and the row made.
        assert await _intake(first, tenant.client_id, 100) is not None
        assert await _entries(pool, tenant) == (1, 0, 0)
        assert await _intake(first, tenant.client_id, 100) is not None  # a grant
        assert await _entries(pool, tenant) == (
            1 + repository.QUEUE_GRANT,
            0,
            repository.QUEUE_GRANT - 1,
        )
        assert await _intake(first, tenant.client_id, 5) is None
        assert await _intake(first, tenant.client_id, 1 + repository.QUEUE_GRANT) is not None
    assert await _counted(pool, tenant) == (3, 3)


async def test_a_grant_locks_its_shard_before_the_clients_and_spend_rows(
    tenant: Tenant, pool: Pool, database_url: str
) -> None:
    """Every intake locks a queue shard's row before the clients row and the month's spend
    row. Another session holds the shard's row, as a create of the same shard (pids that
    agree modulo 64) spending a place does before it reserves on the spend row: a create that
    must grant waits for the shard's row holding nothing. Granting first and writing the
    shard last held both rows while waiting, and deadlocked against such a create."""
    async with _two_shards(database_url) as (first, other):
        # The session's first create makes its shard's row (taking one place exactly).
        assert await _intake(first, tenant.client_id, 100) is not None
        shard = first.get_server_pid() % 64
        async with other.transaction():
            await other.execute(
                "SELECT FROM client_queue_counts WHERE client_id = $1 AND shard = $2 FOR UPDATE",
                tenant.client_id,
                shard,
            )
            grant = asyncio.create_task(_intake(first, tenant.client_id, 100))
            await until(
                lambda: pool.fetchval(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1",
                    first.get_server_pid(),
                )
            )
            # Neither row the grant goes on to lock is held while it waits.
            await other.execute(
                "SELECT FROM clients WHERE id = $1 FOR UPDATE NOWAIT", tenant.client_id
            )
            await other.execute(
                "SELECT FROM client_spend WHERE client_id = $1 AND shard = $2 FOR UPDATE NOWAIT",
                tenant.client_id,
                1 + shard,
            )
        assert await asyncio.wait_for(grant, 30) is not None
    grant_size = repository.QUEUE_GRANT
    assert await _entries(pool, tenant) == (1 + grant_size, 0, grant_size - 1)


async def test_a_grant_never_waits_for_its_shards_row_holding_the_clients_row(
    tenant: Tenant, pool: Pool, database_url: str
) -> None:
    """A create whose statement began before its shard's row existed, the row then committed
    by another session of the same shard, could find the row only after locking the clients row
    to grant, and then waited for it. An exact create holding that row (it locks the row it
    picks) and waiting for the clients row made a deadlock. Such a create takes the exact
    step instead of granting. Here the clients row is held while the create starts, the shard's
    row is made and locked meanwhile, and whoever holds it then asks for the clients row."""
    client_id = tenant.client_id
    async with (
        _two_shards(database_url) as (first, _),
        pool.acquire() as holder,
        pool.acquire() as shard_holder,
    ):
        shard = first.get_server_pid() % 64
        async with holder.transaction():
            await holder.execute(
                "UPDATE clients SET queue_entries = queue_entries WHERE id = $1", client_id
            )
            create = asyncio.create_task(_intake(first, client_id, 100))
            await until(lambda: _blocked_by(pool, first, holder))
            await pool.execute(
                "INSERT INTO client_queue_counts (client_id, shard, allowance) VALUES ($1, $2, 5) "
                "ON CONFLICT (client_id, shard) DO UPDATE SET allowance = 5",
                client_id,
                shard,
            )
            await shard_holder.execute("BEGIN")
            await shard_holder.execute(
                "SELECT FROM client_queue_counts WHERE client_id = $1 AND shard = $2 FOR UPDATE",
                client_id,
                shard,
            )
        # The clients row is free: the create finishes, or (granting) waits for the shard's row.
        await until(lambda: create.done() or _blocked_by(pool, first, shard_holder))
        try:
            await shard_holder.execute(
                "UPDATE clients SET queue_entries = queue_entries WHERE id = $1", client_id
            )
        finally:
            await shard_holder.execute("COMMIT")
        assert await asyncio.wait_for(create, 30) is not None


async def _blocked_by(
    pool: Pool, waiter: asyncpg.Connection[Any], holder: asyncpg.Connection[Any]
) -> bool:
    blockers: list[int] = await pool.fetchval(
        "SELECT pg_blocking_pids($1)", waiter.get_server_pid()
    )
    return holder.get_server_pid() in blockers
