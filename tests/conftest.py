"""Test fixtures on a real Postgres.

Where it comes from: `FALRELAY_TEST_DATABASE_URL` (any database on a server we may create
databases on), else an embedded Postgres (pgserver) started for the session, its data on
/dev/shm when that is writable. The schema is migrated once into a template database with
`alembic upgrade head`; tests share one clone of it and isolate themselves by tenant (every
test gets a client of its own, and one client never sees another's rows). Tests that need a
database of their own (migrations, the CLI) clone the template again, which takes milliseconds.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from app.auth import service as auth_service
from app.db import embedded
from app.db.migrate import upgrade_to_head
from app.db.pool import Pool, asyncpg_dsn, create_pool
from app.main import create_app
from app.settings import Settings
from tests.moto import BUCKET, CREDENTIALS, MotoServer
from tests.stack import make_stack
from tests.support import Tenant, http_client

__all__ = ["make_stack"]  # a fixture: the whole product over real HTTP (tests/stack.py)


@dataclass(frozen=True)
class PostgresServer:
    admin_url: str

    def url(self, database: str) -> str:
        url = make_url(self.admin_url).set(drivername="postgresql+asyncpg", database=database)
        return url.render_as_string(hide_password=False)

    async def execute(self, sql: str) -> None:
        conn = await asyncpg.connect(asyncpg_dsn(self.admin_url))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def create_database(self, name: str, template: str | None = None) -> str:
        suffix = f' TEMPLATE "{template}"' if template else ""
        await self.execute(f'CREATE DATABASE "{name}"{suffix}')
        return self.url(name)

    async def drop_database(self, name: str) -> None:
        await self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _scratch_dir() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    external = os.environ.get("FALRELAY_TEST_DATABASE_URL")
    if external:
        yield PostgresServer(admin_url=external)
        return
    with tempfile.TemporaryDirectory(prefix="falrelay-tests-", dir=_scratch_dir()) as tmp:
        server = embedded.start(Path(tmp) / "pgdata", cleanup_mode="delete")
        try:
            yield PostgresServer(admin_url=server.url("postgres"))
        finally:
            server.stop()


@pytest.fixture(scope="session")
async def template_database(postgres: PostgresServer) -> AsyncIterator[str]:
    name = f"falrelay_tmpl_{os.getpid()}_{secrets.token_hex(3)}"
    url = await postgres.create_database(name)
    await asyncio.to_thread(upgrade_to_head, url)
    yield name
    await postgres.drop_database(name)


@pytest.fixture(scope="session")
async def database_url(postgres: PostgresServer, template_database: str) -> AsyncIterator[str]:
    name = f"falrelay_test_{os.getpid()}_{secrets.token_hex(3)}"
    url = await postgres.create_database(name, template=template_database)
    yield url
    await postgres.drop_database(name)


@pytest.fixture
async def fresh_database_url(
    postgres: PostgresServer, template_database: str
) -> AsyncIterator[str]:
    """A migrated database of the test's own, for committed-state and global-state tests."""
    name = f"falrelay_t_{secrets.token_hex(6)}"
    url = await postgres.create_database(name, template=template_database)
    yield url
    await postgres.drop_database(name)


@pytest.fixture(scope="session")
async def pool(database_url: str) -> AsyncIterator[Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=10)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, api_key_cache_seconds=30)


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


async def make_tenant(app: FastAPI, pool: Pool, name: str = "tenant") -> AsyncIterator[Tenant]:
    client_id, key = await auth_service.create_client(pool, name)
    async with http_client(app, key) as http:
        yield Tenant(client_id, key, http)


@pytest.fixture
async def tenant(app: FastAPI, pool: Pool) -> AsyncIterator[Tenant]:
    async for value in make_tenant(app, pool, "tenant-a"):
        yield value


@pytest.fixture
async def other_tenant(app: FastAPI, pool: Pool) -> AsyncIterator[Tenant]:
    async for value in make_tenant(app, pool, "tenant-b"):
        yield value


@pytest.fixture
async def anonymous(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(app) as http:
        yield http


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """An S3-compatible server (moto_server) on loopback for the session, with one bucket."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in CREDENTIALS.items():
            env.setenv(name, value)
        with MotoServer() as server:
            server.create_bucket(BUCKET)
            yield server
