"""The console in a real browser (Debian's chromium), against the whole product on loopback:
a job finished by the fake fal, a delivery that failed at a real receiver, retried by a click."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from playwright.async_api import Browser, expect

from app import ids
from app.auth.keys import hash_key
from tests.console.browser import images_loaded, log_in
from tests.receivers import Answer, Receiver
from tests.stack import StackFactory
from tests.support import fail_deliveries, job_uuid


async def _attempt_codes(stack: Any, delivery_id: Any) -> list[int | None]:
    rows = await stack.pool.fetch(
        "SELECT status_code FROM delivery_attempts WHERE delivery_id = $1 ORDER BY attempted_at",
        delivery_id,
    )
    return [row["status_code"] for row in rows]


async def _sessions_of(stack: Any, key: str) -> int:
    value: int = await stack.pool.fetchval(
        "SELECT count(*) FROM console_sessions s JOIN api_keys k ON k.id = s.api_key_id"
        " WHERE k.key_hash = $1",
        hash_key(key),
    )
    return value


async def test_log_in_see_the_thumbnail_open_the_job_and_retry_a_failed_delivery(
    make_stack: StackFactory, receiver: tuple[Receiver, str], browser: Browser
) -> None:
    inbox, url = receiver
    inbox.script("/hooks", then=Answer(500, b"down for maintenance"))
    async with make_stack() as stack:
        created = await stack.api.post("/v1/webhook-endpoints", json={"url": f"{url}/hooks"})
        assert created.status_code == 201, created.text
        job = await stack.wait_for(
            await stack.create_job("a lighthouse at dusk", aspect_ratio="16:9")
        )
        assert job["status"] == "succeeded"
        (image,) = job["output"]["images"]

        # The receiver answered 500; the schedule is then used up at once (no waiting hours).
        delivery = await stack.pool.fetchval(
            "SELECT id FROM deliveries WHERE job_id = $1", job_uuid(job["id"])
        )
        deadline = time.monotonic() + 10
        while await _attempt_codes(stack, delivery) != [500]:
            assert time.monotonic() < deadline, "the first attempt was not recorded"
            await asyncio.sleep(0.02)
        await fail_deliveries(stack.pool, "id = $1", delivery)
        inbox.script("/hooks", then=Answer(200, b"thanks"))
        key = stack.api.headers["authorization"].removeprefix("Bearer ")

        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            await log_in(page, stack.service_url, key)
            thumbnail = page.locator(f'a[href="/console/jobs/{job["id"]}"] .thumb img')
            assert await thumbnail.get_attribute("src") == image["url"]
            assert await images_loaded(page, ".thumb img") == [image["width"]]

            await thumbnail.click()
            await page.wait_for_url(f"{stack.service_url}/console/jobs/{job['id']}")
            await expect(page.locator("h1")).to_have_text(job["id"])
            await expect(page.locator(".timeline .moment-label")).to_have_text(
                ["created", *await stack.event_types(job["id"])]
            )
            await expect(page.locator(".prompt-full")).to_have_text("a lighthouse at dusk")
            block = page.locator(f"#{ids.encode('dlv', delivery)}")
            await expect(block.locator(".badge")).to_have_text("failed")
            await expect(block.locator("tr.attempt")).to_have_count(1)
            await expect(block.locator("tr.attempt").first).to_contain_text("500")
            await expect(block).to_contain_text("down for maintenance")

            await block.get_by_role("button", name="Retry now").click()
            await expect(page.locator(".flash-ok")).to_contain_text("being sent again")
            # The page reloads itself while the delivery is due; the new attempt appears.
            attempts = page.locator(f"#{ids.encode('dlv', delivery)} tr.attempt")
            await expect(attempts).to_have_count(2, timeout=10_000)
            await expect(attempts.nth(1)).to_contain_text("200")
            await expect(page.locator(f"#{ids.encode('dlv', delivery)} .badge")).to_have_text(
                "succeeded"
            )

            # Logging out ends the session in Postgres, not only in this browser.
            assert await _sessions_of(stack, key) == 1
            await page.goto(f"{stack.service_url}/console/endpoints")
            await page.get_by_role("button", name="Log out").click()
            await page.wait_for_url(f"{stack.service_url}/console/login")
            assert await _sessions_of(stack, key) == 0
            assert "falrelay_console" not in {c["name"] for c in await page.context.cookies()}
        finally:
            await page.close()

        assert await _attempt_codes(stack, delivery) == [500, 200]
        assert (
            await stack.pool.fetchval("SELECT status FROM deliveries WHERE id = $1", delivery)
            == "succeeded"
        )
        # The retry sent the same event again.
        first, second = inbox.at("/hooks")
        assert first.headers["webhook-id"] == second.headers["webhook-id"]
        assert first.body == second.body
