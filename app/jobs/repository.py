"""SQL for jobs. Every statement a request runs is one round trip in autocommit."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from app.billing import service as billing
from app.db.pool import Pool
from app.events.payloads import event_body_sql
from app.events.types import EventType
from app.jobs.models import PRIORITIES
from app.jobs.schemas import job_view_sql
from app.webhooks import fanout

JOB_COLUMNS = (
    "id, model, status, input, metadata, callback_url, output, error, fal_request_id, "
    "priority, start_timeout, created_at, submitted_at, started_at, completed_at, files"
)


# The rows of the jobs to store: one job, its columns $1 to $13.
_ONE_JOB = """
SELECT $1, $2, $3, $4, $5, $6,
       CASE WHEN (SELECT ok FROM reserved) THEN $7::numeric
            ELSE intake_refused('budget') END,
       $8, $9, $10, $11, $12, $13
FROM admitted
"""

# Several jobs of one client at once (`intake_many`): each column of the jobs an array, $16
# how many. The reservation is their sum, so all are taken or none.
_MANY_JOBS = """
SELECT j.id, $2, j.model, j.input, j.metadata, j.callback_url,
       CASE WHEN (SELECT ok FROM reserved) THEN j.estimate ELSE intake_refused('budget') END,
       j.priority, j.start_timeout, j.unit_price, j.trace_context, j.key, j.fingerprint
FROM admitted,
     unnest($1::uuid[], $3::text[], $4::jsonb[], $5::jsonb[], $6::text[], $7::numeric[],
            $8::smallint[], $9::float8[], $10::numeric[], $11::text[], $12::text[], $13::bytea[])
     AS j(id, model, input, metadata, callback_url, estimate, priority, start_timeout,
          unit_price, trace_context, key, fingerprint)
"""
_MANY_AMOUNT = "(SELECT sum(e) FROM unnest($7::numeric[]) AS e)"


# A job's intake, in one statement and so one implicit transaction: no BEGIN or COMMIT round
# trips, and no row locked longer than Postgres takes to run it and commit.
#  1. The job's place in its client's queue (`admitted`, no row: the queue is full). The count
#     of a client's queued jobs is `clients.queue_entries` plus, over the client's shards,
#     entries less exits less allowance (migrations 0017 and 0020); see the two steps below.
#  2. The reservation against the month's budget (the client's own, else $15; NULL: unlimited),
#     app.billing's compare-and-set on the client's month.
#  3. The job, only with both. When the budget refused after the count took the job,
#     intake_refused raises (migration 0016) and the count rolls back with the statement.
#     An Idempotency-Key taken meanwhile (two first requests at once) is a unique violation,
#     which rolls back the count and the reservation the same way.
def _intake(counting: str, *, amount: str = "$7::numeric", jobs: str = _ONE_JOB) -> str:
    return f"""
WITH shards AS (
    SELECT COALESCE(sum(entries - exits), 0) AS n FROM client_queue_counts WHERE client_id = $2
), {counting.strip()}, reserved AS ({
        billing.reservation_step(
            client="$2",
            amount=amount,
            budget="(SELECT budget FROM admitted)",
            source="admitted",
        )
    })
