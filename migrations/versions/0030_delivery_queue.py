"""pending deliveries in a queue table of their own, apart from the delivery log

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-01
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0030"
down_revision: str | None = "0029"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The delivery claim read `deliveries` on a partial index of the pending rows
# (ix_deliveries_client_due, WHERE status = 'pending'). Recording a result takes a row out of
# that predicate, and a change to a column an index names (its predicate included) is never a
# HOT update: every result wrote a new entry in each of the table's four other indexes, 13 us
# of the 21 us of Postgres CPU a result cost (measured alone, 50 rows a statement).
#
# The pending deliveries are now rows of `delivery_queue`: what a claim needs to pick and send
# one (its client, event and target, when it is due, its lease and the lease's token, the
# attempt count), keyed by the delivery's id. A delivery queued is a row in each table; a claim
# reads and leases the queue alone (a HOT update: no index names the lease); a result deletes
# the queue row, or sets its next due time, and updates the delivery in place (no index of
# `deliveries` names a column a result changes, so that too is HOT). `deliveries` stays the
# log: its status, attempt count and next attempt are what the API shows, written with each
# result.
#
# The lease (`locked_until`) is the queue's alone: a leased delivery's attempt count in
# `deliveries` is the one of its last recorded attempt until this one is recorded.
#
# During a rolling upgrade the previous release runs beside this one on this schema
# (migrations only add; what they replace goes in the release after). Its processes:
# - insert deliveries without queue rows, and retry, recover or record them by updating
#   `deliveries` alone: two triggers (PREVIOUS_RELEASE) do the queue's side of it for them,
#   for connections that do not say they keep the queue themselves (app.db.pool sets
#   `falrelay.queues_deliveries`, whose check is all the triggers cost this release);
# - claim with `claim_deliveries`, which read the index dropped here: it now claims nothing,
#   and this release's workers (`claim_queued_deliveries`) send everything. A lease the
#   previous release held when this ran stays in the queue, and its result, recorded by the
#   old statement, ends the queue row through the triggers.
# The next release drops the triggers, the idle `claim_deliveries` and
# `deliveries.locked_until`, which nothing of this release reads or writes.
#
# The queue keeps more than half of each page free, as `deliveries` keeps half (migration
# 0029): rows queued together are leased together, and each lease needs room for a new version
# on its page, and a line pointer for it, which weighs more beside the queue's narrower rows.
# Of 400 deliveries queued together and leased in claims of 128, 378 leases were HOT with half
# of each page free, and all 400 with 55 %.
FILLFACTOR = 45

# The claim of migrations 0026 and 0028 (the reasoning is 0026's), reading and leasing the
# queue rather than `deliveries`: every pending row is due or leased, so the status is no
# longer a condition. Bitmap scans are off as well as sequential ones: a plan made on a queue
# of rows never analysed (the first burst of a new deployment, 1,000 rows) read each client's
# due rows by a bitmap scan and sorted them all to take the first, every row of a client on
# each claim (6,015 rows read for a claim of 16 with 3,000 due, against 33 read in order by
# the index; 0.41 ms of Postgres CPU per delivery in the fan-out benchmark, 0.12 without).
FUNCTION = """
CREATE FUNCTION claim_queued_deliveries(int, float8, text[], uuid[], int[], int, int, bool,
                                        bool)
