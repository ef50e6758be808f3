"""/docs, /redoc and `/`: the documentation works with no network (its assets are served by
falrelay itself), and `/` points people at it and at the console."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import Browser, Page, Request, Route, expect

from app.api import docs
from app.main import create_app
from app.settings import Settings
from tests.console.browser import chromium, chromium_path
from tests.servers import LiveServer

ASSETS = Path(docs.__file__).with_name("docs_assets")
LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}
_REFERENCES = re.compile(r'(?:src|href)="([^"]+)"')


async def test_the_pages_load_only_their_own_assets(anonymous: httpx.AsyncClient) -> None:
    for page, version in (("/docs", "5.35.0"), ("/redoc", "2.5.4")):
        response = await anonymous.get(page)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        references = _REFERENCES.findall(response.text)
        assert references, page
        for url in references:
            assert url.startswith("/docs/assets/"), f"{page} loads {url}"
            assert url.endswith(tuple(f"?v={v}" for v in docs.versions().values())), url
            asset = await anonymous.get(url)
            assert asset.status_code == 200, url
        assert any(url.endswith(f"?v={version}") for url in references)
        assert "fonts.googleapis.com" not in response.text
        assert "cdn.jsdelivr.net" not in response.text
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy
        assert "connect-src 'self'" in policy


async def test_assets_are_the_vendored_bytes_cached_for_good(
    anonymous: httpx.AsyncClient,
) -> None:
    path = "swagger-ui/swagger-ui-bundle.js"
    on_disk = (ASSETS / path).read_bytes()
    url = docs.asset_url("", path)

    zipped = await anonymous.get(url, headers={"Accept-Encoding": "gzip"})
    assert zipped.status_code == 200
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert zipped.headers["content-type"] == "text/javascript; charset=utf-8"
    assert zipped.headers["vary"] == "Accept-Encoding"
    assert zipped.content == on_disk  # httpx decoded it
    assert int(zipped.headers["content-length"]) < len(on_disk) / 2

    plain = await anonymous.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.content == on_disk
    refused = await anonymous.get(url, headers={"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers

    icon = await anonymous.get(docs.asset_url("", "swagger-ui/favicon-32x32.png"))
    assert icon.headers["content-type"] == "image/png"
    assert icon.content == (ASSETS / "swagger-ui" / "favicon-32x32.png").read_bytes()

    # Only the files the pages load: not the licences, the script, nor anything else.
    for other in ("swagger-ui/LICENSE", "redoc/../VERSIONS", "x/refresh.sh", "redoc/redoc.js"):
        assert (await anonymous.get(f"/docs/assets/{other}")).status_code == 404, other


def test_versions_name_what_was_vendored() -> None:
    assert docs.versions() == {"swagger-ui-dist": "5.35.0", "redoc": "2.5.4"}
    bundle = (ASSETS / "redoc" / "redoc.standalone.js").read_bytes()
    assert b'"2.5.4"' in bundle  # ReDoc's bundle names its own version
    for licence in ("swagger-ui/LICENSE", "swagger-ui/NOTICE", "redoc/LICENSE"):
        assert (ASSETS / licence).stat().st_size > 0


async def test_the_home_page_points_at_the_console_and_the_docs(
    anonymous: httpx.AsyncClient,
) -> None:
    page = await anonymous.get("/", headers={"Accept": "text/html,*/*;q=0.8"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["vary"] == "Accept"
    links = re.findall(r'<a href="([^"]+)"', page.text)
    assert links == ["/console", "/docs", "/redoc", "/openapi.json", "/healthz"]
    for link in links:
        followed = await anonymous.get(link)
        assert followed.status_code in (200, 303), link  # /console sends a visitor to log in

    as_json = await anonymous.get("/", headers={"Accept": "application/json"})
    assert as_json.status_code == 200
    assert as_json.headers["content-type"] == "application/json"
    body = as_json.json()
    assert body["name"] == "falrelay"
    assert body["links"] == {
        "console": "/console",
        "docs": "/docs",
        "redoc": "/redoc",
        "openapi": "/openapi.json",
        "health": "/healthz",
    }
    # curl's default Accept gets the page, as a browser does.
    curl = await anonymous.get("/", headers={"Accept": "*/*"})
    assert curl.headers["content-type"].startswith("text/html")


def test_the_pages_are_not_operations(app: FastAPI) -> None:
    paths = app.openapi()["paths"]
    for path in ("/", "/docs", "/redoc", "/docs/assets/{package}/{name}"):
        assert path not in paths


# In a real browser, with every request off loopback refused.


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if chromium_path() is None:
        message = "chromium is not installed: apt-get install -y chromium (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    async with chromium() as browser:
        yield browser


@pytest.fixture
def live(settings: Settings) -> Iterator[str]:
    with LiveServer(create_app(settings)) as server:
        yield server.url


class Offline:
    """A page whose every request to a host other than loopback is refused, and recorded."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.seen: list[str] = []
        self.refused: list[str] = []
        self.blocked_by_policy: list[str] = []
        self.console_errors: list[str] = []
        page.on("request", lambda request: self.seen.append(request.url))
        page.on("requestfailed", self._failed)
        page.on(
            "console",
            lambda message: (
                self.console_errors.append(message.text) if message.type == "error" else None
            ),
        )

    def _failed(self, request: Request) -> None:
        # Chromium names it `csp` (net::ERR_BLOCKED_BY_CSP in other builds).
        if "csp" in (request.failure or "").lower():
            self.blocked_by_policy.append(request.url)

    async def route(self, route: Route, request: Request) -> None:
        if urlsplit(request.url).hostname in LOOPBACK:
            await route.continue_()
        else:
            self.refused.append(request.url)
            await route.abort("internetdisconnected")

    def _off_loopback(self) -> list[str]:
        return [
            url
            for url in self.seen
            if url.startswith(("http:", "https:", "ws:", "wss:"))
            and urlsplit(url).hostname not in LOOPBACK
        ]

    async def assert_stayed_on_loopback(self) -> None:
        # A refusal is reported after the attempt: wait until each attempt has its outcome.
        deadline = time.monotonic() + 10
        while len(self._off_loopback()) > len(self.refused) + len(self.blocked_by_policy):
            assert time.monotonic() < deadline, (self._off_loopback(), self.blocked_by_policy)
            await asyncio.sleep(0.05)
        # Nothing reached the network layer bound for another host...
        assert self.refused == []
        # ...and what the page tried (ReDoc's footer links Redocly's logo on their CDN) was
        # stopped inside the browser by the page's Content-Security-Policy.
        assert self._off_loopback() == self.blocked_by_policy
        assert any("/docs/assets/" in url for url in self.seen)
        # No other error: a policy refusal of the page's own scripts or styles would show here.
        unexpected = [
            text
            for text in self.console_errors
            if not any(url in text for url in self.blocked_by_policy)
        ]
        assert unexpected == []


