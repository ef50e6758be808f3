"""Console sessions: the cookie is an opaque token whose SHA-256 is a row in Postgres, bound to
the API key that started it. Logging out, expiry and revoking the key each end it, and the
cookie never works as a key on /v1."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
from fastapi import FastAPI

from app.auth import keys
from app.auth import service as auth_service
from app.console import session
from app.db.pool import Pool
from app.settings import Settings
from tests.console.conftest import Console
from tests.support import Tenant, assert_problem, http_client

COOKIE = "falrelay_console"


def token_of(response: httpx.Response) -> str:
    """The session cookie's value, as the browser received it."""
    assert response.status_code == 303, response.text
    cookie = response.headers["set-cookie"]
    name, _, rest = cookie.partition("=")
    assert name == COOKIE, cookie
    return rest.split(";")[0]


def replay(http: httpx.AsyncClient, token: str) -> None:
    """The cookie as someone who copied it would send it."""
    http.cookies.set(COOKIE, token, domain="falrelay.test", path="/console")


async def stored(pool: Pool, token: str) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "SELECT s.id, s.api_key_id, s.expires_at, s.created_at, k.key_hash, k.client_id"
        " FROM console_sessions s JOIN api_keys k ON k.id = s.api_key_id"
        " WHERE s.token_hash = $1",
        hashlib.sha256(token.encode()).digest(),
    )


async def sessions_of(pool: Pool, key: str) -> int:
    value: int = await pool.fetchval(
        "SELECT count(*) FROM console_sessions s JOIN api_keys k ON k.id = s.api_key_id"
        " WHERE k.key_hash = $1",
        keys.hash_key(key),
    )
    return value


async def signed_in(http: httpx.AsyncClient, key: str) -> str:
    token = token_of(await Console(http).log_in(key))
    assert (await http.get("/console/jobs")).status_code == 200
    return token


async def test_login_stores_a_hashed_session_bound_to_the_key_not_the_key(
    app: FastAPI, pool: Pool, tenant: Tenant
) -> None:
    async with http_client(app) as http:
        before = datetime.now(UTC)
        token = await signed_in(http, tenant.key)
    assert token != tenant.key
    assert tenant.key not in token
    assert len(token) >= 43  # 256 random bits
    row = await stored(pool, token)
    assert row is not None
    assert row["key_hash"] == keys.hash_key(tenant.key)
    assert row["client_id"] == tenant.client_id
    expected = before + timedelta(seconds=session.SESSION_MAX_AGE)
    assert abs(row["expires_at"] - expected) < timedelta(minutes=1)
    # Neither the token nor the key is stored as such anywhere in the row.
    values = [v for v in dict(row).values() if isinstance(v, bytes | str)]
    assert token.encode() not in values
    assert tenant.key.encode() not in values

    # Two logins with the same key are two sessions, each with its own form token.
    async with http_client(app) as other:
        second = await signed_in(other, tenant.key)
        assert second != token
        assert await sessions_of(pool, tenant.key) == 2
        assert session.csrf_token(second) != session.csrf_token(token)
        assert await Console(other).csrf() == session.csrf_token(second)
        # One session's form token is refused with another's cookie.
        response = await other.post("/console/logout", data={"csrf": session.csrf_token(token)})
        assert response.status_code == 403
        assert await stored(pool, second) is not None


async def test_the_cookie_is_no_key_on_the_api(app: FastAPI, tenant: Tenant) -> None:
    async with http_client(app) as http:
        token = await signed_in(http, tenant.key)
    async with http_client(app, token) as copied:
        assert_problem(await copied.get("/v1/jobs"), 401)
        assert_problem(await copied.post("/v1/jobs", json={"input": {"prompt": "x"}}), 401)
    # The key itself still is one.
    assert (await tenant.http.get("/v1/jobs")).status_code == 200


async def test_logging_out_deletes_the_session_and_the_cookie_stops_working(
    app: FastAPI, pool: Pool, tenant: Tenant
) -> None:
    async with http_client(app) as http:
        token = await signed_in(http, tenant.key)
        csrf = await Console(http).csrf()
        response = await http.post("/console/logout", data={"csrf": csrf})
        assert (response.status_code, response.headers["location"]) == (303, "/console/login")
        assert response.headers["set-cookie"].startswith(f'{COOKIE}="";')
    assert await stored(pool, token) is None
    # A copy of the cookie taken before the logout is worth nothing after it.
    async with http_client(app) as copied:
        replay(copied, token)
        response = await copied.get("/console/jobs")
        assert response.headers["location"] == "/console/login?next=%2Fconsole%2Fjobs"
        response = await copied.post("/console/logout", data={"csrf": csrf})
        assert (response.status_code, response.headers["location"]) == (303, "/console/login")


async def test_revoking_the_key_ends_its_sessions_at_once(
    app: FastAPI, pool: Pool, settings: Settings, tenant: Tenant
) -> None:
    # The API remembers good keys for a while; the console must not.
    assert settings.api_key_cache_seconds >= 30
    async with http_client(app) as http:
        token = await signed_in(http, tenant.key)
        assert await auth_service.revoke_key(pool, tenant.key)
        response = await http.get("/console/endpoints")
        assert response.headers["location"] == "/console/login?next=%2Fconsole%2Fendpoints"
    async with http_client(app) as copied:
        replay(copied, token)
        assert (await copied.get("/console/jobs")).status_code == 303
        # And the revoked key starts no new session, whatever the key cache still believes.
        response = await Console(copied).log_in(tenant.key)
        assert response.status_code == 401
        assert "set-cookie" not in response.headers
    assert await sessions_of(pool, tenant.key) == 1  # refused, and gone at its expiry


async def test_an_expired_session_is_refused_and_deleted_by_a_later_login(
    app: FastAPI, pool: Pool, tenant: Tenant, other_tenant: Tenant
) -> None:
    async with http_client(app) as http:
        token = await signed_in(http, tenant.key)
        row = await stored(pool, token)
        assert row is not None
        await pool.execute(
            "UPDATE console_sessions SET expires_at = now() - interval '1 second' WHERE id = $1",
            row["id"],
        )
        response = await http.get("/console/jobs")
        assert response.headers["location"] == "/console/login?next=%2Fconsole%2Fjobs"
    assert await stored(pool, token) is not None  # refused, not yet deleted
    # Anyone's next login tidies it away.
    async with http_client(app) as other:
        await signed_in(other, other_tenant.key)
    assert await stored(pool, token) is None


async def test_deleting_a_key_deletes_its_sessions(
    app: FastAPI, pool: Pool, tenant: Tenant
) -> None:
    async with http_client(app) as http:
        token = await signed_in(http, tenant.key)
    await pool.execute("DELETE FROM api_keys WHERE key_hash = $1", keys.hash_key(tenant.key))
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM console_sessions WHERE token_hash = $1",
            hashlib.sha256(token.encode()).digest(),
        )
        == 0
    )
