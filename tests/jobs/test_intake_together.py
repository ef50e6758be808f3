"""Creates of one client that arrive together are stored by one statement (app.jobs.intake),
and each still gets the answer it would have had alone: its row, a full queue, a budget
refusal or a taken Idempotency-Key."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from app import ids
from app.db.pool import Pool, create_pool
from app.jobs import repository
from app.jobs.intake import Intake
from tests.support import Tenant, job_uuid, until

PRICE = Decimal("0.03")
KEYS = ("first", "second")


def _job(client_id: uuid.UUID, n: int = 0) -> repository.NewJob:
    return repository.NewJob(
        id=ids.uuid7(),
        client_id=client_id,
        model="m",
        input={"prompt": f"fox {n}"},
        metadata={"n": str(n)},
        callback_url=None,
        estimated_cost_usd=PRICE,
        unit_price_usd=PRICE,
    )


async def _store_all(
    intake: Intake,
    jobs: list[repository.NewJob],
    *,
    keys: list[str | None] | None = None,
    cap: int | None = None,
) -> list[Any]:
    """Each job's answer, all asked for at once: its row, None, or the exception it raised."""
    keys = keys or [None] * len(jobs)
    return await asyncio.gather(
        *(
            intake.store(
                job,
                key=key,
                fingerprint=None if key is None else b"print",
                max_queued_jobs=cap,
                default_budget=None,
            )
            for job, key in zip(jobs, keys, strict=True)
        ),
        return_exceptions=True,
    )


async def _figures(pool: Pool, client_id: uuid.UUID) -> tuple[int, int, int, Decimal]:
    """Jobs stored, statements that stored them, the client's kept count of queued jobs and
    what its month has reserved."""
    # A statement is a transaction of its own: the rows it stored share their xmin.
    row = await pool.fetchrow(
        "SELECT count(*) AS jobs, count(DISTINCT xmin::text) AS statements FROM jobs "
        "WHERE client_id = $1",
        client_id,
    )
    assert row is not None
    queued = await pool.fetchval(
        "SELECT queue_entries + (SELECT COALESCE(sum(entries - exits - allowance), 0) "
        "FROM client_queue_counts WHERE client_id = $1) FROM clients WHERE id = $1",
        client_id,
    )
    reserved = await pool.fetchval(
        "SELECT COALESCE(sum(reserved_usd), 0) FROM client_spend WHERE client_id = $1", client_id
    )
    return row["jobs"], row["statements"], queued, reserved


@pytest.mark.parametrize("cap", [None, 100])
async def test_creates_that_arrive_together_share_a_statement(
    tenant: Tenant, pool: Pool, cap: int | None
) -> None:
    intake = Intake(pool)
    if cap is not None:
        # A session's first capped create makes its shard's row (INTAKE's `seeded`) and takes
        # the exact step; the creates below find the row this one made.
        await _store_all(intake, [_job(tenant.client_id)], cap=cap)
        await pool.execute("DELETE FROM jobs WHERE client_id = $1", tenant.client_id)
        await pool.execute("DELETE FROM client_spend WHERE client_id = $1", tenant.client_id)
    jobs = [_job(tenant.client_id, n) for n in range(10)]
    answers = await _store_all(intake, jobs, cap=cap)

    assert [row["id"] for row in answers] == [job.id for job in jobs]
    assert [row["metadata"] for row in answers] == [{"n": str(n)} for n in range(10)]
    assert {row["status"] for row in answers} == {"queued"}
    # The first alone, at once; the nine that came while it ran, in one statement.
    assert await _figures(pool, tenant.client_id) == (10, 2, 10, 10 * PRICE)
    stored = await pool.fetch(
        "SELECT id, input, estimated_cost_usd, unit_price_usd, priority FROM jobs "
        "WHERE client_id = $1",
        tenant.client_id,
    )
    assert {r["id"]: r["input"] for r in stored} == {job.id: job.input for job in jobs}
    assert {(r["estimated_cost_usd"], r["unit_price_usd"], r["priority"]) for r in stored} == {
        (PRICE, PRICE, 1)
    }