INSERT INTO jobs (id, client_id, model, input, metadata, callback_url, estimated_cost_usd,
                  priority, start_timeout, unit_price_usd, trace_context, idempotency_key,
                  request_fingerprint)
{jobs.strip()}
RETURNING {JOB_COLUMNS}
"""


# How many places in a capped queue one turn on the clients row hands to a shard.
QUEUE_GRANT = 16


# The queued-jobs cap ($14, NULL: none) without taking turns. The cap is checked against an
# upper bound, U = `clients.queue_entries` + the shards' entries less exits: places granted to
# shards and not yet taken count as taken.
#  - A capped create spends a place its session's shard was granted (`took`): that shard's row
#    is the only one it locks, and a place is spent once (the allowance's re-check on the row).
#    Only while U, read in the statement's snapshot, is within the cap: a cap lowered below
#    what was granted stops the spending.
#  - With none left there, one turn on the clients row grants QUEUE_GRANT places if U, with the
#    row's latest entries (Postgres re-reads a row it waited for), leaves room for all of them:
#    this create takes one and its shard keeps the rest. Shards read in the snapshot can only
#    miss an exit committed meanwhile, which over-counts: the cap is never exceeded.
#  - No room for a grant: no row, and `intake` takes the exact step (INTAKE_EXACT).
#  - Locks are taken in one order by every intake: a queue shard's row, the clients row, then
#    the month's spend row (the reservation). So a grant locks its shard's row (`mine`, in a
#    condition the clients row's update evaluates before locking it) and writes its places
#    there (`kept`, which `admitted` reads) before the reservation. Granting first and writing
#    the shard last deadlocked against a create of the same shard (sessions whose pids agree
#    modulo 64) that had spent a place and waited for the month's spend row.
#  - A grant needs its shard's row locked first, so only a row the statement's snapshot holds
#    can take one. A row committed after the snapshot (by another session of the same shard)
#    would be found only by `kept`'s upsert, which then waits for it holding the clients row:
#    against an exact create holding that row (`took` below locks the row it picks even when
#    it cannot spend it) and waiting for the clients row, a deadlock. With no row, the shard's
#    row is made with nothing on it (`seeded`, after the statement, holding no other row) and
#    this create takes the exact step; the shard's next create can grant.
#  - Without a cap there is nothing to decide: the entry goes on the session's shard (`entered`).
#    (Only at the instant a cap is first set can such an entry, made a moment before, go
#    unseen, as by any create that read no cap.)
def _capped(places: str, grant: str) -> str:
    """The counting above for `places` new jobs (SQL), granting `grant` places at a turn."""
    return f"""
