"""The console behind a TLS-terminating proxy, against `falrelay api` as operators run it.

The proxy is played by clients on two loopback addresses: 127.0.0.2 is the trusted proxy
(FALRELAY_FORWARDED_ALLOW_IPS), 127.0.0.1 anyone else. uvicorn's own default would trust
127.0.0.1 and not 127.0.0.2, so these tests also show that the setting reaches uvicorn.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port
from tests.support import Tenant

pytestmark = pytest.mark.slow

PROXY = "127.0.0.2"
STRANGER = "127.0.0.1"
# What the browser addressed: a name only, sent as headers; nothing resolves it.
SITE = "console.falrelay.example"
FORWARDED = {"Host": SITE, "X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}


def _falrelay(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("falrelay")
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "app", *args]


@pytest.fixture
def api_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FALRELAY_")}
    env.pop("FORWARDED_ALLOW_IPS", None)  # uvicorn's own variable must not decide this
    env.update(
        FALRELAY_DATABASE_URL=database_url,
        FALRELAY_FORWARDED_ALLOW_IPS=PROXY,
        FALRELAY_LOG_FORMAT="text",
    )
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _falrelay("api", "--host", "127.0.0.1", "--port", str(port)),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, log.read_text()
                try:
                    if httpx.get(f"{url}/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "falrelay api did not become ready"
                time.sleep(0.05)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _from(address: str, url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url,
        transport=httpx.AsyncHTTPTransport(local_address=address),
        timeout=30,
    )


@pytest.fixture
async def proxy(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with _from(PROXY, api_url) as http:
        yield http


@pytest.fixture
async def stranger(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with _from(STRANGER, api_url) as http:
        yield http


def _flags(response: httpx.Response) -> tuple[str, set[str]]:
    cookie = response.headers["set-cookie"]
    value = cookie.split(";")[0]
    return value, {part.strip().lower() for part in cookie.split(";")[1:]}


async def test_login_through_a_trusted_proxy_sets_a_secure_cookie(
    proxy: httpx.AsyncClient, tenant: Tenant
) -> None:
    # A browser at https://SITE posting the login form, as the proxy hands it on over http.
    response = await proxy.post(
        "/console/login",
        data={"key": tenant.key},
        headers={**FORWARDED, "Origin": f"https://{SITE}", "Sec-Fetch-Site": "same-origin"},
    )
    assert (response.status_code, response.headers["location"]) == (303, "/console/jobs")
    cookie, flags = _flags(response)
    assert {"secure", "httponly", "samesite=strict", "path=/console"} <= flags
    # The browser sends it back (over https, through the proxy) and is signed in.
    page = await proxy.get("/console/jobs", headers={**FORWARDED, "Cookie": cookie})
    assert page.status_code == 200, page.text
    assert "Log out" in page.text


async def test_forwarded_headers_from_anyone_else_are_ignored(
    stranger: httpx.AsyncClient, tenant: Tenant
) -> None:
    # The same request from an address that is not the proxy: the scheme stays http, so the
    # https Origin is another site's and the login is refused.
    response = await stranger.post(
        "/console/login",
        data={"key": tenant.key},
        headers={**FORWARDED, "Origin": f"https://{SITE}"},
    )
    assert response.status_code == 403
    assert "set-cookie" not in response.headers
    # Without an Origin the login goes through, over what is plain http: no Secure cookie.
    response = await stranger.post("/console/login", data={"key": tenant.key}, headers=FORWARDED)
    assert response.status_code == 303
    _, flags = _flags(response)
    assert "secure" not in flags
    assert "httponly" in flags
