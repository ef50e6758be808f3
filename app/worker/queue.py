"""Claiming due work. Each claim is one short transaction (one statement, or for submissions
an advisory lock and one statement): the rows are leased (locked_until) and committed before any
HTTP call starts, so no lock or transaction is held across a call.

A lease that runs out (its worker died) makes the row claimable again by anyone.
"""

from __future__ import annotations

import uuid

import asyncpg

from app.db.pool import Pool

# Submission claims take turns on this lock (transaction-scoped, so a crash cannot leave it
# held): count what is in flight, pick, lease, commit. Serialised, the account-wide cap is exact
# across replicas. A claim takes a few milliseconds (p50 6-8 ms with 10,000 jobs queued for one
# client and 10 for another, on a loaded 2-core machine), against a slot's turnover of seconds.
SUBMISSION_LOCK = 0x66616C7273756221

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
CLAIM_SUBMISSIONS = """
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
)
UPDATE jobs
SET locked_until = now() + make_interval(secs => $2), attempts = attempts + 1
-- = ANY(ARRAY(...)), not IN (SELECT ...): the planner guesses a hundred-odd picks and
-- hash-joins every queued row against them (measured: 5 ms with 10,000 queued); by primary key
-- it costs nothing.
WHERE id = ANY(ARRAY(SELECT id FROM picked)) AND status = 'queued'
  AND (locked_until IS NULL OR locked_until <= now())
RETURNING id, model, input, attempts, priority, start_timeout, trace_context
"""

CLAIM_SUBMISSIONS_TIMEOUTS = """
SELECT set_config('idle_in_transaction_session_timeout', '5s', true),
       set_config('lock_timeout', '5s', true)
"""

CLAIM_RECONCILIATIONS = """
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
CLAIM_MIRRORS = """
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

CLAIM_MIRROR_RETRIES = """
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


async def claim_submissions(
    pool: Pool,
    limit: int,
    lease: float,
    *,
    max_in_flight: int | None = None,
    default_client_max_in_flight: int | None = None,
    fair_share: bool = True,
) -> list[asyncpg.Record]:
    """Lease up to `limit` due jobs, within the account-wide `max_in_flight` and each client's
    own cap (None: no cap), by fair share between clients (or first due first, with
    `fair_share` off)."""
    async with pool.acquire() as conn, conn.transaction():
        # A statement of its own: the claim's snapshot must be taken after the lock is held, or
        # it would miss the leases of the claim that held it last.
        # Every replica queues on this lock, so no session may keep it long: one whose host
        # vanished mid-claim (no FIN, no RST) is ended by Postgres after a few seconds idle in
        # its transaction, not after TCP keepalive's hours, and a claim waits at most as long
        # (then fails, and its loop tries again).
        await conn.execute(CLAIM_SUBMISSIONS_TIMEOUTS)
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SUBMISSION_LOCK)
        return await conn.fetch(
            CLAIM_SUBMISSIONS,
            limit,
            lease,
            max_in_flight,
            default_client_max_in_flight,
            fair_share,
        )


async def claim_reconciliations(pool: Pool, limit: int, lease: float) -> list[asyncpg.Record]:
    return await pool.fetch(CLAIM_RECONCILIATIONS, limit, lease)


async def claim_mirrors(pool: Pool, limit: int, lease: float) -> list[asyncpg.Record]:
    """Jobs to copy the files of: new outputs first, then failed copies due again."""
    rows = await pool.fetch(CLAIM_MIRRORS, limit, lease)
    if len(rows) < limit:
        rows += await pool.fetch(CLAIM_MIRROR_RETRIES, limit - len(rows), lease)
    return rows


# Deliveries: claimed with everything sending needs (payload, target, secrets) in one round
# trip. Targets already at their concurrency cap in this process are skipped ($3), so one slow
# receiver cannot take every slot.
#
# Fair share between clients, by weight, over this process's slots ($6): each client's due
# deliveries are ranked r = 1, 2, ... by due time, and a delivery's key is (n + r) / weight, n
# being what the client has in flight here ($4, $5): taking the smallest keys gives each next
# slot to the client with the fewest in flight for its weight. A client's share is
# ($6 - $7) * weight / (the weight of every client with deliveries due or in flight); the $7
# slots held back are what a client showing up later finds free at once, even while the others'
# receivers hang (their slots come back only with the delivery timeout). Deliveries beyond a
# client's share are skipped. Only each client's first $1 due deliveries are read (LATERAL ...
# LIMIT on ix_deliveries_client_due), so a client with 10,000 due costs what one with $1 does.
# With $8 false (fair share off) the order is the old one: first due, first sent, across clients.
#
# The circuit breaker (app.webhooks.retry_policy): an endpoint whose breaker is open has its
# deliveries skipped (left pending, attempts not spent); half-open (breaker_open_until passed),
# one at a time: the Deliverer treats such a target as capped at one in flight.
_CLAIM_DELIVERIES = """
WITH flight AS (
    SELECT f.client_id, f.n FROM unnest($4::uuid[], $5::int[]) AS f(client_id, n)
),
tenants AS (
    SELECT c.id, c.weight, COALESCE(f.n, 0) AS n
    FROM clients c LEFT JOIN flight f ON f.client_id = c.id
),
due AS (
    SELECT t.id AS client_id, t.weight, t.n, d.id, d.next_attempt_at, d.target, d.probing,
           row_number() OVER (PARTITION BY t.id ORDER BY d.next_attempt_at, d.id) AS r,
           row_number() OVER (PARTITION BY d.target ORDER BY d.next_attempt_at, d.id) AS tr
    FROM tenants t
    CROSS JOIN LATERAL (
        SELECT d.id, d.next_attempt_at, COALESCE(d.endpoint_id::text, d.url) AS target,
               e.breaker_open_until IS NOT NULL AS probing
        FROM deliveries d
        LEFT JOIN webhook_endpoints e ON e.id = d.endpoint_id
        WHERE d.client_id = t.id AND d.status = 'pending' AND d.next_attempt_at <= now()
          AND (d.locked_until IS NULL OR d.locked_until <= now())
          AND NOT (COALESCE(d.endpoint_id::text, d.url) = ANY($3::text[]))
          AND (e.breaker_open_until IS NULL OR e.breaker_open_until <= now())
        ORDER BY d.next_attempt_at
        LIMIT $1
    ) AS d
),
contenders AS (
    SELECT COALESCE(sum(weight), 0) AS w FROM tenants
    WHERE n > 0 OR id IN (SELECT client_id FROM due)
),
picked AS (
    SELECT id FROM due
    WHERE NOT (probing AND tr > 1)
      AND (NOT $8::bool
           OR n + r <= GREATEST(1, floor(($6::int - $7::int) * weight::float8
                                         / (SELECT w FROM contenders))))
    ORDER BY CASE WHEN $8::bool THEN (n + r)::float8 / weight END, next_attempt_at, id
    LIMIT $1
),
claimed AS (
    UPDATE deliveries
    SET locked_until = now() + make_interval(secs => $2), attempt_count = attempt_count + 1
    WHERE id IN (SELECT id FROM picked) AND status = 'pending'
      AND (locked_until IS NULL OR locked_until <= now())
    RETURNING id, client_id, event_id, endpoint_id, url, attempt_count
)
SELECT c.id, c.client_id, c.event_id, c.endpoint_id, c.attempt_count,
       COALESCE(c.endpoint_id::text, c.url) AS target,
       COALESCE(e.url, c.url) AS target_url, e.enabled AS endpoint_enabled,
       e.breaker_open_until IS NOT NULL AS probing,
       e.secrets AS endpoint_secrets, cl.webhook_secrets AS client_secrets,
       ev.payload{trace_column}
