"""the delivery claim as a function, on a generic plan: planned once per connection, not per call

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The claim (app.webhooks.queue.claim_deliveries) was sent as a statement, which Postgres
# planned anew on every call: its plan cache judged each custom plan cheaper than a generic one
# (the generic estimate cannot know LIMIT $1), so it never switched (asyncpg's statement showed
# 630 custom plans and no generic one). For the claims the worker makes (16 rows, as slots come
# free), planning was more than half of the claim: 0.42 ms of planning against 0.27 ms of
# execution. A claim of 16 cost 1.34-1.43 ms of backend CPU; as this function, 0.71-0.75.
#
# In a function, the statement's plan is cached per connection and `plan_cache_mode` can be
# the function's own setting. A generic plan is made once, with the statistics of that moment,
# and kept until they change (an ANALYZE replans it): one made while `deliveries` was empty
# (a new deployment, or a vacuumed queue) chose sequential scans, and with 20,000 pending that
# plan took 46 ms a claim until the next ANALYZE. Sequential scans are off while it runs, so
# every plan reads `deliveries` by its indexes whatever the statistics said: the due rows by
# ix_deliveries_client_due, the lease by primary key. The other tables it reads are small
# (clients, endpoints) or read by primary key (events, jobs).
#
# The statement is the one the application sent before but for two things: each client's due
# deliveries are read only as far as they could be picked (`heads` and `bound`, below), and the
# tracing variant's job context is a column of every row (NULL unless $9), read by primary key
# only when asked for.
#
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
# client's share are skipped. A client's due deliveries are read in order from
# ix_deliveries_client_due (LATERAL ... LIMIT), so a client with 10,000 due costs what one with
# a few does. With $8 false (fair share off) the order is the old one: first due, first sent,
# across clients.
#
# The circuit breaker (app.webhooks.policy): an endpoint whose breaker is open has its
# deliveries skipped (left pending, attempts not spent); half-open (breaker_open_until passed),
# one at a time: the Deliverer treats such a target as capped at one in flight.
#
# With the leased rows comes `held_back`, on each and on a row of its own when none was leased
# (its columns NULL): whether a due delivery was skipped for what is in flight here (beyond its
# client's share, or a half-open endpoint's second). Only then can a delivery that ends let
# the next claim take more; else waking the loop for it costs a claim that finds nothing.
#
# The parameters are positional ($1 to $9) and the columns are preferred to the result's names
# (variable_conflict): the statement reads as it did outside.
FUNCTION = """
CREATE FUNCTION claim_deliveries(int, float8, text[], uuid[], int[], int, int, bool, bool)
RETURNS TABLE (
    id uuid, client_id uuid, event_id uuid, endpoint_id uuid, attempt_count int, target text,
    target_url text, endpoint_enabled bool, probing bool, endpoint_secrets jsonb,
    client_secrets jsonb, client_weight int, payload jsonb, trace_context text, held_back bool
)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH flight AS (
        SELECT f.client_id, f.n FROM unnest($4::uuid[], $5::int[]) AS f(client_id, n)
    ),
    tenants AS (
        SELECT c.id, c.weight, COALESCE(f.n, 0) AS n
        FROM clients c LEFT JOIN flight f ON f.client_id = c.id
    ),
    -- Each client's first due delivery: one probe of ix_deliveries_client_due per client.
    heads AS (
        SELECT t.id AS client_id, t.weight, t.n, h.id, h.next_attempt_at, h.target, h.probing
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
            LIMIT 1
        ) AS h
    ),
    contenders AS (
        SELECT COALESCE(sum(weight), 0) AS w FROM tenants
        WHERE n > 0 OR id IN (SELECT client_id FROM heads)
    ),
    shares AS (
        SELECT heads.*,
               GREATEST(1, floor(($6::int - $7::int) * weight::float8
                                 / (SELECT w FROM contenders)))::int AS share
        FROM heads
    ),
    -- The $1-th smallest key among the clients' first deliveries that fit (NULL if fewer fit):
    -- a delivery with a greater key is never picked, as $1 that fit come before it. Each
    -- client's read stops there, so with many clients due a claim reads about $1 rows in all
    -- rather than $1 per client (measured with 301 clients due: 4,816 rows and 21 ms a claim
    -- of 16). Each also stops one past its share: that one is held back, and the rest would be.
    bound AS (
        SELECT (SELECT (n + 1)::float8 / weight FROM shares WHERE n + 1 <= share
                ORDER BY 1 OFFSET GREATEST($1 - 1, 0) LIMIT 1) AS key,
               (SELECT next_attempt_at FROM shares
                ORDER BY 1 OFFSET GREATEST($1 - 1, 0) LIMIT 1) AS due_at
    ),
    -- Each client's first due delivery, then the ones after it that could be picked: with many
    -- clients due most need none (LIMIT 0 reads nothing), so most are read once.
    candidates AS (
        SELECT client_id, weight, n, share, id, next_attempt_at, target, probing FROM shares
        UNION ALL
        SELECT s.client_id, s.weight, s.n, s.share, d.id, d.next_attempt_at, d.target,
               d.probing
        FROM shares s
        CROSS JOIN LATERAL (
            SELECT d.id, d.next_attempt_at, COALESCE(d.endpoint_id::text, d.url) AS target,
                   e.breaker_open_until IS NOT NULL AS probing
            FROM deliveries d
            LEFT JOIN webhook_endpoints e ON e.id = d.endpoint_id
            -- First due, first sent (fair share off): nothing due after the $1-th first is
            -- picked. An index condition (LEAST ignores the NULL), so the read stops there.
            WHERE d.client_id = s.client_id AND d.status = 'pending'
              AND d.next_attempt_at <= LEAST(now(), CASE WHEN NOT $8::bool
                                                         THEN (SELECT due_at FROM bound) END)
              AND (d.locked_until IS NULL OR d.locked_until <= now())
              AND NOT (COALESCE(d.endpoint_id::text, d.url) = ANY($3::text[]))
              AND (e.breaker_open_until IS NULL OR e.breaker_open_until <= now())
            -- The same order as the head's read (the same index, the same conditions), so the
            -- first row skipped is the head.
            ORDER BY d.next_attempt_at
            OFFSET 1
            -- By fair share, the client's rows up to the bound's key, and one past its share
            -- (at least one, to see it is held back); the margin keeps float rounding from
            -- cutting a row whose key ties with the bound (LEAST ignores a NULL bound).
            LIMIT GREATEST(0, CASE WHEN $8::bool
                                   THEN LEAST($1, GREATEST(1, s.share - s.n + 1),
                                              floor((SELECT key FROM bound) * s.weight
                                                    - s.n + 1e-9)::int)
                                   ELSE $1 END - 1)
        ) AS d
    ),
    due AS (
        SELECT *,
               row_number() OVER (PARTITION BY client_id ORDER BY next_attempt_at, id) AS r,
               row_number() OVER (PARTITION BY target ORDER BY next_attempt_at, id) AS tr
        FROM candidates
    ),
    judged AS (
        SELECT id, n, r, weight, next_attempt_at,
               NOT (probing AND tr > 1) AND (NOT $8::bool OR n + r <= share) AS fits
        FROM due
    ),
    picked AS (
        SELECT id FROM judged WHERE fits
        ORDER BY CASE WHEN $8::bool THEN (n + r)::float8 / weight END, next_attempt_at, id
        LIMIT $1
    ),
    held AS (
        SELECT EXISTS (SELECT FROM judged WHERE NOT fits) AS held_back
    ),
    claimed AS (
        UPDATE deliveries
        SET locked_until = now() + make_interval(secs => $2), attempt_count = attempt_count + 1
        -- = ANY(ARRAY(...)), not IN (SELECT ...), and the status as a subquery: either way the
        -- planner reads every pending row (the partial index ix_deliveries_client_due, or a hash
        -- join against the picks). Measured in the fan-out benchmark: 32.8 ms a claim with
        -- 20,000 pending; by primary key it costs what the picks do.
        WHERE id = ANY(ARRAY(SELECT id FROM picked)) AND status = (SELECT 'pending'::text)
          AND (locked_until IS NULL OR locked_until <= now())
        RETURNING id, client_id, event_id, endpoint_id, url, attempt_count
    ),
    sending AS (
        SELECT c.id, c.client_id, c.event_id, c.endpoint_id, c.attempt_count,
               COALESCE(c.endpoint_id::text, c.url) AS target,
               COALESCE(e.url, c.url) AS target_url, e.enabled AS endpoint_enabled,
               e.breaker_open_until IS NOT NULL AS probing,
               e.secrets AS endpoint_secrets,
               -- Only a job's callback URL is signed with its client's secrets: read (and
               -- decoded by the worker) for those rows alone.
               CASE WHEN c.endpoint_id IS NULL THEN cl.webhook_secrets END AS client_secrets,
               cl.weight AS client_weight,
               ev.payload,
               -- With tracing on (app.tracing), each delivery is a span of its job's trace.
               CASE WHEN $9::bool
                    THEN (SELECT j.trace_context FROM jobs j WHERE j.id = ev.job_id) END
                   AS trace_context
        FROM claimed c
        JOIN events ev ON ev.id = c.event_id
        JOIN clients cl ON cl.id = c.client_id
        LEFT JOIN webhook_endpoints e ON e.id = c.endpoint_id
    )
    SELECT s.id, s.client_id, s.event_id, s.endpoint_id, s.attempt_count, s.target,
           s.target_url, s.endpoint_enabled, s.probing, s.endpoint_secrets, s.client_secrets,
           s.client_weight, s.payload, s.trace_context, held.held_back
    FROM held LEFT JOIN sending s ON true;
END
$$
"""


def upgrade() -> None:
    op.execute(FUNCTION)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION claim_deliveries(int, float8, text[], uuid[], int[], int, int, bool, bool)"
    )