async def test_creates_over_the_api_share_statements(tenant: Tenant, pool: Pool) -> None:
    """The API stores through its runtime's Intake: creates posted at once share statements."""
    warm = await tenant.http.post("/v1/jobs", json={"input": {"prompt": "warm"}})
    assert warm.status_code == 201, warm.text  # the key and the catalog are cached from here
    posted = await asyncio.gather(
        *(tenant.http.post("/v1/jobs", json={"input": {"prompt": f"fox {n}"}}) for n in range(12))
    )
    assert [answer.status_code for answer in posted] == [201] * 12
    created = {job_uuid(answer.json()["id"]) for answer in posted}
    assert len(created) == 12
    jobs, statements, queued, _ = await _figures(pool, tenant.client_id)
    assert (jobs, queued) == (13, 13)
    assert statements < 13


async def test_a_taken_key_refuses_only_its_own_create(tenant: Tenant, pool: Pool) -> None:
    intake = Intake(pool)
    (first,) = await _store_all(intake, [_job(tenant.client_id)], keys=["taken"])
    assert first["id"] is not None

    jobs = [_job(tenant.client_id, n) for n in range(5)]
    answers = await _store_all(intake, jobs, keys=["a", "b", "taken", "c", None])

    assert isinstance(answers[2], repository.KeyTaken)
    assert [a["id"] for n, a in enumerate(answers) if n != 2] == [
        job.id for n, job in enumerate(jobs) if n != 2
    ]
    # The first alone; the four that came while it ran in one statement, which took none of
    # them (a key taken among them); then each alone.
    assert await _figures(pool, tenant.client_id) == (5, 5, 5, 5 * PRICE)


async def test_a_key_twice_in_one_statement_stores_its_job_once(tenant: Tenant, pool: Pool) -> None:
    intake = Intake(pool)
    jobs = [_job(tenant.client_id, n) for n in range(3)]
    answers = await _store_all(intake, jobs, keys=["same", "same", "other"])

    taken = [a for a in answers if isinstance(a, repository.KeyTaken)]
    stored = [a for a in answers if isinstance(a, asyncpg.Record)]
    assert (len(taken), len(stored)) == (1, 2)
    assert (await _figures(pool, tenant.client_id))[0::2] == (2, 2)


async def test_a_budget_for_some_of_them_stores_as_many_as_fit(tenant: Tenant, pool: Pool) -> None:
    await pool.execute(
        "UPDATE clients SET monthly_budget_usd = $2 WHERE id = $1", tenant.client_id, 3 * PRICE
    )
    intake = Intake(pool)
    answers = await _store_all(intake, [_job(tenant.client_id, n) for n in range(5)])

    refused = [a for a in answers if isinstance(a, repository.BudgetRefused)]
    stored = [a for a in answers if isinstance(a, asyncpg.Record)]
    assert (len(stored), len(refused)) == (3, 2)
    jobs, _, queued, reserved = await _figures(pool, tenant.client_id)
    assert (jobs, queued, reserved) == (3, 3, 3 * PRICE)


async def test_a_cap_for_some_of_them_stores_as_many_as_fit(tenant: Tenant, pool: Pool) -> None:
    intake = Intake(pool)
    answers = await _store_all(intake, [_job(tenant.client_id, n) for n in range(5)], cap=3)

    assert sum(a is None for a in answers) == 2
    assert sum(isinstance(a, asyncpg.Record) for a in answers) == 3
    jobs, _, queued, reserved = await _figures(pool, tenant.client_id)
    assert (jobs, queued, reserved) == (3, 3, 3 * PRICE)


