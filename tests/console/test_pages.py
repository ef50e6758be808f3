"""The console over HTTP (in process): sign-in, isolation between clients, form tokens,
filters and the endpoint actions, checked in the pages and in Postgres."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import FastAPI

from app import ids
from app.db.pool import Pool
from tests.console.conftest import Console
from tests.support import Tenant, fail_deliveries, http_client, job_uuid


async def create_job(tenant: Tenant, prompt: str = "a red fox", **body: Any) -> dict[str, Any]:
    response = await tenant.http.post("/v1/jobs", json={"input": {"prompt": prompt}, **body})
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


# A public literal: no DNS lookup at registration, and no worker runs on this database, so
# nothing is ever sent to it.
ENDPOINT_URL = "https://93.184.215.14/hooks/falrelay"


async def create_endpoint(tenant: Tenant) -> dict[str, Any]:
    response = await tenant.http.post("/v1/webhook-endpoints", json={"url": ENDPOINT_URL})
    assert response.status_code == 201, response.text
    endpoint: dict[str, Any] = response.json()
    return endpoint


async def ping(tenant: Tenant, endpoint: dict[str, Any]) -> str:
    """A delivery (a test event, queued: no worker runs here)."""
    response = await tenant.http.post(f"/v1/webhook-endpoints/{endpoint['id']}/test")
    assert response.status_code == 202, response.text
    delivery_id: str = response.json()["id"]
    return delivery_id


def _uuid(prefix: str, public_id: str) -> uuid.UUID:
    value = ids.decode(prefix, public_id)
    assert value is not None
    return value


async def delivery_row(pool: Pool, delivery_id: str) -> dict[str, Any]:
    row = await pool.fetchrow(
        "SELECT status, next_attempt_at, updated_at FROM deliveries WHERE id = $1",
        _uuid("dlv", delivery_id),
    )
    assert row is not None
    return dict(row)


async def secrets_of(pool: Pool, endpoint: dict[str, Any]) -> list[dict[str, Any]]:
    value: list[dict[str, Any]] = await pool.fetchval(
        "SELECT secrets FROM webhook_endpoints WHERE id = $1", _uuid("ep", endpoint["id"])
    )
    return value


def is_html(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    return response.text


async def test_pages_without_a_session_lead_to_the_login_page(
    visitor: Console, tenant: Tenant
) -> None:
    job = await create_job(tenant)
    for path in ("/console/jobs?status=queued", f"/console/jobs/{job['id']}", "/console/endpoints"):
        response = await visitor.http.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"] == f"/console/login?next={quote(path, safe='')}"
    # A form post without a session does nothing and goes to the login page too.
    response = await visitor.post(f"/console/jobs/{job['id']}/cancel", csrf="0" * 64)
    assert (response.status_code, response.headers["location"]) == (303, "/console/login")
    assert (await tenant.http.get(f"/v1/jobs/{job['id']}")).json()["status"] == "queued"
    # After signing in, `next` brings the visitor back where they were going.
    login = await visitor.http.get("/console/login", params={"next": f"/console/jobs/{job['id']}"})
    assert f'name="next" value="/console/jobs/{job["id"]}"' in is_html(login, 200)
    response = await visitor.post(
        "/console/login", key=tenant.key, next=f"/console/jobs/{job['id']}"
    )
    assert response.headers["location"] == f"/console/jobs/{job['id']}"


async def test_the_login_cookie_is_http_only_strict_and_scoped_to_the_console(
    app: FastAPI, tenant: Tenant
) -> None:
    async with http_client(app) as http:
        response = await Console(http).log_in(tenant.key)
        assert (response.status_code, response.headers["location"]) == (303, "/console/jobs")
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("falrelay_console=")
        assert tenant.key not in cookie  # an opaque session token (tests/console/test_sessions.py)
        flags = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/console"} <= flags
        assert "secure" not in flags  # plain http: a Secure cookie would never come back
        assert is_html(await http.get("/console/jobs"), 200)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://falrelay.test"
    ) as https:
        cookie = (await Console(https).log_in(tenant.key)).headers["set-cookie"]
        assert "secure" in {part.strip().lower() for part in cookie.split(";")}


async def test_a_bad_key_shows_an_error_and_sets_no_cookie(visitor: Console) -> None:
    for key in ("frk_not-a-key", ""):
        response = await visitor.log_in(key)
        assert "That API key is not valid" in is_html(response, 401)
        assert "set-cookie" not in response.headers
    assert (await visitor.http.get("/console/jobs")).status_code == 303


async def test_a_cookie_whose_key_no_longer_resolves_is_cleared(visitor: Console) -> None:
    # A session that ended (logged out, expired, its key revoked) looks exactly like this.
    visitor.http.cookies.set(
        "falrelay_console", "frk_revoked", domain="falrelay.test", path="/console"
    )
    response = await visitor.http.get("/console/endpoints")
    assert response.headers["location"] == "/console/login?next=%2Fconsole%2Fendpoints"
    assert response.headers["set-cookie"].startswith('falrelay_console="";')
    assert "falrelay_console" not in visitor.http.cookies


async def test_login_posted_from_another_site_is_refused(visitor: Console, tenant: Tenant) -> None:
    response = await visitor.http.post(
        "/console/login", data={"key": tenant.key}, headers={"Origin": "https://evil.example"}
    )
    assert "Form refused" in is_html(response, 403)
    assert "set-cookie" not in response.headers


async def test_another_clients_job_endpoint_and_delivery_are_not_found(
    console: Console, pool: Pool, tenant: Tenant, other_tenant: Tenant
) -> None:
    mine = await create_job(tenant, "mine")
    theirs = await create_job(other_tenant, "theirs")
    endpoint = await create_endpoint(other_tenant)
    delivery_id = await ping(other_tenant, endpoint)
    before = await delivery_row(pool, delivery_id)

    for path in (f"/console/jobs/{theirs['id']}", f"/console/endpoints/{endpoint['id']}"):
        assert "Not found" in is_html(await console.http.get(path), 404)
    csrf = await console.csrf()
    answer = await console.post(f"/console/deliveries/{delivery_id}/retry", csrf=csrf)
    is_html(answer, 404)
    for action in ("test", "rotate-secret", "recover"):
        is_html(await console.post(f"/console/endpoints/{endpoint['id']}/{action}", csrf=csrf), 404)
    assert await delivery_row(pool, delivery_id) == before
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM deliveries WHERE endpoint_id = $1", _uuid("ep", endpoint["id"])
        )
        == 1
    )
    gallery = is_html(await console.http.get("/console/jobs"), 200)
    assert mine["id"] in gallery
    assert theirs["id"] not in gallery
    # Its own job is there, with its page.
    assert "mine" in is_html(await console.http.get(f"/console/jobs/{mine['id']}"), 200)


async def test_a_form_without_the_token_is_refused_and_changes_nothing(
    console: Console, pool: Pool, tenant: Tenant
) -> None:
    endpoint = await create_endpoint(tenant)
    delivery_id = await ping(tenant, endpoint)
    await fail_deliveries(pool, "id = $1", _uuid("dlv", delivery_id))
    failed = await delivery_row(pool, delivery_id)
    secrets = await secrets_of(pool, endpoint)
    retry = f"/console/deliveries/{delivery_id}/retry"
    rotate = f"/console/endpoints/{endpoint['id']}/rotate-secret"
    disable = f"/console/endpoints/{endpoint['id']}/enabled"

    for form in ({}, {"csrf": "0" * 64}, {"csrf": ""}):
        assert "Form refused" in is_html(await console.post(retry, **form), 403)
        is_html(await console.post(rotate, **form), 403)
        is_html(await console.post(disable, enabled="false", **form), 403)
    # A JSON body carries no form token either.
    is_html(await console.http.post(retry, json={"csrf": await console.csrf()}), 403)
    assert await delivery_row(pool, delivery_id) == failed
    assert await secrets_of(pool, endpoint) == secrets
    assert (await tenant.http.get(f"/v1/webhook-endpoints/{endpoint['id']}")).json()["enabled"]

    # With the page's token the same post goes through.
    csrf = await console.csrf()
    back = f"/console/endpoints/{endpoint['id']}"
    response = await console.post(retry, csrf=csrf, back=back)
    assert (response.status_code, response.headers["location"]) == (303, back)
    assert (await delivery_row(pool, delivery_id))["status"] == "pending"
    page = is_html(await console.http.get(back), 200)
    assert f"Delivery {delivery_id} is being sent again now." in page


async def test_a_redirect_after_a_post_stays_on_the_console(
    console: Console, tenant: Tenant
) -> None:
    delivery_id = await ping(tenant, await create_endpoint(tenant))
    csrf = await console.csrf()
    for back in ("https://evil.example/", "//evil.example/console/", "/v1/jobs", "/console\\x"):
        response = await console.post(
            f"/console/deliveries/{delivery_id}/retry", csrf=csrf, back=back
        )
        assert response.headers["location"] == "/console/endpoints"


async def test_the_gallery_filters_by_status_and_metadata_a_page_at_a_time(
    console: Console, pool: Pool, tenant: Tenant
) -> None:
    fox = await create_job(tenant, "fox", metadata={"order_id": "A-1", "team": "red"})
    owl = await create_job(tenant, "owl", metadata={"order_id": "A-2", "team": "red"})
    await create_job(tenant, "cat")
    url = "https://files.example/fox.png"
    await pool.execute(
        "UPDATE jobs SET status = 'succeeded', output = $2 WHERE id = $1",
        job_uuid(fox["id"]),
        {"images": [{"url": url, "width": 1024, "height": 1024}]},
    )

    def shown(page: str) -> set[str]:
        return {job for job in (fox["id"], owl["id"]) if f'href="/console/jobs/{job}"' in page}

    async def gallery(**params: str) -> str:
        return is_html(await console.http.get("/console/jobs", params=params), 200)

    assert shown(await gallery(q="team:red")) == {fox["id"], owl["id"]}
    assert shown(await gallery(q='order_id:"A-2"')) == {owl["id"]}
    assert shown(await gallery(q="team:red", status="succeeded")) == {fox["id"]}
    assert shown(await gallery(q="team:blue")) == set()
    page = await gallery(q="team:red order_id:A-1")
    assert f'<img src="{url}"' in page
    assert "Search by metadata as key:value" in await gallery(q="just words")
    jump = await console.http.get("/console/jobs", params={"q": owl["id"]})
    assert jump.headers["location"] == f"/console/jobs/{owl['id']}"

    # Keyset pages: the 24 newest, then an "Older" link to the rest, none twice.
    for i in range(24):
        await create_job(tenant, f"filler {i}", metadata={"batch": "b"})
    first = await gallery()
    assert shown(first) == set()
    cursor = first.split('rel="next" href="')[1].split('"')[0].replace("&amp;", "&")
    second = is_html(await console.http.get(cursor), 200)
    assert shown(second) == {fox["id"], owl["id"]}


async def test_the_endpoint_actions(console: Console, pool: Pool, tenant: Tenant) -> None:
    endpoint = await create_endpoint(tenant)
    path = f"/console/endpoints/{endpoint['id']}"
    csrf = await console.csrf(path)

    # Rotate: the new secret is on the page once, and signs from now on (the old one too).
    rotated = is_html(await console.post(f"{path}/rotate-secret", csrf=csrf), 200)
    secrets = await secrets_of(pool, endpoint)
    assert secrets[0]["secret"] == endpoint["secret"]
    new = secrets[-1]["secret"]
    assert new != endpoint["secret"]
    assert new in rotated
    assert new not in is_html(await console.http.get(path), 200)

    # Test event: a ping delivery queued for this endpoint.
    response = await console.post(f"{path}/test", csrf=csrf)
    assert response.headers["location"] == path
    pings = await pool.fetch(
        "SELECT ev.type FROM deliveries d JOIN events ev ON ev.id = d.event_id "
        "WHERE d.endpoint_id = $1",
        _uuid("ep", endpoint["id"]),
    )
    assert [row["type"] for row in pings] == ["ping"]
    assert "A ping event is on its way" in is_html(await console.http.get(path), 200)

    # Recover: failed deliveries of the window are queued again.
    await fail_deliveries(pool, "endpoint_id = $1", _uuid("ep", endpoint["id"]))
    await console.post(f"{path}/recover", csrf=csrf, hours="1")
    assert "1 failed delivery from the last hour sent again." in is_html(
        await console.http.get(path), 200
    )
    status = await pool.fetchval(
        "SELECT status FROM deliveries WHERE endpoint_id = $1", _uuid("ep", endpoint["id"])
    )
    assert status == "pending"

    # Disable, then enable.
    await console.post(f"{path}/enabled", csrf=csrf, enabled="false")
    assert not (await tenant.http.get(f"/v1/webhook-endpoints/{endpoint['id']}")).json()["enabled"]
    await console.post(f"{path}/enabled", csrf=csrf, enabled="true")
    assert (await tenant.http.get(f"/v1/webhook-endpoints/{endpoint['id']}")).json()["enabled"]


async def test_cancel_from_the_job_page(console: Console, tenant: Tenant) -> None:
    job = await create_job(tenant)
    path = f"/console/jobs/{job['id']}"
    csrf = await console.csrf(path)
    await console.post(f"{path}/cancel", csrf=csrf)
    assert (await tenant.http.get(f"/v1/jobs/{job['id']}")).json()["status"] == "canceled"
    await console.post(f"{path}/cancel", csrf=csrf)
    assert "is already canceled" in is_html(await console.http.get(path), 200)


async def test_log_out(console: Console) -> None:
    response = await console.post("/console/logout", csrf=await console.csrf())
    assert response.headers["location"] == "/console/login"
    assert (await console.http.get("/console/jobs")).status_code == 303


async def test_the_console_is_not_in_the_api_document_and_serves_its_stylesheet(
    app: FastAPI, visitor: Console
) -> None:
    assert not [path for path in app.openapi()["paths"] if path.startswith("/console")]
    login = is_html(await visitor.http.get("/console/login"), 200)
    stylesheet = login.split('rel="stylesheet" href="')[1].split('"')[0]
    response = await visitor.http.get(stylesheet)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")
    assert b".gallery" in response.content
