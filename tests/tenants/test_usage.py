"""GET /v1/usage: the figures against the jobs rows in Postgres, per day and per model, over
a range; amounts as exact decimal strings."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from app.billing.usage import month_start
from app.catalog import DEFAULT_MODEL_ID
from app.fakefal import FakeFalConfig
from tests.stack import Stack, StackFactory
from tests.support import Tenant, assert_problem, job_uuid


def usd(value: Decimal) -> str:
    """Written independently of the service: at least two places, no trailing zeros."""
    text = format(value.normalize(), "f")
    whole, _, places = text.partition(".")
    return f"{whole}.{places.ljust(2, '0')}"


async def figures_from_rows(stack: Stack, start: datetime, end: datetime) -> dict[str, Any]:
    """The usage as the rows say it, computed here rather than by the service's SQL."""
    rows = await stack.pool.fetch(
        "SELECT created_at, model, status, output, estimated_cost_usd, cost_usd FROM jobs "
        "WHERE client_id = $1",
        stack.client_id,
    )
    picked = [row for row in rows if start <= row["created_at"] < end]
    days: dict[str, list[Any]] = defaultdict(lambda: [0, 0, Decimal(0)])
    total_images = 0
    for row in picked:
        images = len(row["output"]["images"]) if row["status"] == "succeeded" else 0
        total_images += images
        day = days[row["created_at"].astimezone(UTC).strftime("%Y-%m-%d")]
        day[0] += 1
        day[1] += images
        day[2] += row["cost_usd"] or Decimal(0)
    return {
        "jobs": len(picked),
        "images": total_images,
        "cost_usd": usd(sum((r["cost_usd"] or Decimal(0) for r in picked), Decimal(0))),
        "reserved_usd": usd(
            sum((r["estimated_cost_usd"] for r in picked if r["cost_usd"] is None), Decimal(0))
        ),
        "groups": [
            {"key": key, "jobs": jobs, "images": images, "cost_usd": usd(cost)}
            for key, (jobs, images, cost) in sorted(days.items())
        ],
    }


async def test_usage_matches_the_rows(make_stack: StackFactory) -> None:
    async with make_stack(fal=FakeFalConfig(random_seed=7)) as stack:
        await stack.pool.execute(
            "UPDATE clients SET monthly_budget_usd = 25 WHERE id = $1", stack.client_id
        )
        done = [
            await stack.create_job(f"fox {i}", resolution=r)
            for i, r in enumerate(["1K", "2K", "2K"])
        ]
        for job_id in done:
            assert (await stack.wait_for(job_id))["status"] == "succeeded"
        await stack.configure_fal(error_rate=1.0, error_types=["runner_disconnected"])
        failed = await stack.create_job("owl")
        assert (await stack.wait_for(failed))["status"] == "failed"
        await stack.configure_fal(error_rate=0.0, queue_latency=60.0)
        waiting = await stack.create_job("cat", resolution="2K")
        await stack.wait_for(waiting, {"submitted"})
        # One finished job from last month, which the default range (this month) leaves out.
        last_month = month_start(datetime.now(UTC)) - timedelta(days=3)
        await stack.pool.execute(
            "UPDATE jobs SET created_at = $2 WHERE id = $1", job_uuid(done[0]), last_month
        )

        answer = await stack.api.get("/v1/usage")
        assert answer.status_code == 200, answer.text
        usage = answer.json()
        now = datetime.now(UTC)
        expected = await figures_from_rows(stack, month_start(now), month_start(now, 1))
        assert {key: usage[key] for key in expected} == expected
        assert usage["jobs"] == 4
        assert usage["images"] == 2
        assert (usage["cost_usd"], usage["reserved_usd"]) == ("0.10", "0.05")
        assert usage["budget_usd"] == "25.00"
        assert usage["from"] == month_start(now).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert usage["to"] == month_start(now, 1).strftime("%Y-%m-%dT%H:%M:%SZ")

        start, end = last_month - timedelta(days=1), now + timedelta(minutes=1)
        params = {"from": start.isoformat(), "to": end.isoformat(), "group_by": "day"}
        wide = (await stack.api.get("/v1/usage", params=params)).json()
        expected = await figures_from_rows(stack, start, end)
        assert {key: wide[key] for key in expected} == expected
        assert wide["jobs"] == 5
        assert wide["cost_usd"] == "0.13"
        assert len(wide["groups"]) == 2

        by_model = (await stack.api.get("/v1/usage", params={**params, "group_by": "model"})).json()
        assert by_model["groups"] == [
            {"key": DEFAULT_MODEL_ID, "jobs": 5, "images": 3, "cost_usd": "0.13"}
        ]
        # The money columns hold what the answers add up to, to the millionth.
        assert await stack.pool.fetchval(
            "SELECT sum(cost_usd) FROM jobs WHERE client_id = $1", stack.client_id
        ) == Decimal("0.13")


async def test_usage_is_the_clients_own(tenant: Tenant, other_tenant: Tenant) -> None:
    assert (
        await other_tenant.http.post("/v1/jobs", json={"input": {"prompt": "x"}})
    ).status_code == 201
    usage = (await tenant.http.get("/v1/usage")).json()
    assert (usage["jobs"], usage["reserved_usd"], usage["groups"]) == (0, "0.00", [])
    theirs = (await other_tenant.http.get("/v1/usage")).json()
    assert (theirs["jobs"], theirs["reserved_usd"]) == (1, "0.05")
    assert theirs["budget_usd"] is None


async def test_usage_refuses_a_bad_range(tenant: Tenant) -> None:
    backwards = {"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
    assert_problem(await tenant.http.get("/v1/usage", params=backwards), 422, "validation")
    unix = {"from": "1700000000"}
    assert_problem(await tenant.http.get("/v1/usage", params=unix), 422, "validation")
    grouped = {"group_by": "week"}
    assert_problem(await tenant.http.get("/v1/usage", params=grouped), 422, "validation")