async def test_one_clients_waiting_statement_holds_back_no_other_client(
    tenant: Tenant, other_tenant: Tenant, pool: Pool
) -> None:
    """Statements are per client: while one client's waits on a lock, another's go through."""
    intake = Intake(pool)
    async with pool.acquire() as holder, holder.transaction():
        # The first capped create of a session takes its place on the clients row.
        await holder.execute("SELECT FROM clients WHERE id = $1 FOR UPDATE", tenant.client_id)
        held = asyncio.ensure_future(_store_all(intake, [_job(tenant.client_id)], cap=100))
        other = await asyncio.wait_for(
            _store_all(intake, [_job(other_tenant.client_id, n) for n in range(3)], cap=100), 30
        )
        assert all(isinstance(a, asyncpg.Record) for a in other)
        assert not held.done()
    (row,) = await asyncio.wait_for(held, 30)
    assert row["id"] is not None
    assert (await _figures(pool, other_tenant.client_id))[0] == 3


async def test_a_create_whose_caller_stops_waiting_leaves_the_others_answered(
    tenant: Tenant, pool: Pool
) -> None:
    intake = Intake(pool)
    jobs = [_job(tenant.client_id, n) for n in range(4)]
    calls = [
        asyncio.ensure_future(
            intake.store(job, key=None, fingerprint=None, max_queued_jobs=None, default_budget=None)
        )
        for job in jobs
    ]
    await asyncio.sleep(0)  # every create is waiting for the statement
    calls[1].cancel()
    answers = await asyncio.gather(*calls, return_exceptions=True)

    assert isinstance(answers[1], asyncio.CancelledError)
    assert [answers[n]["id"] for n in (0, 2, 3)] == [jobs[n].id for n in (0, 2, 3)]
    # The statement went on: the job of the caller that left is stored too, as when a request
    # is dropped during its own statement.
    assert await _figures(pool, tenant.client_id) == (4, 2, 4, 4 * PRICE)


async def test_a_deadlock_over_keys_takes_none_of_them(
    tenant: Tenant, pool: Pool, database_url: str
) -> None:
    """Another writer holds one of the statement's keys and then asks for another it took: a
    deadlock, after which the statement reports that it took none, rather than failing."""
    # Only the statement's session looks for the deadlock, 3 s after it starts to wait: the
    # other writer has that long to ask for its second key (Postgres picks the session that
    # finds a deadlock as its victim).
    others = await create_pool(database_url, min_size=1, max_size=1)
    statements = await create_pool(database_url, min_size=1, max_size=1)
    await statements.execute("SET deadlock_timeout = '3s'")  # its one session's

    async def other_takes(conn: Any, key: str) -> None:
        job = _job(tenant.client_id)
        assert await repository.intake(
            conn, job, key=key, fingerprint=b"print", max_queued_jobs=None, default_budget=None
        )

    try:
        async with others.acquire() as other, other.transaction():
            await other.execute("SET LOCAL deadlock_timeout = '60s'")
            await other_takes(other, "second")
            creates = [(_job(tenant.client_id, n), key, b"print") for n, key in enumerate(KEYS)]
            many = asyncio.ensure_future(
                repository.intake_many(
                    statements,
                    tenant.client_id,
                    creates,
                    max_queued_jobs=None,
                    default_budget=None,
                )
            )
            # The statement has taken "first" and waits for "second".
            await until(lambda: _waiting_for_a_lock(pool))
            try:
                await other_takes(other, "first")
            except asyncpg.DeadlockDetectedError:
                pytest.fail("the other writer was chosen: the statement's path is untested")
            assert await asyncio.wait_for(many, 30) is None
    finally:
        await others.close()
        await statements.close()
    jobs, _, queued, reserved = await _figures(pool, tenant.client_id)
    assert (jobs, queued, reserved) == (2, 2, 2 * PRICE)


async def _waiting_for_a_lock(pool: Pool) -> bool:
    return bool(
        await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND wait_event = 'transactionid'"
        )
    )
