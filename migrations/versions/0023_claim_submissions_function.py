"""the submission claim as a function: its lock and its statement in one round trip

Revision ID: 0023
Revises: 0022
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The claim (app.jobs.queue.claim_submissions) was three round trips: BEGIN with its settings
# and the claims' lock, the claim, COMMIT. The lock had to be a statement of its own, as the
# claim's snapshot must be taken after it is held (or it would miss the leases of the claim
# that held it last). In a function, each statement takes a snapshot of its own, so the lock
# and the claim are one call, in one implicit transaction: one round trip and one statement.
# The lock waits at most `lock_timeout` (the function's own setting); no transaction is left
# open between statements, so none can sit idle holding the lock.
#
# The statement is the one the application sent before, unchanged:
#
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
# $1 slots the worker has, $2 lease seconds, $3 the account-wide cap, $4 the default per-client
# cap (NULL: none for either; LEAST ignores a NULL), $5 fair share.
#
# With the leased rows comes `held_back`, on each and on a row of its own when none was leased
# (its columns NULL): whether due jobs may have been left for want of a slot at fal, the
# account's (it left fewer slots than the worker had, and the claim took them all) or a
# client's (one at its cap, or ranked past it). It may say so when nothing more was due (at
# the account's cap, or a client at its own: counting what is due there would read their
# queues); it never misses it.
#
# Bitmap scans are off while it runs: the count of what is in flight reads partial indexes
# whose entries die as jobs leave fal, until the next vacuum. An index scan marks a dead entry
# as it meets it and skips it from then on; a bitmap scan never does, and visits the heap page
# of each one on every claim (measured in the end-to-end benchmark, where the planner chose
# one: 1,184 buffers a claim, 1.78 ms, against 117 buffers and 0.40 ms).
#
# The parameters are positional ($1 to $5) and the columns are preferred to the result's names
# (variable_conflict): the statement reads as it did outside.
FUNCTION = """
CREATE FUNCTION claim_submissions(int, float8, int, int, bool)
RETURNS TABLE (
    id uuid, model text, input jsonb, attempts int, priority smallint, start_timeout float8,
    trace_context text, held_back bool
)
LANGUAGE plpgsql VOLATILE
SET enable_bitmapscan = off
SET lock_timeout = '5s'
AS $$
#variable_conflict use_column
BEGIN
    PERFORM pg_advisory_xact_lock(7377296903428727329);  -- 0x66616C7273756221
    RETURN QUERY
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
    SELECT c.id, c.model, c.input, c.attempts, c.priority, c.start_timeout, c.trace_context,
           held.held_back
    FROM held LEFT JOIN claimed c ON true;
END
$$
"""


def upgrade() -> None:
    op.execute(FUNCTION)


def downgrade() -> None:
    op.execute("DROP FUNCTION claim_submissions(int, float8, int, int, bool)")
