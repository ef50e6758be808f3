"""A client's monthly budget at its edge: reservations at create, refusals that store nothing,
concurrent creates that cannot overspend together, and replays that are never refused."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import httpx

from app.billing import repository as billing_repository
from app.db.pool import Pool, asyncpg_dsn
from app.fakefal import FakeFalConfig
from app.jobs import repository as jobs_repository
from tests.stack import StackFactory
from tests.support import Tenant, assert_problem, count_jobs, job_uuid

ONE_K = {"prompt": "a red fox in snow", "resolution": "1K"}  # $0.03
TWO_K = {"prompt": "a red fox in snow", "resolution": "2K"}  # $0.05


async def set_budget(pool: Pool, client_id: uuid.UUID, usd: str | None) -> None:
    await pool.execute(
        "UPDATE clients SET monthly_budget_usd = $2::numeric WHERE id = $1", client_id, usd
    )


async def ledger(pool: Pool, client_id: uuid.UUID) -> tuple[Decimal, Decimal]:
    row = await pool.fetchrow(
        "SELECT sum(reserved_usd) AS reserved, sum(spent_usd) AS spent FROM client_spend "
        "WHERE client_id = $1",
        client_id,
    )
    assert row is not None
    return row["reserved"] or Decimal(0), row["spent"] or Decimal(0)


async def create(http: httpx.AsyncClient, model_input: dict[str, Any], **headers: str) -> Any:
    return await http.post("/v1/jobs", json={"input": model_input}, headers=headers)


async def test_a_job_reserves_its_estimate(tenant: Tenant, pool: Pool) -> None:
    response = await create(tenant.http, TWO_K)
    assert response.status_code == 201, response.text
    row = await pool.fetchrow(
        "SELECT estimated_cost_usd, cost_usd FROM jobs WHERE client_id = $1", tenant.client_id
    )
    assert row is not None
    assert row["estimated_cost_usd"] == Decimal("0.05")
    assert row["cost_usd"] is None
    assert await ledger(pool, tenant.client_id) == (Decimal("0.05"), Decimal(0))


async def test_without_a_budget_creates_reserve_on_their_sessions_shards(
    tenant: Tenant, pool: Pool
) -> None:
    """Nothing to decide, so no row to take turns on: row 0 (the budget's lock) stays unwritten
    and the month's figures are still the sums."""
    await set_budget(pool, tenant.client_id, None)
    for _ in range(3):
        assert (await create(tenant.http, ONE_K)).status_code == 201
    shards = await pool.fetch(
        "SELECT shard, reserved_usd FROM client_spend WHERE client_id = $1", tenant.client_id
    )
    assert shards
    assert all(1 <= row["shard"] <= 64 for row in shards)
    assert await ledger(pool, tenant.client_id) == (Decimal("0.09"), Decimal(0))
    # A budget set now counts them: 0.09 + 0.03 > 0.10.
    await set_budget(pool, tenant.client_id, "0.10")
    assert_problem(await create(tenant.http, ONE_K), 402, "budget-exceeded")


async def test_the_exact_edge_is_accepted_and_a_cent_over_is_refused(
    tenant: Tenant, pool: Pool
) -> None:
    await set_budget(pool, tenant.client_id, "0.08")
    assert (await create(tenant.http, TWO_K)).status_code == 201  # 0.05 of 0.08
    assert (await create(tenant.http, ONE_K)).status_code == 201  # 0.08 of 0.08: the edge

    refused = await create(tenant.http, ONE_K)
    body = assert_problem(refused, 402, "budget-exceeded")
    assert body["budget_usd"] == "0.08"
    assert body["spent_usd"] == "0.00"
    assert body["reserved_usd"] == "0.08"
    assert body["estimated_cost_usd"] == "0.03"
    assert "0.08" in body["detail"]
    # Nothing stored: no job, no reservation.
    assert await count_jobs(pool, tenant.client_id) == 2
    assert await ledger(pool, tenant.client_id) == (Decimal("0.08"), Decimal(0))

    # One cent over, on a month with room left: 0.05 + 0.03 needs 0.08, the budget is 0.07.
    await pool.execute("DELETE FROM jobs WHERE client_id = $1", tenant.client_id)
    await pool.execute("DELETE FROM client_spend WHERE client_id = $1", tenant.client_id)
    await set_budget(pool, tenant.client_id, "0.07")
    assert (await create(tenant.http, TWO_K)).status_code == 201
    body = assert_problem(await create(tenant.http, ONE_K), 402, "budget-exceeded")
    assert (body["budget_usd"], body["reserved_usd"]) == ("0.07", "0.05")
    assert await count_jobs(pool, tenant.client_id) == 1
    assert await ledger(pool, tenant.client_id) == (Decimal("0.05"), Decimal(0))


async def test_a_first_job_dearer_than_the_whole_budget_is_refused(
    tenant: Tenant, pool: Pool
) -> None:
    await set_budget(pool, tenant.client_id, "0.04")
    body = assert_problem(await create(tenant.http, TWO_K), 402, "budget-exceeded")
    assert (body["budget_usd"], body["spent_usd"], body["reserved_usd"]) == (
        "0.04",
        "0.00",
        "0.00",
    )
    assert await count_jobs(pool, tenant.client_id) == 0
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM client_spend WHERE client_id = $1", tenant.client_id
        )
        == 0
    )


