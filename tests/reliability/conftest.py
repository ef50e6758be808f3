"""Fixtures of the fault, outage, fuzzing and security suites."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest

from app.db.migrate import upgrade_to_head
from tests.reliability.postgres import DisposablePostgres


@pytest.fixture
def own_postgres() -> Iterator[DisposablePostgres]:
    """A Postgres server this test alone uses, so it may stop and crash it."""
    with DisposablePostgres() as server:
        yield server


@pytest.fixture
async def own_database_url(own_postgres: DisposablePostgres) -> str:
    """A migrated database on the test's own server."""
    conn = await asyncpg.connect(own_postgres.dsn())
    try:
        await conn.execute('CREATE DATABASE "falrelay"')
    finally:
        await conn.close()
    url = own_postgres.url("falrelay")
    await asyncio.to_thread(upgrade_to_head, url)
    return url
