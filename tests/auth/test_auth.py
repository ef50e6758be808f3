from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from app.auth import keys, service
from app.auth.service import KeyResolver
from app.db.pool import Pool
from tests.support import Tenant, assert_problem, http_client


def _v1_routes(app: FastAPI) -> list[tuple[str, str]]:
    return sorted(
        (method.upper(), path.replace("{job_id}", "job_" + "0" * 32))
        for path, path_item in app.openapi()["paths"].items()
        if path.startswith("/v1")
        for method in path_item
    )


def test_every_v1_route_is_listed(app: FastAPI) -> None:
    assert len(_v1_routes(app)) >= 5


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Basic Zm9vOmJhcg==", "Bearer frk_not-a-real-key", "frk_x"],
)
async def test_every_v1_route_refuses_a_missing_or_bad_key(
    app: FastAPI, pool: Pool, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    before = await pool.fetchval("SELECT count(*) FROM jobs")
    async with http_client(app) as http:
        for method, path in _v1_routes(app):
            response = await http.request(
                method, path, headers=headers, json={"input": {"prompt": "p"}}
            )
            assert_problem(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"
    assert await pool.fetchval("SELECT count(*) FROM jobs") == before


async def test_keys_are_stored_only_as_hashes(tenant: Tenant, pool: Pool) -> None:
    row = await pool.fetchrow(
        "SELECT key_hash, prefix FROM api_keys WHERE client_id = $1", tenant.client_id
    )
    assert row is not None
    assert row["key_hash"] == keys.hash_key(tenant.key)
    assert row["prefix"] == tenant.key[:12]
    assert tenant.key.startswith("frk_")
    assert len(tenant.key) > 40
    dumped = await pool.fetchval(
        "SELECT string_agg(t::text, ',') FROM api_keys t WHERE client_id = $1", tenant.client_id
    )
    assert tenant.key not in dumped
    assert tenant.key[12:] not in dumped


async def test_a_revoked_key_stops_working_once_the_cache_lets_go(pool: Pool) -> None:
    client_id, key = await service.create_client(pool, "revokee")
    cached = KeyResolver(pool, ttl=3600)
    uncached = KeyResolver(pool, ttl=0)
    assert (await cached.resolve(key)) == service.Principal(client_id)
    assert (await uncached.resolve(key)) == service.Principal(client_id)

    assert await service.revoke_key(pool, key)

    assert await uncached.resolve(key) is None
    # The documented price of the cache: a revoked key lives on until its entry expires.
    assert (await cached.resolve(key)) == service.Principal(client_id)
    assert not await service.revoke_key(pool, key)


async def test_a_second_key_of_one_client_sees_the_same_jobs(
    app: FastAPI, tenant: Tenant, pool: Pool
) -> None:
    created = (await tenant.http.post("/v1/jobs", json={"input": {"prompt": "p"}})).json()
    second = await service.create_key(pool, tenant.client_id)
    async with http_client(app, second) as http:
        response = await http.get(f"/v1/jobs/{created['id']}")
    assert response.status_code == 200


async def test_unknown_routes_and_methods_are_problems(anonymous: httpx.AsyncClient) -> None:
    assert_problem(await anonymous.get("/v2/nothing"), 404, "not-found")
    assert_problem(await anonymous.delete("/healthz"), 405, "method-not-allowed")