async def test_spent_counts_against_the_budget(tenant: Tenant, pool: Pool) -> None:
    await set_budget(pool, tenant.client_id, "0.10")
    await pool.execute(
        "INSERT INTO client_spend (client_id, month, spent_usd) "
        "VALUES ($1, date_trunc('month', now() AT TIME ZONE 'UTC')::date, 0.06)",
        tenant.client_id,
    )
    assert (await create(tenant.http, ONE_K)).status_code == 201  # 0.06 + 0.03 = 0.09
    body = assert_problem(await create(tenant.http, ONE_K), 402, "budget-exceeded")
    assert (body["spent_usd"], body["reserved_usd"]) == ("0.06", "0.03")


async def test_a_zero_budget_refuses_everything(tenant: Tenant, pool: Pool) -> None:
    await set_budget(pool, tenant.client_id, "0")
    assert_problem(await create(tenant.http, ONE_K), 402, "budget-exceeded")
    assert await count_jobs(pool, tenant.client_id) == 0


async def test_concurrent_creates_never_overspend(make_stack: StackFactory) -> None:
    # Room for 7 jobs of $0.03; 20 ask at once over real HTTP, each on a connection of its own
    # to `falrelay serve`. fal holds them queued, so nothing settles meanwhile. No cap on queued
    # jobs: its per-client lock would order the creates and hide a race in the reservation.
    fal = FakeFalConfig(random_seed=7, queue_latency=60.0)
    async with make_stack(fal=fal, default_max_queued_jobs=None) as stack:
        await set_budget(stack.pool, stack.client_id, "0.21")
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(
            base_url=stack.service_url, headers=stack.api.headers, limits=limits, timeout=30
        ) as http:
            answers = await asyncio.gather(
                *(create(http, {**ONE_K, "prompt": f"fox {i}"}) for i in range(20))
            )
        codes = sorted(answer.status_code for answer in answers)
        assert codes == [201] * 7 + [402] * 13, codes
        for answer in answers:
            if answer.status_code == 402:
                assert_problem(answer, 402, "budget-exceeded")
        assert await count_jobs(stack.pool, stack.client_id) == 7
        stored = await stack.pool.fetchval(
            "SELECT sum(estimated_cost_usd) FROM jobs WHERE client_id = $1", stack.client_id
        )
        assert stored == Decimal("0.21")
        assert await ledger(stack.pool, stack.client_id) == (Decimal("0.21"), Decimal(0))


async def test_a_replay_of_an_accepted_job_is_never_refused(tenant: Tenant, pool: Pool) -> None:
    await set_budget(pool, tenant.client_id, "0.03")
    first = await create(tenant.http, ONE_K, **{"Idempotency-Key": "order-1"})
    assert first.status_code == 201
    # The month is now full: a new job is refused, the same request again is the same job.
    assert_problem(
        await create(tenant.http, ONE_K, **{"Idempotency-Key": "order-2"}), 402, "budget-exceeded"
    )
    replay = await create(tenant.http, ONE_K, **{"Idempotency-Key": "order-1"})
    assert replay.status_code == 200, replay.text
    assert replay.json()["id"] == first.json()["id"]
    # Even once the budget is lowered below what the job reserved.
    await set_budget(pool, tenant.client_id, "0.01")
    again = await create(tenant.http, ONE_K, **{"Idempotency-Key": "order-1"})
    assert again.status_code == 200
    assert await count_jobs(pool, tenant.client_id) == 1
    assert await ledger(pool, tenant.client_id) == (Decimal("0.03"), Decimal(0))