took AS (
    UPDATE client_queue_counts SET allowance = allowance - {places}
    WHERE client_id = $2 AND shard = pg_backend_pid() % 64 AND allowance >= {places}
      AND $14::int IS NOT NULL
      AND (SELECT queue_entries FROM clients WHERE id = $2) + (SELECT n FROM shards) <= $14::int
    RETURNING 1
), mine AS (
    SELECT FROM client_queue_counts
    WHERE client_id = $2 AND shard = pg_backend_pid() % 64 AND NOT EXISTS (SELECT FROM took)
    FOR UPDATE
), granted AS (
    UPDATE clients SET queue_entries = queue_entries + {grant}
    WHERE id = $2 AND $14::int IS NOT NULL AND NOT EXISTS (SELECT FROM took)
      AND (SELECT count(*) FROM mine) = 1
      AND queue_entries + (SELECT n FROM shards) + {grant} <= $14::int
    RETURNING 1
), kept AS (
    INSERT INTO client_queue_counts AS q (client_id, shard, allowance)
    SELECT $2, pg_backend_pid() % 64, {grant} - {places} FROM granted
    ON CONFLICT (client_id, shard) DO UPDATE SET allowance = q.allowance + EXCLUDED.allowance
    RETURNING 1
), seeded AS (
    INSERT INTO client_queue_counts (client_id, shard)
    SELECT $2, pg_backend_pid() % 64
    WHERE $14::int IS NOT NULL AND NOT EXISTS (SELECT FROM took) AND NOT EXISTS (SELECT FROM mine)
    ON CONFLICT (client_id, shard) DO NOTHING
), entered AS (
    INSERT INTO client_queue_counts AS q (client_id, shard, entries)
    SELECT $2, pg_backend_pid() % 64, {places} WHERE $14::int IS NULL
    ON CONFLICT (client_id, shard) DO UPDATE SET entries = q.entries + EXCLUDED.entries
    RETURNING 1
), admitted AS (
    SELECT COALESCE(monthly_budget_usd, $15::numeric) AS budget FROM clients
    WHERE id = $2 AND (EXISTS (SELECT FROM took) OR EXISTS (SELECT FROM kept)
                       OR EXISTS (SELECT FROM entered))
)"""


INTAKE = _intake(_capped("1", str(QUEUE_GRANT)))

# `intake_many`'s: the same steps for $16 jobs, all or none. A grant is of at least as many
# places as the jobs; near the cap there is no exact step for several, so no row: each job
# then goes its own way (INTAKE, then INTAKE_EXACT).
INTAKE_MANY = _intake(
    _capped("$16::int", f"GREATEST({QUEUE_GRANT}, $16::int)"), amount=_MANY_AMOUNT, jobs=_MANY_JOBS
)

# Near the cap, one place at a time: a place granted to any shard and not taken yet (waiting
# for a create that holds its row, then re-checked), else one turn on the clients row for a
# single place, re-checked against its latest entries as above. No row: the queue is full. A
# grant committed after the statement's snapshot is counted but its places are not seen, so a
# refusal can come a moment early, as with a missed exit; never late.
INTAKE_EXACT = _intake("""
took AS (
    UPDATE client_queue_counts SET allowance = allowance - 1
    WHERE ctid = (
        SELECT ctid FROM client_queue_counts WHERE client_id = $2 AND allowance > 0
        LIMIT 1 FOR UPDATE
    ) AND (SELECT queue_entries FROM clients WHERE id = $2) + (SELECT n FROM shards) <= $14::int
    RETURNING 1
), counted AS (
    UPDATE clients SET queue_entries = queue_entries + 1
    WHERE id = $2 AND NOT EXISTS (SELECT FROM took)
      AND queue_entries + (SELECT n FROM shards) < $14::int
    RETURNING 1
), admitted AS (
    SELECT COALESCE(monthly_budget_usd, $15::numeric) AS budget FROM clients
    WHERE id = $2 AND (EXISTS (SELECT FROM took) OR EXISTS (SELECT FROM counted))
)""")

# The statement's refusal when the budget does not fit (SQLSTATE of intake_refused).
INTAKE_REFUSED = "FR001"
IDEMPOTENCY_INDEX = "uq_jobs_client_idempotency_key"

SELECT_BY_IDEMPOTENCY_KEY = f"""
SELECT {JOB_COLUMNS}, request_fingerprint FROM jobs
WHERE client_id = $1 AND idempotency_key = $2
"""

SELECT_JOB = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND client_id = $2"

SELECT_STATUS = "SELECT status FROM jobs WHERE id = $1 AND client_id = $2"


@dataclass(frozen=True, slots=True)
class NewJob:
    id: uuid.UUID
    client_id: uuid.UUID
    model: str
    input: dict[str, Any]
    metadata: dict[str, str]
    callback_url: str | None
    # What the job reserves against its client's monthly budget (app.billing).
    estimated_cost_usd: Decimal = Decimal(0)
    priority: int = PRIORITIES["normal"]
    start_timeout: float | None = None
    # The price of one billable unit for this input, fixed at acceptance.
    unit_price_usd: Decimal | None = None
    # The W3C traceparent of the request that made it (app.tracing); None with tracing off.
    trace_context: str | None = None


class BudgetRefused(Exception):
    """The job's estimate did not fit the month's budget; nothing was stored."""


class KeyTaken(Exception):
    """Another request stored a job with this Idempotency-Key first; nothing was stored."""


async def intake(
    pool: Pool,
    job: NewJob,
    *,
    key: str | None,
    fingerprint: bytes | None,
    max_queued_jobs: int | None,
    default_budget: Decimal | None,
) -> asyncpg.Record | None:
    """The stored job, or None when the client's queue is full (nothing stored). Raises
    BudgetRefused or KeyTaken, each having stored nothing either."""
    job_id, *columns = _job_columns(job)
    args = (job_id, job.client_id, *columns, key, fingerprint, max_queued_jobs, default_budget)
    try:
        row = await pool.fetchrow(INTAKE, *args)
        if row is None:
            # Too near the cap for a grant: place by place.
            row = await pool.fetchrow(INTAKE_EXACT, *args)
        return row
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name != IDEMPOTENCY_INDEX:
            raise
        raise KeyTaken from None
    except asyncpg.PostgresError as exc:
        if exc.sqlstate != INTAKE_REFUSED:
            raise
        raise BudgetRefused from None


async def intake_many(
    pool: Pool,
    client_id: uuid.UUID,
    jobs: list[tuple[NewJob, str | None, bytes | None]],
    *,
    max_queued_jobs: int | None,
    default_budget: Decimal | None,
) -> list[asyncpg.Record] | None:
    """Several jobs of one client, each with its Idempotency-Key and fingerprint, stored in
    one statement, all or none: their rows in the order given, or None when the statement took
    none of them (a full queue or too near its cap, a budget that does not fit them all, a key
    taken, or a deadlock over keys). Each then goes on its own (`intake`), which tells which of
    them was refused."""
    values = [(*_job_columns(job), key, fingerprint) for job, key, fingerprint in jobs]
    columns = [list(column) for column in zip(*values, strict=True)]
    try:
        rows = await pool.fetch(
            INTAKE_MANY,
            columns[0],
            client_id,
            *columns[1:],
            max_queued_jobs,
            default_budget,
            len(jobs),
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name != IDEMPOTENCY_INDEX:
            raise
        return None
    except asyncpg.DeadlockDetectedError:
        # Keys taken in another order by another process's statement at once: each alone.
        return None
    except asyncpg.PostgresError as exc:
        if exc.sqlstate != INTAKE_REFUSED:
            raise
        return None
    if not rows:
        return None
    by_id = {row["id"]: row for row in rows}
    return [by_id[job.id] for job, _, _ in jobs]


def _job_columns(job: NewJob) -> tuple[Any, ...]:
    """The job's values for the intake statements, its client aside: $1, then $3 to $11 (in
    INTAKE_MANY, each an array of the jobs' values)."""
    return (
        job.id,
        job.model,
        job.input,
        job.metadata,
        job.callback_url,
        job.estimated_cost_usd,
        job.priority,
        job.start_timeout,
        job.unit_price_usd,
        job.trace_context,
    )


