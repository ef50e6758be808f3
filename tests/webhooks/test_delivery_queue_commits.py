"""The delivery queue's statements (app.webhooks.queue) commit asynchronously: leases, hand-backs
and results do not wait for their WAL to reach the disk. Counted by Postgres itself
(`pg_stat_wal.wal_sync`), on a database of this test's own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.auth.service import create_client
from app.db.pool import Pool, create_pool
from app.webhooks import queue
from tests.webhooks.test_delivery_claim import PENDING, PUBLIC_URL, record_answered

ROUNDS = 20


@pytest.fixture
async def pool(fresh_database_url: str) -> AsyncIterator[Pool]:
    pool = await create_pool(fresh_database_url, min_size=1, max_size=1)
    yield pool
    await pool.close()


async def _wal_syncs(pool: Pool) -> int:
    # This session's counters reach the shared ones when it flushes them: force it, then read
    # them afresh.
    await pool.execute("SELECT pg_stat_force_next_flush()")
    await pool.execute("SELECT 1")
    await pool.execute("SELECT pg_stat_clear_snapshot()")
    syncs: int = await pool.fetchval("SELECT wal_sync FROM pg_stat_wal")
    return syncs


async def test_leases_hand_backs_and_results_do_not_wait_for_the_disk(pool: Pool) -> None:
    client_id, _ = await create_client(pool, "async")
    await pool.execute(PENDING, client_id, ROUNDS * 4, PUBLIC_URL, 0.001, 600.0)
    # A synchronous commit of the same connection, for comparison: it flushes every time.
    before = await _wal_syncs(pool)
    for _ in range(ROUNDS):
        await pool.execute("UPDATE clients SET weight = weight WHERE id = $1", client_id)
    synchronous = await _wal_syncs(pool) - before
    assert synchronous >= ROUNDS

    before = await _wal_syncs(pool)
    for _ in range(ROUNDS):
        claimed = await queue.claim_deliveries(
            pool, 4, 60.0, [], in_flight={}, capacity=8, reserve=0, fair_share=False
        )
        assert len(claimed.rows) == 4
        await queue.release_deliveries(pool, claimed.rows[:1])
        await record_answered(pool, claimed.rows[1:])
    asynchronous = await _wal_syncs(pool) - before
    # 60 commits, each of which would have flushed; what flushes now is Postgres's WAL writer,
    # on its own schedule (by default every 200 ms while there is WAL to flush).
    assert asynchronous <= ROUNDS, asynchronous

    # Committed all the same: 20 handed back, 60 succeeded with their attempts logged.
    counts = dict(await pool.fetch("SELECT status, count(*) FROM deliveries GROUP BY status"))
    assert counts == {"pending": ROUNDS, "succeeded": ROUNDS * 3}
    assert await pool.fetchval("SELECT count(*) FROM delivery_attempts") == ROUNDS * 3
    queued = await pool.fetchrow(
        "SELECT count(*) AS rows, count(locked_until) AS leased FROM delivery_queue"
    )
    assert (queued["rows"], queued["leased"]) == (ROUNDS, 0)
