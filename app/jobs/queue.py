"""Claiming due jobs: for submission to fal, for reconciliation with fal, for copying their
outputs. Each claim is one short transaction (one statement, or for submissions an advisory
lock and one statement): the rows are leased (locked_until) and committed before any HTTP call
starts, so no lock or transaction is held across a call. The worker's loops call these
(app.worker.runner).

A lease that runs out (its worker died) makes the row claimable again by anyone.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import asyncpg

from app.db.pool import Pool

# Submission claims take turns on this lock (transaction-scoped, so a crash cannot leave it
# held): count what is in flight, pick, lease, commit. Serialised, the account-wide cap is exact
# across replicas. A claim takes a few milliseconds (p50 6-8 ms with 10,000 jobs queued for one
# client and 10 for another, on a loaded 2-core machine), against a slot's turnover of seconds.
_SUBMISSION_LOCK = 0x66616C7273756221

# In flight: jobs at fal, and queued jobs leased for submission (being sent now, or held after
# an ambiguous submit that fal may have taken).
#
# Picking is water-filling by weight, exact, in one statement: each client's due jobs are ranked
# r = 1, 2, ... in its own order (priority, then due time), and a job's key is (n + r) / weight,
# n being what the client has in flight: taking the smallest keys is giving each next slot to
# the client with the fewest in flight for its weight. Jobs beyond a client's cap (n + r > cap)
# are skipped. Only each client's first $1 due jobs are read (LATERAL ... LIMIT on
# ix_jobs_client_submission_due), so a client with 10,000 queued costs what one with $1 does.
# With $5 false (fair share off) the order is the old one: first due, first sent, across clients.
#
# $1 slots this worker has, $2 lease seconds, $3 the account-wide cap, $4 the default per-client
# cap (NULL: none for either; LEAST ignores a NULL), $5 fair share.
#
# With the leased rows comes `held_back`, on each and on a row of its own when none was leased
# (its columns NULL): whether due jobs may have been left for want of a slot at fal, the
# account's (it left fewer slots than the worker had, and the claim took them all) or a
# client's (one at its cap, or ranked past it). It may say so when nothing more was due (at
# the account's cap, or a client at its own: counting what is due there would read their
# queues); it never misses it. A job that leaves fal wakes the submission loop only then
# (app.db.wakeup.FREED).
_CLAIM_SUBMISSIONS = """
WITH flight AS (
    SELECT client_id, count(*) AS n FROM (
        SELECT client_id FROM jobs WHERE status IN ('submitted', 'running')
        UNION ALL
        SELECT client_id FROM jobs
        WHERE status = 'queued' AND locked_until IS NOT NULL AND locked_until > now()
    ) AS f
    GROUP BY client_id
),
free AS (
    SELECT GREATEST(0, LEAST($1::int, $3::int - COALESCE((SELECT sum(n) FROM flight), 0)))::int
        AS slots
),
tenants AS (
    SELECT c.id, c.weight, COALESCE(c.max_in_flight, $4::int) AS cap, COALESCE(f.n, 0) AS n
    FROM clients c LEFT JOIN flight f ON f.client_id = c.id
    WHERE (SELECT slots FROM free) > 0
),
ranked AS (
    SELECT j.id, j.next_attempt_at, t.n, t.weight, t.cap,
           row_number() OVER (PARTITION BY t.id ORDER BY j.priority, j.next_attempt_at, j.id)
               AS r
    FROM tenants t
    CROSS JOIN LATERAL (
        SELECT id, priority, next_attempt_at FROM jobs
        WHERE client_id = t.id AND status = 'queued' AND next_attempt_at <= now()
          AND (locked_until IS NULL OR locked_until <= now())
        ORDER BY priority, next_attempt_at
        LIMIT $1
    ) AS j
    WHERE t.cap IS NULL OR t.n < t.cap
),
picked AS (
    SELECT id FROM ranked
    WHERE cap IS NULL OR n + r <= cap
    ORDER BY CASE WHEN $5::bool THEN (n + r)::float8 / weight END, next_attempt_at, id
    LIMIT (SELECT slots FROM free)
),
held AS (
    SELECT ((SELECT slots FROM free) < $1::int
            AND (SELECT count(*) FROM picked) = (SELECT slots FROM free))
        OR EXISTS (SELECT FROM clients c LEFT JOIN flight f ON f.client_id = c.id
                   WHERE COALESCE(c.max_in_flight, $4::int) <= COALESCE(f.n, 0))
        OR EXISTS (SELECT FROM ranked WHERE n + r > cap) AS held_back
),
claimed AS (
    UPDATE jobs
    SET locked_until = now() + make_interval(secs => $2), attempts = attempts + 1
    -- = ANY(ARRAY(...)), not IN (SELECT ...): the planner guesses a hundred-odd picks and
    -- hash-joins every queued row against them (measured: 5 ms with 10,000 queued); by primary
    -- key it costs nothing. The status as a subquery: as a literal it matches the partial
    -- index of queued jobs, which the planner then reads whole to filter the picks from it.
    WHERE id = ANY(ARRAY(SELECT id FROM picked)) AND status = (SELECT 'queued'::text)
      AND (locked_until IS NULL OR locked_until <= now())
    RETURNING id, model, input, attempts, priority, start_timeout, trace_context
)
SELECT c.*, held.held_back FROM held LEFT JOIN claimed c ON true
"""

# The claim's transaction up to the lock, in one round trip: without parameters (the lock's key
# is a constant), a string of statements goes as one simple query, each run in turn. The lock
# is still a statement of its own: the claim's snapshot must be taken after it is held, or it
# would miss the leases of the claim that held it last.
# Bitmap scans are off for the claim's planning: the count of what is in flight reads partial
# indexes whose entries die as jobs leave fal, until the next vacuum. An index scan marks a dead
# entry as it meets it and skips it from then on; a bitmap scan never does, and visits the heap
# page of each one on every claim (measured in the end-to-end benchmark, where the planner
# chose one: 1,184 buffers a claim, 1.78 ms, against 117 buffers and 0.40 ms).
# Every replica queues on this lock, so no session may keep it long: one whose host vanished
# mid-claim (no FIN, no RST) is ended by Postgres after a few seconds idle in its transaction,
# not after TCP keepalive's hours, and a claim waits at most as long (then fails, and its loop
# tries again).
_CLAIM_SUBMISSIONS_BEGIN = f"""
BEGIN;
SELECT set_config('idle_in_transaction_session_timeout', '5s', true),
       set_config('lock_timeout', '5s', true),
       set_config('enable_bitmapscan', 'off', true);
SELECT pg_advisory_xact_lock({_SUBMISSION_LOCK});
"""

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
    async with pool.acquire() as conn:
        try:
            await conn.execute(_CLAIM_SUBMISSIONS_BEGIN)
            rows = await conn.fetch(
                _CLAIM_SUBMISSIONS,
                limit,
                lease,
                max_in_flight,
                default_client_max_in_flight,
                fair_share,
            )
            await conn.execute("COMMIT")
        except BaseException:
            # The pool would roll it back too, but it logs that as a leaked transaction.
            if not conn.is_closed() and conn.is_in_transaction():
                with contextlib.suppress(Exception):
                    await conn.execute("ROLLBACK")
            raise
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