COUNT_UNFINISHED = """
SELECT status, count(*) AS jobs FROM jobs
WHERE client_id = $1 AND status IN ('queued', 'submitted', 'running')
GROUP BY status
"""


async def count_unfinished(pool: Pool, client_id: uuid.UUID) -> dict[str, int]:
    """The client's unfinished jobs by status (queued, submitted, running)."""
    rows = await pool.fetch(COUNT_UNFINISHED, client_id)
    return {row["status"]: row["jobs"] for row in rows}


async def find_by_idempotency_key(
    pool: Pool, client_id: uuid.UUID, key: str
) -> asyncpg.Record | None:
    return await pool.fetchrow(SELECT_BY_IDEMPOTENCY_KEY, client_id, key)


async def get(pool: Pool, client_id: uuid.UUID, job_id: uuid.UUID) -> asyncpg.Record | None:
    return await pool.fetchrow(SELECT_JOB, job_id, client_id)


async def get_status(pool: Pool, client_id: uuid.UUID, job_id: uuid.UUID) -> str | None:
    status: str | None = await pool.fetchval(SELECT_STATUS, job_id, client_id)
    return status


@dataclass(frozen=True, slots=True)
class ListFilter:
    status: str | None = None
    model: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    # Jobs whose metadata holds every one of these pairs (the console's search). No index of its
    # own: rows are filtered along the keyset scan, which stops at the LIMIT.
    metadata: dict[str, str] | None = None
    # Keyset position: rows strictly older than (created_at, id), newest first.
    after: tuple[datetime, uuid.UUID] | None = None


async def list_page(
    pool: Pool, client_id: uuid.UUID, where: ListFilter, limit: int
) -> list[asyncpg.Record]:
    """Up to `limit` jobs, newest first. Served by ix_jobs_client_created or, with a status,
    ix_jobs_client_status_created; the row comparison keeps it an index range scan."""
    clauses = ["client_id = $1"]
    args: list[Any] = [client_id]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if where.status is not None:
        clauses.append(f"status = {arg(where.status)}")
    if where.model is not None:
        clauses.append(f"model = {arg(where.model)}")
    if where.created_after is not None:
        clauses.append(f"created_at > {arg(where.created_after)}")
    if where.created_before is not None:
        clauses.append(f"created_at < {arg(where.created_before)}")
    if where.metadata:
        clauses.append(f"metadata @> {arg(where.metadata)}::jsonb")
    if where.after is not None:
        created_at, job_id = where.after
        clauses.append(f"(created_at, id) < ({arg(created_at)}, {arg(job_id)})")
    sql = (
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE {' AND '.join(clauses)} "
        f"ORDER BY created_at DESC, id DESC LIMIT {arg(limit)}"
    )
    return await pool.fetch(sql, *args)