RETURNS TABLE (
    id uuid, client_id uuid, event_id uuid, endpoint_id uuid, attempt_count int, target text,
    target_url text, endpoint_enabled bool, probing bool, endpoint_secrets jsonb,
    client_secrets jsonb, client_weight int, payload text, trace_context text, held_back bool
)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_bitmapscan = off
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
    -- Each client's first due delivery: one probe of ix_delivery_queue_client_due per client.
    heads AS (
        SELECT t.id AS client_id, t.weight, t.n, h.id, h.next_attempt_at, h.target, h.probing
        FROM tenants t
        CROSS JOIN LATERAL (
            SELECT q.id, q.next_attempt_at, COALESCE(q.endpoint_id::text, q.url) AS target,
                   e.breaker_open_until IS NOT NULL AS probing
            FROM delivery_queue q
            LEFT JOIN webhook_endpoints e ON e.id = q.endpoint_id
            WHERE q.client_id = t.id AND q.next_attempt_at <= now()
              AND (q.locked_until IS NULL OR q.locked_until <= now())
              AND NOT (COALESCE(q.endpoint_id::text, q.url) = ANY($3::text[]))
              AND (e.breaker_open_until IS NULL OR e.breaker_open_until <= now())
            ORDER BY q.next_attempt_at
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
    bound AS (
        SELECT (SELECT (n + 1)::float8 / weight FROM shares WHERE n + 1 <= share
                ORDER BY 1 OFFSET GREATEST($1 - 1, 0) LIMIT 1) AS key,
               (SELECT next_attempt_at FROM shares
                ORDER BY 1 OFFSET GREATEST($1 - 1, 0) LIMIT 1) AS due_at
    ),
    candidates AS (
        SELECT client_id, weight, n, share, id, next_attempt_at, target, probing FROM shares
        UNION ALL
        SELECT s.client_id, s.weight, s.n, s.share, d.id, d.next_attempt_at, d.target,
               d.probing
        FROM shares s
        CROSS JOIN LATERAL (
            SELECT q.id, q.next_attempt_at, COALESCE(q.endpoint_id::text, q.url) AS target,
                   e.breaker_open_until IS NOT NULL AS probing
            FROM delivery_queue q
            LEFT JOIN webhook_endpoints e ON e.id = q.endpoint_id
            WHERE q.client_id = s.client_id
              AND q.next_attempt_at <= LEAST(now(), CASE WHEN NOT $8::bool
                                                         THEN (SELECT due_at FROM bound) END)
              AND (q.locked_until IS NULL OR q.locked_until <= now())
              AND NOT (COALESCE(q.endpoint_id::text, q.url) = ANY($3::text[]))
              AND (e.breaker_open_until IS NULL OR e.breaker_open_until <= now())
            ORDER BY q.next_attempt_at
            OFFSET 1
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
        UPDATE delivery_queue
        SET locked_until = now() + make_interval(secs => $2), attempt_count = attempt_count + 1
        -- = ANY(ARRAY(...)), not IN (SELECT ...): by primary key, whatever the plan's idea of
        -- the picks (see migration 0026).
        WHERE id = ANY(ARRAY(SELECT id FROM picked))
          AND (locked_until IS NULL OR locked_until <= now())
        RETURNING id, client_id, event_id, endpoint_id, url, attempt_count
    ),
    sending AS (
        SELECT c.id, c.client_id, c.event_id, c.endpoint_id, c.attempt_count,
               COALESCE(c.endpoint_id::text, c.url) AS target,
               COALESCE(e.url, c.url) AS target_url, e.enabled AS endpoint_enabled,
               e.breaker_open_until IS NOT NULL AS probing,
               e.secrets AS endpoint_secrets,
               CASE WHEN c.endpoint_id IS NULL THEN cl.webhook_secrets END AS client_secrets,
               cl.weight AS client_weight,
               ev.payload::text AS payload,
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
_SIGNATURE = "claim_deliveries(int, float8, text[], uuid[], int[], int, int, bool, bool)"
_QUEUED_SIGNATURE = (
    "claim_queued_deliveries(int, float8, text[], uuid[], int[], int, int, bool, bool)"
)

# The previous release's claim, as the previous release's workers call it: nothing to claim
# (one row, `held_back` false, as when nothing is due).
IDLE_CLAIM = f"""
CREATE FUNCTION {_SIGNATURE}
RETURNS TABLE (
    id uuid, client_id uuid, event_id uuid, endpoint_id uuid, attempt_count int, target text,
    target_url text, endpoint_enabled bool, probing bool, endpoint_secrets jsonb,
    client_secrets jsonb, client_weight int, payload text, trace_context text, held_back bool
)
LANGUAGE sql STABLE
AS $$
    SELECT NULL::uuid, NULL::uuid, NULL::uuid, NULL::uuid, NULL::int, NULL::text, NULL::text,
           NULL::bool, NULL::bool, NULL::jsonb, NULL::jsonb, NULL::int, NULL::text, NULL::text,
           false
$$
"""

# The queue's side of what the previous release writes to `deliveries` alone: a delivery
# inserted pending, or made pending again (a retry, a recovery), is queued (due when the log
# says); one that succeeded or failed leaves the queue. Row triggers, each gated by a WHEN
# that reads one setting: this release's connections skip them before any function runs.
PREVIOUS_RELEASE = (
    """
CREATE FUNCTION previous_release_queues_delivery() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'pending' THEN
        INSERT INTO delivery_queue (id, client_id, event_id, endpoint_id, url,
                                    next_attempt_at, attempt_count)
        VALUES (NEW.id, NEW.client_id, NEW.event_id, NEW.endpoint_id, NEW.url,
                COALESCE(NEW.next_attempt_at, now()), NEW.attempt_count)
        ON CONFLICT (id) DO UPDATE SET next_attempt_at = EXCLUDED.next_attempt_at;
    ELSE
        DELETE FROM delivery_queue WHERE id = NEW.id;
    END IF;
    RETURN NULL;
END
$$
""",
    """
CREATE TRIGGER previous_release_inserts_delivery AFTER INSERT ON deliveries
FOR EACH ROW
WHEN (NEW.status = 'pending'
      AND current_setting('falrelay.queues_deliveries', true) IS DISTINCT FROM 'on')
EXECUTE FUNCTION previous_release_queues_delivery()
""",
    """
CREATE TRIGGER previous_release_updates_delivery AFTER UPDATE OF status ON deliveries
FOR EACH ROW
WHEN ((OLD.status IS DISTINCT FROM NEW.status OR NEW.status = 'pending')
      AND current_setting('falrelay.queues_deliveries', true) IS DISTINCT FROM 'on')
EXECUTE FUNCTION previous_release_queues_delivery()
""",
)


def _0028_function() -> str:
    """The claim as migration 0028 left it (0026's, with the payload as text)."""
    path = Path(__file__).with_name("0028_claim_deliveries_payload_as_text.py")
    spec = importlib.util.spec_from_file_location(f"falrelay_migration_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function = module._0026_function()
    for before, after in module._REPLACED:
        function = function.replace(before, after)
    result: str = function
    return result


def upgrade() -> None:
    op.execute(
        f"""
        CREATE TABLE delivery_queue (
            id uuid CONSTRAINT pk_delivery_queue PRIMARY KEY
                CONSTRAINT fk_delivery_queue_id_deliveries REFERENCES deliveries (id)
                ON DELETE CASCADE,
            client_id uuid NOT NULL,
            event_id uuid NOT NULL,
            endpoint_id uuid,
            url text,
            next_attempt_at timestamptz NOT NULL,
            locked_until timestamptz,
            attempt_count integer NOT NULL
        ) WITH (fillfactor = {FILLFACTOR})
        """
    )
    op.execute(
        "CREATE INDEX ix_delivery_queue_client_due ON delivery_queue (client_id, next_attempt_at)"
    )
    op.execute(
        """
        INSERT INTO delivery_queue (id, client_id, event_id, endpoint_id, url, next_attempt_at,
                                    locked_until, attempt_count)
        SELECT id, client_id, event_id, endpoint_id, url, COALESCE(next_attempt_at, now()),
               locked_until, attempt_count
        FROM deliveries WHERE status = 'pending'
        """
    )
    op.execute(FUNCTION)
    op.execute(f"DROP FUNCTION {_SIGNATURE}")
    op.execute(IDLE_CLAIM)
    for statement in PREVIOUS_RELEASE:
        op.execute(statement)
    op.drop_index("ix_deliveries_client_due", table_name="deliveries")


def downgrade() -> None:
    op.execute("DROP TRIGGER previous_release_updates_delivery ON deliveries")
    op.execute("DROP TRIGGER previous_release_inserts_delivery ON deliveries")
    op.execute("DROP FUNCTION previous_release_queues_delivery()")
    op.execute(
        """
        UPDATE deliveries d SET locked_until = q.locked_until, attempt_count = q.attempt_count,
            next_attempt_at = q.next_attempt_at
        FROM delivery_queue q WHERE q.id = d.id
        """
    )
    op.execute(
        "CREATE INDEX ix_deliveries_client_due ON deliveries (client_id, next_attempt_at)"
        " WHERE status = 'pending'"
    )
    op.execute(f"DROP FUNCTION {_SIGNATURE}")
    op.execute(_0028_function())
    op.execute(f"DROP FUNCTION {_QUEUED_SIGNATURE}")
    op.execute("DROP TABLE delivery_queue")
