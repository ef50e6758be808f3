"""The submission claim's transaction: no session keeps the claims' lock long, nor waits for
it long, and a claim that gives up leaves its connection clean."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from app.db.pool import Pool, asyncpg_dsn
from app.jobs import queue


async def test_a_claim_waits_for_the_lock_a_few_seconds_then_gives_up_cleanly(
    pool: Pool, database_url: str
) -> None:
    holder = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock($1)", queue._SUBMISSION_LOCK)
            started = time.monotonic()
            with pytest.raises(asyncpg.LockNotAvailableError):
                await asyncio.wait_for(queue.claim_submissions(pool, 8, 30.0), 60)
            waited = time.monotonic() - started
    finally:
        await holder.close()
    assert 4.5 <= waited < 30
    # Every connection went back to the pool out of any transaction: claims work again.
    async with pool.acquire() as conn:
        assert not conn.is_in_transaction()
    assert (await queue.claim_submissions(pool, 0, 30.0)).rows == []