# State changes. Each is a compare-and-set: it names the statuses it may leave, and a row comes
# back only when this caller made the change, so racing writers (worker, reconciler, fal's
# callback, a client's cancel) can never both win. The returned row feeds the event payload.
TRANSITION_COLUMNS = (
    f"{JOB_COLUMNS}, client_id, updated_at, estimated_cost_usd, cost_usd, unit_price_usd, "
    "trace_context"
)
# clock_timestamp(), not now(): now() is when the transaction began, possibly before a racing
# transition took the row lock and committed. A transition's time (its event's `created_at`)
# must follow the one before it, since readers of a job's events page through them in that
# order; clock_timestamp() is read when the row is written, after the lock is held.

MARK_SUBMITTED = f"""
UPDATE jobs
SET status = 'submitted', fal_request_id = $2, fal_status_url = $3, fal_response_url = $4,
    fal_cancel_url = $5, submitted_at = clock_timestamp(), updated_at = clock_timestamp(),
    next_attempt_at = $6, locked_until = NULL, last_error = NULL
WHERE id = $1 AND status = 'queued' AND (fal_request_id IS NULL OR fal_request_id = $2)
RETURNING {TRANSITION_COLUMNS}
"""

# When the job moved on before its submission was recorded (canceled meanwhile, or fal's
# callback came first), keep fal's ids and URLs anyway: they are how we cancel or look it up.
ATTACH_FAL_REQUEST = """
UPDATE jobs
SET fal_request_id = COALESCE(fal_request_id, $2), fal_status_url = COALESCE(fal_status_url, $3),
    fal_response_url = COALESCE(fal_response_url, $4),
    fal_cancel_url = COALESCE(fal_cancel_url, $5),
    -- A job canceled while its submission was in flight has completed_at already: it was at
    -- fal no later than that (LEAST skips a NULL), so submitted_at <= completed_at holds.
    submitted_at = COALESCE(submitted_at, LEAST(now(), completed_at)),
    locked_until = CASE WHEN status = 'queued' THEN NULL ELSE locked_until END,
    updated_at = now()
WHERE id = $1
RETURNING status, fal_request_id
"""

MARK_RUNNING = f"""
UPDATE jobs
SET status = 'running', started_at = clock_timestamp(), updated_at = clock_timestamp(),
    next_attempt_at = $2, locked_until = NULL, last_error = NULL
WHERE id = $1 AND status = 'submitted'
RETURNING {TRANSITION_COLUMNS}
"""


def _with_event(
    transition: str,
    event_type: EventType,
    *,
    files: str | None = None,
    settles: bool = False,
    event_id: str | None = None,
) -> str:
    """`transition` (a compare-and-set returning TRANSITION_COLUMNS) with the event it writes
    and the event's deliveries, in one statement: no BEGIN and COMMIT round trips, and no second
    statement. A job that succeeds needs its `files` (see `job_view_sql`); a terminal one
    `settles` too, and comes back with `client_name` (the metrics'). The event's id is the next
    parameter unless `event_id` says where else it is; each row comes back with `deliveries`,
    how many the statement queued."""
    if event_id is None:
        number = max(int(n) for n in re.findall(r"\$(\d+)", f"{transition} {files}")) + 1
        event_id = f"${number}::uuid"
    recording = fanout.recording(
        source="moved",
        event_id=event_id,
        client_id="moved.client_id",
        job_id="moved.id",
        event_type=f"'{event_type}'",
        payload=event_body_sql(event_type, "moved.updated_at", job_view_sql("moved", files)),
        at="moved.updated_at",
        callback_url="moved.callback_url" if settles else "NULL::text",
    )
    settle = f"{billing.settle_step('moved').strip()}, " if settles else ""
    client_name = (
        ", (SELECT name FROM clients WHERE id = moved.client_id) AS client_name" if settles else ""
    )
    return f"""
WITH moved AS (
{transition.strip()}
), {settle}{recording.strip()}
SELECT moved.*, (SELECT count(*) FROM queued) AS deliveries{client_name} FROM moved
"""


MARK_SUBMITTED_WITH_EVENT = _with_event(MARK_SUBMITTED, "job.submitted")


def _returning_many(*more: str) -> str:
    """The RETURNING of a transition for several jobs: the jobs' columns, then `more`."""
    return ", ".join(
        [*(f"jobs.{column.strip()}" for column in TRANSITION_COLUMNS.split(",")), *more]
    )


