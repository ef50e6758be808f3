"""Claiming due work. Each claim is one autocommit statement: the rows are leased (locked_until)
and committed before any HTTP call starts, so no lock or transaction is held across a call.

A lease that runs out (its worker died) makes the row claimable again by anyone.
"""

from __future__ import annotations

import asyncpg

from app.db.pool import Pool

CLAIM_SUBMISSIONS = """
UPDATE jobs
SET locked_until = now() + make_interval(secs => $2), attempts = attempts + 1
WHERE id IN (
    SELECT id FROM jobs
    WHERE status = 'queued' AND next_attempt_at <= now()
      AND (locked_until IS NULL OR locked_until <= now())
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED)
RETURNING id, model, input, attempts
"""

CLAIM_RECONCILIATIONS = """
UPDATE jobs
SET locked_until = now() + make_interval(secs => $2), polls = polls + 1
WHERE id IN (
    SELECT id FROM jobs
    WHERE status IN ('submitted', 'running') AND next_attempt_at <= now()
      AND (locked_until IS NULL OR locked_until <= now())
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED)
RETURNING id, client_id, status, fal_request_id, fal_status_url, fal_response_url,
          fal_cancel_url, submitted_at, polls
"""


async def claim_submissions(pool: Pool, limit: int, lease: float) -> list[asyncpg.Record]:
    return await pool.fetch(CLAIM_SUBMISSIONS, limit, lease)


async def claim_reconciliations(pool: Pool, limit: int, lease: float) -> list[asyncpg.Record]:
    return await pool.fetch(CLAIM_RECONCILIATIONS, limit, lease)
