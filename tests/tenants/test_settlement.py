"""Settlement end to end through the fake fal: a succeeded job's reservation becomes what fal
billed (X-Fal-Billable-Units on the result) or, without it, the estimate; a failed or canceled
job releases it. Checked in Postgres and in the Prometheus counters."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal

import httpx
import pytest

from app.catalog import DEFAULT_MODEL_ID
from app.db.pool import Pool
from app.fakefal import FakeFalConfig
from tests.stack import Stack, StackFactory
from tests.support import job_uuid


async def job_money(pool: Pool, job_id: str) -> tuple[Decimal, Decimal | None, Decimal | None]:
    row = await pool.fetchrow(
        "SELECT estimated_cost_usd, cost_usd, billable_units FROM jobs WHERE id = $1",
        job_uuid(job_id),
    )
    assert row is not None
    return row["estimated_cost_usd"], row["cost_usd"], row["billable_units"]


async def ledger(pool: Pool, client_id: uuid.UUID) -> tuple[Decimal, Decimal]:
    row = await pool.fetchrow(
        "SELECT sum(reserved_usd) AS reserved_usd, sum(spent_usd) AS spent_usd FROM client_spend "
        "WHERE client_id = $1",
        client_id,
    )
    assert row is not None
    return row["reserved_usd"], row["spent_usd"]


async def metric(stack: Stack, name: str, **labels: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{stack.service_url}/metrics")).text
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return 0.0


async def test_poll_mode_settles_from_billable_units(make_stack: StackFactory) -> None:
    # Without webhooks the reconciler fetches every result, and fal says what it billed: here
    # two units of a 2K image ($0.05 each), so the job costs $0.10, not its $0.05 estimate.
    fal = FakeFalConfig(random_seed=7, billable_units=Decimal(2))
    async with make_stack(webhooks=False, fal=fal) as stack:
        before = await metric(
            stack, "falrelay_cost_usd_total", client="e2e", model=DEFAULT_MODEL_ID
        )
        job_id = await stack.create_job(resolution="2K")
        assert await ledger(stack.pool, stack.client_id) == (Decimal("0.05"), Decimal(0))
        job = await stack.wait_for(job_id)
        assert job["status"] == "succeeded"
        assert await job_money(stack.pool, job_id) == (
            Decimal("0.05"),
            Decimal("0.10"),
            Decimal(2),
        )
        assert await ledger(stack.pool, stack.client_id) == (Decimal(0), Decimal("0.10"))
        after = await metric(stack, "falrelay_cost_usd_total", client="e2e", model=DEFAULT_MODEL_ID)
        # The counter is a float sum across the whole test session: compare within rounding.
        assert after - before == pytest.approx(0.10, abs=1e-9)
        jobs = await metric(
            stack, "falrelay_jobs_total", client="e2e", model=DEFAULT_MODEL_ID, status="succeeded"
        )
        assert jobs >= 1


async def test_the_fakes_own_units_are_its_images(make_stack: StackFactory) -> None:
    async with make_stack(webhooks=False) as stack:
        job_id = await stack.create_job()  # 1K
        assert (await stack.wait_for(job_id))["status"] == "succeeded"
        assert await job_money(stack.pool, job_id) == (
            Decimal("0.03"),
            Decimal("0.03"),
            Decimal(1),
        )


async def test_a_webhook_without_units_settles_at_the_estimate(make_stack: StackFactory) -> None:
    fal = FakeFalConfig(random_seed=7, billable_units=Decimal(5))
    async with make_stack(fal=fal) as stack:
        job_id = await stack.create_job()
        assert (await stack.wait_for(job_id))["status"] == "succeeded"
        # fal's webhook carries the output but no billed units: the estimate stands.
        assert await job_money(stack.pool, job_id) == (Decimal("0.03"), Decimal("0.03"), None)
        assert await ledger(stack.pool, stack.client_id) == (Decimal(0), Decimal("0.03"))


async def test_a_failed_job_releases_its_reservation(make_stack: StackFactory) -> None:
    fal = FakeFalConfig(random_seed=7, error_rate=1.0, error_types=["runner_disconnected"])
    async with make_stack(webhooks=False, fal=fal) as stack:
        before = await metric(
            stack, "falrelay_jobs_total", client="e2e", model=DEFAULT_MODEL_ID, status="failed"
        )
        job_id = await stack.create_job(resolution="2K")
        assert (await stack.wait_for(job_id))["status"] == "failed"
        assert await job_money(stack.pool, job_id) == (Decimal("0.05"), Decimal(0), None)
        assert await ledger(stack.pool, stack.client_id) == (Decimal(0), Decimal(0))
        after = await metric(
            stack, "falrelay_jobs_total", client="e2e", model=DEFAULT_MODEL_ID, status="failed"
        )
        assert after - before == 1


async def test_a_canceled_job_releases_its_reservation(make_stack: StackFactory) -> None:
    async with make_stack(fal=FakeFalConfig(random_seed=7, queue_latency=60.0)) as stack:
        queued_at_fal = await stack.create_job()
        await stack.wait_for(queued_at_fal, {"submitted"})
        assert await ledger(stack.pool, stack.client_id) == (Decimal("0.03"), Decimal(0))
        answer = await stack.api.post(f"/v1/jobs/{queued_at_fal}/cancel")
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "canceled"
        assert await job_money(stack.pool, queued_at_fal) == (Decimal("0.03"), Decimal(0), None)
        assert await ledger(stack.pool, stack.client_id) == (Decimal(0), Decimal(0))


async def test_settlement_happens_once_whatever_arrives_twice(make_stack: StackFactory) -> None:
    # Every webhook sent twice, and the reconciler racing them: one settlement per job.
    fal = FakeFalConfig(random_seed=7, webhook_duplicate_rate=1.0)
    async with make_stack(fal=fal, reconcile_after_seconds=0.1) as stack:
        ids = [await stack.create_job(f"fox {i}") for i in range(5)]
        for job_id in ids:
            assert (await stack.wait_for(job_id))["status"] == "succeeded"
        spent = await stack.pool.fetchval(
            "SELECT sum(cost_usd) FROM jobs WHERE client_id = $1", stack.client_id
        )
        assert spent == Decimal("0.15")
        assert await ledger(stack.pool, stack.client_id) == (Decimal(0), Decimal("0.15"))