FROM claimed c
JOIN events ev ON ev.id = c.event_id
JOIN clients cl ON cl.id = c.client_id
LEFT JOIN webhook_endpoints e ON e.id = c.endpoint_id{trace_join}
"""
# With tracing on (app.tracing), each delivery is a span of its job's trace: the job's stored
# context comes along, by primary key (a ping has no job). Read through events → jobs at claim
# time rather than copied onto every event or delivery row: nothing is written for it, and
# with tracing off the claim is the statement it was.
CLAIM_DELIVERIES = _CLAIM_DELIVERIES.format(trace_column="", trace_join="")
CLAIM_DELIVERIES_TRACED = _CLAIM_DELIVERIES.format(
    trace_column=", j.trace_context", trace_join="\nLEFT JOIN jobs j ON j.id = ev.job_id"
)

# Claimed beyond a target's cap: handed back untouched.
RELEASE_DELIVERIES = """
UPDATE deliveries SET locked_until = NULL, attempt_count = attempt_count - 1
WHERE id = ANY($1::uuid[]) AND status = 'pending'
"""

# Results are recorded in batches (one transaction for many deliveries): under load, a commit
# per delivery would be the ceiling. attempt_count is the compare-and-set token: a row whose
# lease ran out and was claimed again is not overwritten by the late first worker.
# Joined to deliveries: a delivery deleted meanwhile (its endpoint was) just has no log.
RECORD_ATTEMPTS = """
INSERT INTO delivery_attempts
    (id, delivery_id, attempted_at, duration_ms, status_code, error, response_body)
SELECT u.* FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::int[], $5::int2[],
                       $6::text[], $7::text[])
    AS u(id, delivery_id, attempted_at, duration_ms, status_code, error, response_body)
JOIN deliveries d ON d.id = u.delivery_id
"""

RECORD_DELIVERIES = """
UPDATE deliveries AS d SET
    status = u.status,
    next_attempt_at = u.next_attempt_at,
    locked_until = NULL,
    last_status_code = u.status_code,
    last_error = u.error,
    succeeded_at = CASE WHEN u.status = 'succeeded' THEN u.attempted_at ELSE d.succeeded_at END,
    updated_at = now()