@pytest.fixture
async def offline(browser: Browser) -> AsyncIterator[Offline]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    watcher = Offline(page)
    await context.route("**/*", watcher.route)
    try:
        yield watcher
    finally:
        await context.close()


async def test_swagger_ui_renders_the_operations_with_no_network(
    live: str, offline: Offline
) -> None:
    page = offline.page
    await page.goto(f"{live}/docs")
    operation = page.locator("#operations-jobs-create_job")
    await expect(operation).to_be_visible(timeout=20_000)
    await expect(operation).to_contain_text("/v1/jobs")
    await expect(page.locator("#operations-jobs-get_job")).to_be_visible()
    await expect(page.locator(".info .title")).to_contain_text("falrelay")
    # Opening an operation shows its documented answers, from the document on this origin.
    await operation.locator(".opblock-summary").first.click()
    await expect(operation.locator(".responses-table").first).to_contain_text("201")
    await offline.assert_stayed_on_loopback()


async def test_redoc_renders_the_operations_with_no_network(live: str, offline: Offline) -> None:
    page = offline.page
    await page.goto(f"{live}/redoc")
    # ReDoc names each operation's section after its operationId.
    section = page.locator('[id="operation/create_job"]')
    await expect(section).to_be_attached(timeout=20_000)
    await expect(section.locator("h2")).to_contain_text("Create Job")
    # And lists it in its menu, under its tag (collapsed until clicked).
    await expect(page.locator('[data-item-id="tag/jobs/operation/get_job"]')).to_be_attached()
    await offline.assert_stayed_on_loopback()
