"""The settings every pooled connection runs with."""

from __future__ import annotations

from app.db.pool import Pool


async def test_pooled_connections_never_jit_compile(pool: Pool) -> None:
    # Set per connection, whatever the server's own default (on, in Postgres's): see
    # app.db.pool.create_pool for what a compilation costs a claim.
    async with pool.acquire() as conn:
        assert await conn.fetchval("SHOW jit") == "off"
        assert await conn.fetchval("SHOW application_name") == "falrelay"
