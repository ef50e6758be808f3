"""The submission claim's transaction: no session keeps the claims' lock long, nor waits for
it long, and a claim that gives up leaves its connection clean."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from app.auth import service as auth_service
from app.db.pool import Pool, asyncpg_dsn, create_pool
from app.jobs import queue
from tests.support import rows_read


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


QUEUED = """
INSERT INTO jobs (id, client_id, model, status, input, request_fingerprint, next_attempt_at)
SELECT uuid7(), $1, 'imagineart/imagineart-2.0-preview/text-to-image', 'queued',
       '{"prompt": "a fox"}', '\\x00', now() - interval '1 minute'
FROM generate_series(1, $2)
"""


@pytest.mark.parametrize(
    ("queued", "analysed"),
    [(0, False), (20, False), (20, True)],
    ids=["never analysed", "small, never analysed", "small"],
)
async def test_a_claim_planned_while_jobs_were_few_leases_by_primary_key_once_they_are_many(
    fresh_database_url: str, queued: int, analysed: bool
) -> None:
    # The claim's statements run on plans made once per connection, by its sixth call at the
    # latest, with the statistics of that moment: here, a new deployment's first claims. The
    # lease's plan made on these tables read a whole index of `jobs` for the picks (by their
    # status, the index's second column) and kept doing so once the queue was full.
    pool = await create_pool(fresh_database_url, min_size=1, max_size=1)
    try:
        client_id, _ = await auth_service.create_client(pool, "claims")
        await pool.execute(QUEUED, client_id, queued)
        if analysed:
            await pool.execute("VACUUM ANALYZE jobs")
        for _ in range(6):
            await queue.claim_submissions(pool, 1, 0.001)
        await pool.execute(QUEUED, client_id, 3_000)
        before = await rows_read(pool, "jobs")
        claimed = await queue.claim_submissions(pool, 16, 60.0)
        read = await rows_read(pool, "jobs") - before
        # The client's first due job, its 16 first read again (up to 16 passed over as leased
        # by the claims above, their leases over), and the 16 leased by primary key: a scan of
        # the queue, or of a whole index, reads 3,000 or more.
        assert read <= 4 * 16 + 2, read
        assert len(claimed.rows) == 16
        leased = await pool.fetchval(
            "SELECT count(*) FROM jobs WHERE status = 'queued' AND locked_until > now()"
        )
        assert leased == 16
    finally:
        await pool.close()
