"""Claiming due jobs: for submission to fal, for reconciliation with fal, for copying their
outputs. Each claim is one statement in its own transaction (for submissions, a function that
takes the claims' lock, then claims): the rows are leased (locked_until) and committed before
any HTTP call starts, so no lock or transaction is held across a call. The worker's loops call
these (app.worker.runner).

A lease that runs out (its worker died) makes the row claimable again by anyone.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from app.db.pool import Pool

# Submission claims take turns on a lock (transaction-scoped, so a crash cannot leave it held):
# count what is in flight, pick, lease, commit. Serialised, the account-wide cap is exact across
# replicas. A claim takes a few milliseconds (p50 6-8 ms with 10,000 jobs queued for one client
# and 10 for another, on a loaded 2-core machine), against a slot's turnover of seconds. The
# key is written into the function (migration 0023); a test holds it here and sees the claim
# wait.
_SUBMISSION_LOCK = 0x66616C7273756221

# The lock and the claim are one function (migration 0023, where the statement and how it
# picks are explained; 0024 reads each client's due jobs only up to the free slots): one round
# trip. Fair share between clients by weight, each client's cap and the account's; the leased
# rows, with `held_back` on each and on a row of its own when none was leased (its columns
# NULL): whether due jobs may have been left for want of a slot at fal. A job that leaves fal
# wakes the submission loop only then (app.db.wakeup.FREED).
# $1 slots this worker has, $2 lease seconds, $3 the account-wide cap, $4 the default
# per-client cap (NULL: none for either), $5 fair share.
_CLAIM_SUBMISSIONS = "SELECT * FROM claim_submissions($1, $2, $3, $4, $5)"

_CLAIM_RECONCILIATIONS = """
UPDATE jobs
SET locked_until = now() + make_interval(secs => $2), polls = polls + 1
WHERE id IN (
    SELECT id FROM jobs
    WHERE status IN ('submitted', 'running') AND next_attempt_at <= now()
      AND (locked_until IS NULL OR locked_until <= now())
      AND output IS NULL  -- fal has answered the others: their files are being copied
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED)
RETURNING id, client_id, status, fal_request_id, fal_status_url, fal_response_url,
          fal_cancel_url, submitted_at, polls, trace_context
"""

# Owned outputs (app.outputs): jobs whose output arrived and awaits its copy, and succeeded
# jobs whose failed copies are due again. Leased like the other claims; a retry's lease is
# its own `mirror_retry_at` pushed forward.
_CLAIM_MIRRORS = """
UPDATE jobs
SET locked_until = now() + make_interval(secs => $2)
WHERE id IN (
    SELECT id FROM jobs
    WHERE status IN ('submitted', 'running') AND output IS NOT NULL
      AND next_attempt_at <= now() AND (locked_until IS NULL OR locked_until <= now())
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED)
RETURNING id, client_id, model, status, output, files, billable_units, trace_context
"""

_CLAIM_MIRROR_RETRIES = """
UPDATE jobs
SET mirror_retry_at = now() + make_interval(secs => $2)
WHERE id IN (
    SELECT id FROM jobs
    WHERE mirror_retry_at <= now()
    ORDER BY mirror_retry_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED)
RETURNING id, client_id, model, status, output, files, billable_units, trace_context
"""


@dataclass(frozen=True, slots=True)
class SubmissionClaim:
    rows: list[asyncpg.Record]
    # Due jobs may have been left for want of a slot at fal (see _CLAIM_SUBMISSIONS).
    held_back: bool


async def claim_submissions(
    pool: Pool,
    limit: int,
    lease: float,
    *,
    max_in_flight: int | None = None,
    default_client_max_in_flight: int | None = None,
    fair_share: bool = True,
) -> SubmissionClaim:
    """Lease up to `limit` due jobs, within the account-wide `max_in_flight` and each client's
    own cap (None: no cap), by fair share between clients (or first due first, with
    `fair_share` off)."""
    rows = await pool.fetch(
        _CLAIM_SUBMISSIONS, limit, lease, max_in_flight, default_client_max_in_flight, fair_share
    )
    return SubmissionClaim(
        rows=[row for row in rows if row["id"] is not None], held_back=rows[0]["held_back"]
    )


async def claim_reconciliations(pool: Pool, limit: int, lease: float) -> list[asyncpg.Record]:
    return await pool.fetch(_CLAIM_RECONCILIATIONS, limit, lease)


async def claim_mirrors(pool: Pool, limit: int, lease: float) -> list[asyncpg.Record]:
    """Jobs to copy the files of: new outputs first, then failed copies due again."""
    rows = await pool.fetch(_CLAIM_MIRRORS, limit, lease)
    if len(rows) < limit:
        rows += await pool.fetch(_CLAIM_MIRROR_RETRIES, limit - len(rows), lease)
    return rows
