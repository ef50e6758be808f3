"""A rolling upgrade to the delivery queue (migration 0030): the previous release's processes,
running beside this one, write `deliveries` alone; the queue follows what they write, and
their claim finds nothing, so that this release's workers send every delivery once.

The previous release's statements are written out here as it sent them, on a connection that
does not say it keeps the queue itself (app.db.pool's connections do)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from app.auth.service import create_client
from app.db.pool import Pool, asyncpg_dsn, create_pool
from app.webhooks import queue

URL = "https://93.184.215.14/hooks/previous"  # never sent to: no worker runs here

# The previous release's fan-out of one event to a callback URL.
PREVIOUS_RECORD_EVENT = """
WITH event AS (
    INSERT INTO events (id, client_id, job_id, type, payload, created_at)
    VALUES (uuid7(), $1, NULL, 'job.succeeded', '{"type": "job.succeeded"}', now())
    RETURNING id, client_id, created_at
)
INSERT INTO deliveries (id, client_id, event_id, job_id, endpoint_id, url, next_attempt_at)
SELECT uuid7(), client_id, id, NULL, NULL, $2, created_at FROM event
RETURNING id
"""
# Its result, compare-and-set on the attempt count it leased, and its manual retry.
PREVIOUS_RECORD = """
UPDATE deliveries SET status = $3, attempt_count = $2, locked_until = NULL, updated_at = now()
WHERE id = $1 AND attempt_count = $2 - 1 AND status = 'pending'
"""
PREVIOUS_RETRY = """
UPDATE deliveries SET status = 'pending', next_attempt_at = now(), updated_at = now(),
    locked_until = CASE WHEN locked_until > now() THEN locked_until END
WHERE id = $1
"""
PREVIOUS_CLAIM = "SELECT * FROM claim_deliveries(16, 60, '{}', '{}', '{}', 128, 32, true, false)"


@pytest.fixture
async def pool(fresh_database_url: str) -> AsyncIterator[Pool]:
    pool = await create_pool(fresh_database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


@pytest.fixture
async def previous(fresh_database_url: str) -> AsyncIterator[asyncpg.Connection[Any]]:
    conn = await asyncpg.connect(asyncpg_dsn(fresh_database_url))
    yield conn
    await conn.close()


async def _queued(pool: Pool, delivery_id: uuid.UUID) -> Any:
    return await pool.fetchrow(
        "SELECT q.next_attempt_at = d.next_attempt_at AS due_as_logged, q.attempt_count,"
        " q.locked_until FROM delivery_queue q JOIN deliveries d ON d.id = q.id WHERE q.id = $1",
        delivery_id,
    )


async def _claim(pool: Pool) -> queue.DeliveryClaim:
    return await queue.claim_deliveries(pool, 16, 60.0, [], in_flight={}, capacity=128, reserve=32)


async def test_the_previous_releases_deliveries_are_queued_and_sent_by_this_one(
    pool: Pool, previous: asyncpg.Connection[Any]
) -> None:
    client_id, _ = await create_client(pool, "previous")
    delivery_id = await previous.fetchval(PREVIOUS_RECORD_EVENT, client_id, URL)
    queued = await _queued(pool, delivery_id)
    assert queued is not None
    assert (queued["due_as_logged"], queued["attempt_count"]) == (True, 0)

    # Its workers claim nothing; this release's claim the delivery.
    rows = await previous.fetch(PREVIOUS_CLAIM)
    assert [(row["id"], row["held_back"]) for row in rows] == [(None, False)]
    claimed = await _claim(pool)
    assert [row["id"] for row in claimed.rows] == [delivery_id]


async def test_the_previous_releases_results_and_retries_move_the_queue(
    pool: Pool, previous: asyncpg.Connection[Any]
) -> None:
    client_id, _ = await create_client(pool, "previous")
    delivery_id = await previous.fetchval(PREVIOUS_RECORD_EVENT, client_id, URL)

    # A result it recorded for a lease it held when the upgrade ran: the delivery is done.
    assert await previous.execute(PREVIOUS_RECORD, delivery_id, 1, "succeeded") == "UPDATE 1"
    assert await _queued(pool, delivery_id) is None
    assert (await _claim(pool)).rows == []

    # Retried from one of its API processes: queued again, due now, and sent by this release.
    assert await previous.execute(PREVIOUS_RETRY, delivery_id) == "UPDATE 1"
    queued = await _queued(pool, delivery_id)
    assert queued is not None
    assert (queued["due_as_logged"], queued["attempt_count"]) == (True, 1)
    claimed = await _claim(pool)
    assert [(row["id"], row["attempt_count"]) for row in claimed.rows] == [(delivery_id, 2)]


async def test_this_releases_connections_skip_the_triggers(pool: Pool) -> None:
    # This release queues its deliveries itself (app.webhooks.fanout); a delivery it logs
    # without a queue row (as no statement of its own does) is not queued behind its back.
    client_id, _ = await create_client(pool, "current")
    delivery_id = await pool.fetchval(PREVIOUS_RECORD_EVENT, client_id, URL)
    assert await _queued(pool, delivery_id) is None
    await pool.execute(PREVIOUS_RETRY, delivery_id)
    assert await _queued(pool, delivery_id) is None
