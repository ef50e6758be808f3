"""Fixtures of the console tests: a signed-in browser-like HTTP client, and real chromium."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import Browser

from tests.console.browser import chromium, chromium_path
from tests.receivers import Receiver
from tests.servers import LiveServer
from tests.support import Tenant, http_client

_CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


class Console:
    """An HTTP client that behaves like the browser: cookies kept, forms posted urlencoded."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def log_in(self, key: str) -> httpx.Response:
        return await self.http.post("/console/login", data={"key": key})

    async def csrf(self, page: str = "/console/jobs") -> str:
        """The form token, read from a page as the browser would see it."""
        response = await self.http.get(page)
        assert response.status_code == 200, response.text
        match = _CSRF.search(response.text)
        assert match is not None, "no form token on the page"
        return match[1]

    async def post(self, path: str, **form: str) -> httpx.Response:
        return await self.http.post(path, data=form)


@pytest.fixture
async def console(app: FastAPI, tenant: Tenant) -> AsyncIterator[Console]:
    """Signed in as `tenant` (no Authorization header: only the cookie speaks for it)."""
    async with http_client(app) as http:
        console = Console(http)
        response = await console.log_in(tenant.key)
        assert response.status_code == 303, response.text
        yield console


@pytest.fixture
async def visitor(app: FastAPI) -> AsyncIterator[Console]:
    """Not signed in."""
    async with http_client(app) as http:
        yield Console(http)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver()
    with LiveServer(receiver.app) as server:
        yield receiver, server.url


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if chromium_path() is None:
        message = "chromium is not installed: apt-get install -y chromium (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    async with chromium() as browser:
        yield browser