# MARK_SUBMITTED for several jobs (app.jobs.transitions): each one's values a row of the arrays,
# its event's id the last. Row locks are taken in the arrays' order where the plan walks them
# (a nested loop on the primary key, as for a few dozen rows); a deadlock sends each job alone.
MARK_SUBMITTED_MANY_WITH_EVENT = _with_event(
    f"""
UPDATE jobs
SET status = 'submitted', fal_request_id = u.request_id, fal_status_url = u.status_url,
    fal_response_url = u.response_url, fal_cancel_url = u.cancel_url,
    submitted_at = clock_timestamp(), updated_at = clock_timestamp(),
    next_attempt_at = u.next_poll_at, locked_until = NULL, last_error = NULL
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
            $7::uuid[])
     AS u(id, request_id, status_url, response_url, cancel_url, next_poll_at, event_id)
WHERE jobs.id = u.id AND jobs.status = 'queued'
  AND (jobs.fal_request_id IS NULL OR jobs.fal_request_id = u.request_id)
RETURNING {_returning_many("u.event_id")}
""",
    "job.submitted",
    event_id="moved.event_id",
)
MARK_RUNNING_WITH_EVENT = _with_event(MARK_RUNNING, "job.running")

_MARK_SUCCEEDED = f"""
UPDATE jobs
SET status = 'succeeded', output = $2, fal_request_id = COALESCE(fal_request_id, $3),
    cost_usd = estimated_cost_usd, completed_at = clock_timestamp(),
    updated_at = clock_timestamp(),
    next_attempt_at = NULL, locked_until = NULL
WHERE id = $1 AND status IN ({{statuses}})
  AND (fal_request_id IS NULL OR $3::text IS NULL OR fal_request_id = $3)
RETURNING {TRANSITION_COLUMNS}
"""
MARK_SUCCEEDED = _MARK_SUCCEEDED.format(statuses="'queued', 'submitted', 'running'")
# fal's callback: a job still queued must read submitted first (the callback adopts it).
MARK_SUCCEEDED_AT_FAL = _MARK_SUCCEEDED.format(statuses="'submitted', 'running'")
# The same, settled, with its event, when the caller knows the model ($4, checked: no row if it
# is not the job's) and so the files of the output ($5; none copied yet).
MARK_SUCCEEDED_AT_FAL_WITH_EVENT = _with_event(
    MARK_SUCCEEDED_AT_FAL.replace("RETURNING", "  AND model = $4 AND files IS NULL\nRETURNING"),
    "job.succeeded",
    files="$5::jsonb",
    settles=True,
)

# MARK_SUCCEEDED_AT_FAL_WITH_EVENT for several jobs (app.jobs.transitions), settled: each one's
# values a row of the arrays, its event's id the last; row locks as above.
# The files are JSON text: a list in a jsonb[] parameter would be read as a dimension.
MARK_SUCCEEDED_AT_FAL_MANY_WITH_EVENT = _with_event(
    f"""
UPDATE jobs
SET status = 'succeeded', output = u.output,
    fal_request_id = COALESCE(jobs.fal_request_id, u.request_id),
    cost_usd = jobs.estimated_cost_usd, completed_at = clock_timestamp(),
    updated_at = clock_timestamp(),
    next_attempt_at = NULL, locked_until = NULL
FROM unnest($1::uuid[], $2::jsonb[], $3::text[], $4::text[], $5::text[], $6::uuid[])
     AS u(id, output, request_id, model, files, event_id)
WHERE jobs.id = u.id AND jobs.status IN ('submitted', 'running')
  AND (jobs.fal_request_id IS NULL OR u.request_id IS NULL OR jobs.fal_request_id = u.request_id)
  AND jobs.model = u.model AND jobs.files IS NULL
RETURNING {_returning_many("u.event_id", "u.files::jsonb AS output_files")}
""",
    "job.succeeded",
    files="moved.output_files",
    settles=True,
    event_id="moved.event_id",
)

