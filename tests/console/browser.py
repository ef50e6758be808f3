"""Debian's chromium driven by Playwright: no browser download, the system's own binary."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = os.environ.get("FALRELAY_CHROMIUM", "/usr/bin/chromium")
# No GPU on test machines; QUIC would only ever try to reach the network.
CHROMIUM_ARGS = ["--disable-gpu", "--disable-quic"]


def chromium_path() -> str | None:
    return CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    path = chromium_path()
    if path is None:
        raise RuntimeError("chromium is not installed (apt-get install -y chromium)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=path, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


async def log_in(page: Page, base_url: str, key: str) -> None:
    await page.goto(f"{base_url}/console/login")
    await page.fill("input[name=key]", key)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base_url}/console/jobs")


async def images_loaded(page: Page, selector: str = "img") -> list[int]:
    """Waits until every image matching `selector` has finished loading; their naturalWidth
    (0 for an image the browser could not load or decode)."""
    await page.wait_for_function(
        "s => [...document.querySelectorAll(s)].every(i => i.complete)", arg=selector
    )
    widths: list[int] = await page.eval_on_selector_all(
        selector, "imgs => imgs.map(i => i.naturalWidth)"
    )
    return widths