async def test_a_refused_key_can_be_used_again_once_there_is_room(
    tenant: Tenant, pool: Pool
) -> None:
    await set_budget(pool, tenant.client_id, "0.02")
    key = {"Idempotency-Key": "order-9"}
    assert_problem(await create(tenant.http, ONE_K, **key), 402, "budget-exceeded")
    await set_budget(pool, tenant.client_id, "0.03")
    assert (await create(tenant.http, ONE_K, **key)).status_code == 201


async def test_no_budget_is_unlimited_and_still_reserves(tenant: Tenant, pool: Pool) -> None:
    await set_budget(pool, tenant.client_id, None)
    for _ in range(3):
        assert (await create(tenant.http, TWO_K)).status_code == 201
    assert await ledger(pool, tenant.client_id) == (Decimal("0.15"), Decimal(0))


async def test_another_clients_spend_does_not_count(
    tenant: Tenant, other_tenant: Tenant, pool: Pool
) -> None:
    await set_budget(pool, tenant.client_id, "0.03")
    await set_budget(pool, other_tenant.client_id, "0.03")
    assert (await create(tenant.http, ONE_K)).status_code == 201
    assert (await create(other_tenant.http, ONE_K)).status_code == 201


async def test_finishing_jobs_settle_apart_and_the_budget_still_holds(
    tenant: Tenant, pool: Pool, database_url: str
) -> None:
    """Two sessions finishing jobs of one client at once settle on shards of their own, so
    neither waits for the other's commit; the month's figures are the sums, and what the
    settles freed can be reserved again, up to the budget and no further."""
    await set_budget(pool, tenant.client_id, "0.10")
    made = [await create(tenant.http, ONE_K) for _ in range(3)]
    assert [response.status_code for response in made] == [201] * 3
    ids = [job_uuid(response.json()["id"]) for response in made]
    assert await ledger(pool, tenant.client_id) == (Decimal("0.09"), Decimal(0))

    cancel = billing_repository.settling(jobs_repository.MARK_CANCELED)
    sessions: list[asyncpg.Connection[Any]] = []
    try:
        while len({s.get_server_pid() % 64 for s in sessions}) < 2:
            sessions.append(await asyncpg.connect(asyncpg_dsn(database_url)))
        first, second = list({s.get_server_pid() % 64: s for s in sessions}.values())[:2]
        finishing = [first.transaction(), second.transaction()]
        for conn, transaction, job_id in zip((first, second), finishing, ids, strict=False):
            await transaction.start()
            # On one row per month, the second would wait here for the first's commit.
            settled = await conn.fetchrow(cancel, job_id, tenant.client_id, ["queued"], timeout=5)
            assert settled is not None
        for transaction in finishing:
            await transaction.commit()
    finally:
        for session in sessions:
            await session.close()

    rows = await pool.fetch(
        "SELECT shard, reserved_usd, spent_usd FROM client_spend WHERE client_id = $1 "
        "ORDER BY shard",
        tenant.client_id,
    )
    assert [(row["shard"] == 0, row["reserved_usd"]) for row in rows] == [
        (True, Decimal("0.09")),
        (False, Decimal("-0.03")),
        (False, Decimal("-0.03")),
    ]
    assert await ledger(pool, tenant.client_id) == (Decimal("0.03"), Decimal(0))
    # 0.03 reserved: two more fit (0.09), a third would make 0.12.
    assert (await create(tenant.http, ONE_K)).status_code == 201
    assert (await create(tenant.http, ONE_K)).status_code == 201
    body = assert_problem(await create(tenant.http, ONE_K), 402, "budget-exceeded")
    assert (body["reserved_usd"], body["spent_usd"]) == ("0.09", "0.00")