# With owned outputs (app.outputs): fal's result is kept, and the job stays at fal's side of the
# line (running) until its files are copied. Due at once for the mirror loop; never claimed by
# reconciliation again (it has its answer). A duplicate callback finds the output there already.
RECEIVE_OUTPUT = """
UPDATE jobs
SET output = $2, billable_units = $3, fal_request_id = COALESCE(fal_request_id, $4),
    status = 'running', started_at = COALESCE(started_at, clock_timestamp()),
    updated_at = clock_timestamp(), next_attempt_at = now(), locked_until = NULL
WHERE id = $1 AND status IN ('submitted', 'running') AND output IS NULL
  AND (fal_request_id IS NULL OR $4::text IS NULL OR fal_request_id = $4)
RETURNING id
"""

# The copy is done (or given up on for now: `mirror_retry_at`): the job succeeds.
MARK_MIRRORED = f"""
UPDATE jobs
SET status = 'succeeded', files = $2, mirror_retry_at = $3,
    cost_usd = estimated_cost_usd, completed_at = clock_timestamp(),
    updated_at = clock_timestamp(), next_attempt_at = NULL, locked_until = NULL
WHERE id = $1 AND status = 'running' AND output IS NOT NULL
RETURNING {TRANSITION_COLUMNS}
"""

# A later copy of files that failed: not a state change, the job has succeeded already.
SET_MIRRORED_FILES = """
UPDATE jobs SET files = $2, mirror_retry_at = $3, updated_at = now()
WHERE id = $1 AND status = 'succeeded'
"""

MARK_FAILED = f"""
UPDATE jobs
SET status = 'failed', error = $2, fal_request_id = COALESCE(fal_request_id, $3), cost_usd = 0,
    completed_at = clock_timestamp(), updated_at = clock_timestamp(),
    next_attempt_at = NULL, locked_until = NULL
WHERE id = $1 AND status = ANY($4::text[])
  AND (fal_request_id IS NULL OR $3::text IS NULL OR fal_request_id = $3)
  AND output IS NULL  -- fal's answer is in: the job is its files' copy's to finish
RETURNING {TRANSITION_COLUMNS}
"""

MARK_CANCELED = f"""
UPDATE jobs
SET status = 'canceled', cost_usd = 0, completed_at = clock_timestamp(),
    updated_at = clock_timestamp(),
    next_attempt_at = NULL, locked_until = NULL
WHERE id = $1 AND client_id = $2 AND status = ANY($3::text[]) AND output IS NULL
RETURNING {TRANSITION_COLUMNS}
"""

# A terminal transition books the estimate as the cost (failed and canceled jobs cost 0);
# when fal said what it billed, the succeeded job's cost is set from that, in the same
# transaction, before the ledger is settled.
SET_BILLED_COST = """
UPDATE jobs SET cost_usd = $2, billable_units = $3 WHERE id = $1 AND status = 'succeeded'
"""

# Not a state change: look again later (a retryable submit, a poll that found fal still busy).
# Times are the database's (now() + seconds), the clock every claim compares against.
RESCHEDULE = """
UPDATE jobs SET next_attempt_at = now() + make_interval(secs => $2), locked_until = NULL,
    last_error = $3, updated_at = now()
WHERE id = $1 AND status = $4
  AND output IS NULL  -- a reconcile claim taken before fal's callback: the mirror's lease stays
"""

# An ambiguous submit: the job stays claimed until `$2`, giving fal's callback time to claim it
# before anyone submits again.
HOLD = """
UPDATE jobs SET locked_until = now() + make_interval(secs => $2), last_error = $3,
    updated_at = now()
WHERE id = $1 AND status = 'queued'
"""

# fal's callback said the result must be fetched: make the job due for the reconciler now.
DUE_NOW = """
UPDATE jobs SET next_attempt_at = now(), fal_request_id = COALESCE(fal_request_id, $2),
    updated_at = now()
WHERE id = $1 AND status IN ('queued', 'submitted', 'running')
  AND (fal_request_id IS NULL OR fal_request_id = $2)
RETURNING status
"""

SELECT_FOR_CALLBACK = "SELECT status, fal_request_id, model, trace_context FROM jobs WHERE id = $1"


SELECT_FOR_CANCEL = """
SELECT status, fal_cancel_url, fal_request_id FROM jobs WHERE id = $1 AND client_id = $2
"""


async def get_for_cancel(
    pool: Pool, client_id: uuid.UUID, job_id: uuid.UUID
) -> asyncpg.Record | None:
    return await pool.fetchrow(SELECT_FOR_CANCEL, job_id, client_id)
