"""The usage page in a real browser (Debian's chromium), against the whole product on
loopback: jobs finished by the fake fal and settled by the worker, drawn as the chart's bars."""

from __future__ import annotations

import os
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from playwright.async_api import Browser, expect

from app.billing.usage import month_start
from app.catalog import DEFAULT_MODEL_ID
from tests.console.browser import log_in
from tests.stack import StackFactory
from tests.support import job_uuid

OTHER_MODEL = "fal-ai/older-model"
# Set to write the README's screenshot (docs/console-usage.png) from this test's page.
SCREENSHOT = os.environ.get("FALRELAY_USAGE_SCREENSHOT")


async def test_the_usage_page_draws_a_bar_per_model_and_day(
    make_stack: StackFactory, browser: Browser, tmp_path: Path
) -> None:
    async with make_stack() as stack:
        await stack.pool.execute(
            "UPDATE clients SET monthly_budget_usd = 2 WHERE id = $1", stack.client_id
        )
        jobs = [
            await stack.create_job(f"fox {i}", resolution=r)
            for i, r in enumerate(["1K", "2K", "2K", "1K", "2K", "1K"])
        ]
        for job_id in jobs:
            assert (await stack.wait_for(job_id))["status"] == "succeeded"
        # Spread over the month's first days and two models, as a month of work would be.
        start = month_start(datetime.now(UTC))
        for i, job_id in enumerate(jobs[:4]):
            await stack.pool.execute(
                "UPDATE jobs SET created_at = $2, model = $3 WHERE id = $1",
                job_uuid(job_id),
                start.replace(day=1 + i // 2, hour=9),
                OTHER_MODEL if i % 2 else DEFAULT_MODEL_ID,
            )
        rows = await stack.pool.fetch(
            "SELECT DISTINCT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, model"
            " FROM jobs WHERE client_id = $1 AND cost_usd > 0",
            stack.client_id,
        )
        expected = Counter(row["model"] for row in rows)
        spent = await stack.pool.fetchval(
            "SELECT sum(spent_usd) FROM client_spend WHERE client_id = $1", stack.client_id
        )
        assert spent == Decimal("0.24")
        key = stack.api.headers["authorization"].removeprefix("Bearer ")

        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            await log_in(page, stack.service_url, key)
            await page.get_by_role("link", name="Usage").click()
            await page.wait_for_url(f"{stack.service_url}/console/usage")
            await expect(page.locator("#spent")).to_have_text("$0.24")
            await expect(page.locator("#budget")).to_have_text("$2.00")
            for model, count in expected.items():
                bars = page.locator(f'svg.spend-chart rect.bar[data-model="{model}"]')
                await expect(bars).to_have_count(count)
                for i in range(count):
                    await expect(bars.nth(i)).to_be_visible()
                    box = await bars.nth(i).bounding_box()
                    assert box is not None
                    assert box["height"] > 1
                    assert box["width"] > 1
            legend = page.locator("svg.spend-chart .legend-item")
            await expect(legend).to_have_count(len(expected))
            await expect(page.locator("svg.budget-bar rect.spent")).to_be_visible()
            shot = tmp_path / "usage.png"
            await page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if SCREENSHOT:
                await page.screenshot(path=SCREENSHOT, full_page=True)
        finally:
            await page.close()
