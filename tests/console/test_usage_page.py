"""The usage page over HTTP (in process): jobs reserved by the API and settled by the same
state changes the worker makes; the page's figures and every bar of its chart are checked
against the rows in Postgres."""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from app.billing.usage import month_start
from app.catalog import DEFAULT_MODEL_ID
from app.db.pool import Pool
from app.jobs import lifecycle
from tests.console.conftest import Console
from tests.console.test_pages import create_job, is_html
from tests.support import Tenant, job_uuid

SVG = "{http://www.w3.org/2000/svg}"
OTHER_MODEL = "fal-ai/older-model"


def usd(value: Decimal) -> str:
    """Written independently of the service: at least two places, no trailing zeros."""
    text = format(value.normalize(), "f")
    whole, _, places = text.partition(".")
    return f"${whole}.{places.ljust(2, '0')}"


def figure(page: str, name: str) -> str:
    match = re.search(rf'id="{name}">([^<]*)<', page)
    assert match is not None, name
    return match[1]


def chart(page: str) -> ET.Element:
    match = re.search(r'<svg class="chart spend-chart".*?</svg>', page, re.S)
    assert match is not None, "no spend chart on the page"
    return ET.fromstring(match[0])


def drawn_bars(page: str) -> dict[tuple[str, str], str]:
    return {
        (rect.get("data-day", ""), rect.get("data-model", "")): rect.get("data-usd", "")
        for rect in chart(page).iter(f"{SVG}rect")
        if rect.get("class") == "bar"
    }


async def create_image_job(tenant: Tenant, prompt: str, resolution: str) -> uuid.UUID:
    response = await tenant.http.post(
        "/v1/jobs", json={"input": {"prompt": prompt, "resolution": resolution}}
    )
    assert response.status_code == 201, response.text
    return job_uuid(response.json()["id"])


async def spend_from_rows(pool: Pool, client_id: uuid.UUID) -> dict[tuple[str, str], str]:
    """Per day and model, what the finished jobs cost, computed here from the rows."""
    rows = await pool.fetch(
        "SELECT created_at, model, cost_usd FROM jobs WHERE client_id = $1 AND cost_usd > 0",
        client_id,
    )
    sums: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for row in rows:
        sums[(row["created_at"].astimezone(UTC).date().isoformat(), row["model"])] += row[
            "cost_usd"
        ]
    return {key: usd(value).removeprefix("$") for key, value in sums.items()}


async def test_the_usage_page_shows_the_ledger_and_the_spend_per_day_and_model(
    console: Console, pool: Pool, tenant: Tenant
) -> None:
    await pool.execute("UPDATE clients SET monthly_budget_usd = 5 WHERE id = $1", tenant.client_id)
    # Reserved by POST /v1/jobs: $0.03 a 1K image, $0.05 a 2K one.
    ids = [
        await create_image_job(tenant, f"fox {i}", resolution)
        for i, resolution in enumerate(["1K", "2K", "2K", "1K", "2K"])
    ]
    # Two jobs from the first day of this month, one of them by another model (jobs of a model
    # since retired from the catalog are still in the record), the rest from its second day:
    # days of their own whatever today is (on the first of a month, today is the first day).
    first_day = month_start(datetime.now(UTC)).replace(minute=30)
    await pool.execute(
        "UPDATE jobs SET created_at = $2 WHERE id = ANY($1::uuid[])", ids[:2], first_day
    )
    await pool.execute(
        "UPDATE jobs SET created_at = $2 WHERE id = ANY($1::uuid[])",
        ids[2:],
        first_day + timedelta(days=1),
    )
    await pool.execute("UPDATE jobs SET model = $2 WHERE id = $1", ids[1], OTHER_MODEL)
    await pool.execute("UPDATE jobs SET model = $2 WHERE id = $1", ids[2], OTHER_MODEL)
    # Settled as the worker settles them: fal billed 3 units for one, the rest at the estimate,
    # one failed (no cost), one still running (reserved).
    for job_id in ids[:2]:
        assert await lifecycle.mark_succeeded(
            pool, job_id, {"images": []}, fal_request_id=None, wakeup=None
        )
    assert await lifecycle.mark_succeeded(
        pool, ids[3], {"images": []}, fal_request_id=None, wakeup=None, billable_units=Decimal(3)
    )
    assert await lifecycle.mark_failed(pool, ids[4], error_type="x", message="y", wakeup=None)

    ledger = await pool.fetchrow(
        "SELECT sum(spent_usd) AS spent_usd, sum(reserved_usd) AS reserved_usd FROM client_spend "
        "WHERE client_id = $1",
        tenant.client_id,
    )
    assert ledger is not None
    assert (ledger["spent_usd"], ledger["reserved_usd"]) == (Decimal("0.17"), Decimal("0.05"))

    page = is_html(await console.http.get("/console/usage"), 200)
    assert figure(page, "spent") == usd(ledger["spent_usd"]) == "$0.17"
    assert figure(page, "reserved") == usd(ledger["reserved_usd"]) == "$0.05"
    assert figure(page, "budget") == "$5.00"
    assert figure(page, "remaining") == "$4.78"
    assert '<a href="/console/usage" aria-current="page">Usage</a>' in page

    expected = await spend_from_rows(pool, tenant.client_id)
    assert drawn_bars(page) == expected
    assert set(expected.values()) == {"0.03", "0.05", "0.09"}
    first = first_day.date().isoformat()
    assert expected[(first, DEFAULT_MODEL_ID)] == "0.03"
    assert expected[(first, OTHER_MODEL)] == "0.05"
    # The budget bar says the same, and the month has a bar slot for each of its days.
    assert "$0.22 of $5.00 (4%)" in page
    days = [g for g in chart(page).iter(f"{SVG}g") if g.get("class") == "day"]
    assert days[0].get("data-day") == first

    # Without a budget of its own (and no default): "no budget".
    await pool.execute(
        "UPDATE clients SET monthly_budget_usd = NULL WHERE id = $1", tenant.client_id
    )
    page = is_html(await console.http.get("/console/usage"), 200)
    assert figure(page, "budget") == "no budget"
    assert "$0.22 used · no budget" in page

    # Last month: nothing was spent; a month that is not YYYY-MM shows this one.
    last = month_start(datetime.now(UTC), -1).strftime("%Y-%m")
    before = is_html(await console.http.get(f"/console/usage?month={last}"), 200)
    assert figure(before, "spent") == "$0.00"
    assert drawn_bars(before) == {}
    this = month_start(datetime.now(UTC)).strftime("%Y-%m")
    assert f'href="/console/usage?month={this}"' in before
    garbage = is_html(await console.http.get("/console/usage?month=2026-13"), 200)
    assert drawn_bars(garbage) == expected


async def test_another_clients_spend_is_not_shown(
    console: Console, pool: Pool, tenant: Tenant, other_tenant: Tenant
) -> None:
    theirs = await create_job(other_tenant, "theirs")
    assert await lifecycle.mark_succeeded(
        pool, job_uuid(theirs["id"]), {"images": []}, fal_request_id=None, wakeup=None
    )
    page = is_html(await console.http.get("/console/usage"), 200)
    assert figure(page, "spent") == "$0.00"
    assert drawn_bars(page) == {}
