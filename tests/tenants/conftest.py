"""Clients of an API with private webhook URLs allowed, so that their endpoints point at
loopback only (a test ping is queued for a worker; none runs on this database, and loopback is
all it could ever reach)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI

from app.db.pool import Pool
from app.main import create_app
from app.settings import Settings
from tests.conftest import make_tenant
from tests.support import Tenant

# Port 9 (discard) on loopback: never a receiver, never off the machine.
ENDPOINT_URL = "http://127.0.0.1:9/hooks"


@pytest.fixture(scope="session")
async def tenants_app(database_url: str) -> AsyncIterator[FastAPI]:
    settings = Settings(
        database_url=database_url, api_key_cache_seconds=30, allow_private_webhook_urls=True
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client_a(tenants_app: FastAPI, pool: Pool) -> AsyncIterator[Tenant]:
    async for value in make_tenant(tenants_app, pool, "tenant-a"):
        yield value


@pytest.fixture
async def client_b(tenants_app: FastAPI, pool: Pool) -> AsyncIterator[Tenant]:
    async for value in make_tenant(tenants_app, pool, "tenant-b"):
        yield value
