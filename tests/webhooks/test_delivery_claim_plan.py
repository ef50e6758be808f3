"""The delivery claim runs on a plan made once per connection (migration 0026): a plan made while
the queue was empty must still read a full one by its indexes, not scan every delivery."""

from __future__ import annotations

from typing import Any

from app import ids
from app.auth.service import create_client
from app.db.pool import Pool, create_pool
from app.webhooks import queue, repository, signing

PUBLIC_URL = "https://93.184.215.14/hooks/falrelay"  # never sent to: no worker runs here

PENDING = """
WITH ev AS (
    INSERT INTO events (id, client_id, job_id, type, payload, created_at)
    SELECT uuid7(), $1, NULL, 'job.succeeded', '{"type": "job.succeeded"}'::jsonb, now()
    FROM generate_series(1, $2)
    RETURNING id
)
INSERT INTO deliveries (id, client_id, event_id, job_id, endpoint_id, url, next_attempt_at)
SELECT uuid7(), $1, ev.id, NULL, $3, NULL, now() - interval '1 minute' FROM ev
"""


async def _sequential_scans(pool: Pool) -> Any:
    # Statistics reach the shared counters when a session flushes them: force it for what this
    # connection has done (the pool has one), then read them afresh.
    await pool.execute("SELECT pg_stat_force_next_flush()")
    await pool.execute("SELECT 1")
    await pool.execute("SELECT pg_stat_clear_snapshot()")
    return await pool.fetchval(
        "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'deliveries'"
    )


async def _claim(pool: Pool) -> queue.DeliveryClaim:
    return await queue.claim_deliveries(pool, 16, 60.0, [], in_flight={}, capacity=128, reserve=32)


async def test_a_claim_planned_on_an_empty_queue_reads_a_full_one_by_index(
    fresh_database_url: str,
) -> None:
    pool = await create_pool(fresh_database_url, min_size=1, max_size=1)
    try:
        client_id, _ = await create_client(pool, "claims")
        endpoint = await repository.insert_endpoint(
            pool,
            endpoint_id=ids.uuid7(),
            client_id=client_id,
            url=PUBLIC_URL,
            description=None,
            event_types=["job.succeeded"],
            secret=signing.new_secret(),
        )
        assert endpoint is not None
        # The statistics of an empty queue (a new deployment, or one vacuumed after a quiet
        # spell), and the claim's plan made with them on this connection.
        await pool.execute("VACUUM ANALYZE deliveries")
        assert (await _claim(pool)).rows == []

        await pool.execute(PENDING, client_id, 3_000, endpoint["id"])
        scans = await _sequential_scans(pool)
        claimed = await _claim(pool)
        assert await _sequential_scans(pool) == scans

        assert len(claimed.rows) == 16
        leased = await pool.fetchval(
            "SELECT count(*) FROM deliveries WHERE locked_until > now() AND attempt_count = 1"
        )
        assert leased == 16
    finally:
        await pool.close()
