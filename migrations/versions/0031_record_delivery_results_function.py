"""delivery results recorded by a function whose plan reads every table by primary key

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0031"
down_revision: str | None = "0030"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The statement app.webhooks.queue sent to record a batch of results, as a function. Sent
# itself, it ran on the generic plan Postgres caches for a prepared statement after its fifth
# execution, made with the statistics of that moment. On a new deployment's tables, small and
# never analysed, that plan hash-joined the batch against sequential scans of `deliveries`
# (twice: the attempts' join and the log's update), and kept doing so as the tables grew, until
# autovacuum's first ANALYZE of them (its naptime is a minute). The `id = ANY($1)` conditions
# it carried did not stop it: on a table of a page or two the scan is the cheaper path, and
# with a condition of its own the scan only filters. In the end-to-end benchmark (a database
# made for the run, 30 s old at its end) a batch of one result went from 0.22 ms to 2.1 ms of
# execution as `deliveries` grew to 9,000 rows, 521 buffers read for 2 rows.
#
# Every step joins the batch's few rows to a table by its primary key, so the function allows
# nothing else: no sequential or bitmap scans, no hash or merge joins. Each join is then a
# nested loop over the batch with one index probe per row, whatever the statistics say, and
# the plan is made once per connection (force_generic_plan, as the claims of migrations 0026
# and 0030) rather than planned on each call. The `id = ANY($1)` conditions go: they were
# there to steer the plan, and inside a probe by primary key they only cost a pass over the
# array per row.
FUNCTION = """
CREATE FUNCTION record_delivery_results(uuid[], int[], text[], timestamptz[], timestamptz[],
                                        int[], int2[], text[], text[], uuid[])
RETURNS void
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
BEGIN
    WITH attempts AS (
        INSERT INTO delivery_attempts
            (id, delivery_id, attempted_at, duration_ms, status_code, error, response_body)
        SELECT uuid7(), u.* FROM unnest($1, $5, $6, $7, $8, $9)
            AS u(delivery_id, attempted_at, duration_ms, status_code, error, response_body)
        JOIN deliveries d ON d.id = u.delivery_id
    ),
    ended AS (
        DELETE FROM delivery_queue AS q
        USING unnest($1, $2, $3, $4, $7, $8, $5)
            AS u(id, attempt_count, status, next_attempt_at, status_code, error, attempted_at)
        WHERE q.id = u.id AND q.attempt_count = u.attempt_count AND u.status <> 'pending'
        RETURNING u.*
    ),
    rescheduled AS (
        UPDATE delivery_queue AS q SET next_attempt_at = u.next_attempt_at, locked_until = NULL
        FROM unnest($1, $2, $3, $4, $7, $8, $5)
            AS u(id, attempt_count, status, next_attempt_at, status_code, error, attempted_at)
        WHERE q.id = u.id AND q.attempt_count = u.attempt_count AND u.status = 'pending'
        RETURNING u.*
    ),
    recorded AS (
        UPDATE deliveries AS d SET
            status = u.status,
            attempt_count = u.attempt_count,
            next_attempt_at = u.next_attempt_at,
            last_status_code = u.status_code,
            last_error = u.error,
            succeeded_at = CASE WHEN u.status = 'succeeded' THEN u.attempted_at
                                ELSE d.succeeded_at END,
            updated_at = now()
        FROM (SELECT * FROM ended UNION ALL SELECT * FROM rescheduled) AS u
        WHERE d.id = u.id
    )
    UPDATE webhook_endpoints SET failing_since = NULL, consecutive_failures = 0,
        breaker_open_until = NULL, updated_at = now()
    WHERE id = ANY($10) AND (failing_since IS NOT NULL OR consecutive_failures > 0);
END
$$
"""
_SIGNATURE = (
    "record_delivery_results(uuid[], int[], text[], timestamptz[], timestamptz[], int[], int2[],"
    " text[], text[], uuid[])"
)


def upgrade() -> None:
    op.execute(FUNCTION)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {_SIGNATURE}")