FROM unnest($1::uuid[], $2::int[], $3::text[], $4::timestamptz[], $5::int2[], $6::text[],
            $7::timestamptz[])
    AS u(id, attempt_count, status, next_attempt_at, status_code, error, attempted_at)
WHERE d.id = u.id AND d.attempt_count = u.attempt_count
  -- A subquery, not a literal: with `d.status = 'pending'` the planner matches the partial
  -- index ix_deliveries_due and hash-joins the whole backlog on every batch (measured: 25.6 ms
  -- per 64 rows with 14,000 pending, against 0.84 ms by primary key).
  AND d.status = (SELECT 'pending'::text)
"""

# An answer closes the breaker; a 2xx also ends the failing period. Only rows that change are
# written (the hot path records successes to healthy endpoints).
ENDPOINTS_RECOVERED = """
UPDATE webhook_endpoints SET failing_since = NULL, consecutive_failures = 0,
    breaker_open_until = NULL, updated_at = now()
WHERE id = ANY($1::uuid[]) AND (failing_since IS NOT NULL OR consecutive_failures > 0)
"""

# Answered, but not a 2xx (a 4xx, a 429): the endpoint is up, so its breaker closes; the
# failing period goes on (ENDPOINTS_FAILED).
ENDPOINTS_ANSWERED = """
UPDATE webhook_endpoints SET consecutive_failures = 0, breaker_open_until = NULL,
    updated_at = now()
WHERE id = ANY($1::uuid[]) AND consecutive_failures > 0
"""

# A failure starts (or continues) the endpoint's failing period; five days of it disables it.
# $2 breaker failures per endpoint in the batch (app.webhooks.retry_policy.breaker_failure):
# while closed they add up, and reaching $4 opens the breaker for $5 s; a failure while
# half-open (count already at $4 or more) is a failed probe: open again, the cool-down doubling
# per trip (trip = count - $4 + 1) up to $6 s. Failures recorded while it is open are attempts
# sent before it opened: they change nothing.
ENDPOINTS_FAILED = """
UPDATE webhook_endpoints AS e SET
    failing_since = COALESCE(e.failing_since, $3),
    enabled = e.enabled AND NOT COALESCE(e.failing_since < $3 - interval '5 days', false),
    disabled_reason = CASE WHEN e.enabled AND e.failing_since < $3 - interval '5 days'
                           THEN 'every delivery failed for 5 days' ELSE e.disabled_reason END,
    consecutive_failures = CASE
        WHEN u.n = 0 OR e.breaker_open_until > $3 THEN e.consecutive_failures
        -- Counted up to where the cool-down reaches its ceiling (2^20 times the first is far
        -- past any ceiling), so a probe failing for weeks cannot overflow power() below.
        WHEN e.consecutive_failures >= $4 THEN LEAST(e.consecutive_failures + 1, $4 + 20)
        ELSE LEAST(e.consecutive_failures + u.n, $4) END,
    breaker_open_until = CASE
        WHEN u.n = 0 OR e.breaker_open_until > $3 THEN e.breaker_open_until
        WHEN e.consecutive_failures >= $4
            THEN $3 + make_interval(secs => LEAST(
                $5 * power(2, LEAST(e.consecutive_failures - $4 + 1, 20)), GREATEST($5, $6)))
        WHEN e.consecutive_failures + u.n >= $4 THEN $3 + make_interval(secs => $5)
        ELSE e.breaker_open_until END,
    updated_at = now()
FROM unnest($1::uuid[], $2::int[]) AS u(id, n)
WHERE e.id = u.id
"""

ENDPOINTS_GONE = """
UPDATE webhook_endpoints SET enabled = false, updated_at = now(),
    disabled_reason = 'the endpoint answered 410 Gone'
WHERE id = ANY($1::uuid[]) AND enabled
"""


async def claim_deliveries(
    pool: Pool,
    limit: int,
    lease: float,
    saturated: list[str],
    *,
    in_flight: dict[uuid.UUID, int],
    capacity: int,
    reserve: int,
    fair_share: bool = True,
    traced: bool = False,
) -> list[asyncpg.Record]:
    """Lease up to `limit` due deliveries, skipping `saturated` targets, by fair share between
    clients over `capacity` slots (`in_flight` per client here, `reserve` held back for
    clients with none), or first due first with `fair_share` off. `traced`: each row also
    has its job's `trace_context`."""
    return await pool.fetch(
        CLAIM_DELIVERIES_TRACED if traced else CLAIM_DELIVERIES,
        limit,
        lease,
        saturated,
        list(in_flight),
        list(in_flight.values()),
        capacity,
        reserve,
        fair_share,
    )


async def release_deliveries(pool: Pool, ids: list[uuid.UUID]) -> None:
    await pool.execute(RELEASE_DELIVERIES, ids)
