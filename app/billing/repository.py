"""SQL for the monthly ledger and the usage figures. Private to `app.billing`."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Literal

import asyncpg

from app.db.pool import Connection, Pool

# The client's monthly budget: its own, else the operator's default (`$2`); NULL is unlimited.
SELECT_BUDGET = """
SELECT COALESCE(monthly_budget_usd, $2::numeric) FROM clients WHERE id = $1
"""


# The reservation, as one compare-and-set on the client's month: its row 0 is locked by the
# upsert, and the WHERE of DO UPDATE sees its latest committed figures, so creates racing for
# the last dollar are decided one after the other and none can overspend. A first job of the
# month inserts row 0 only if its estimate fits. No row back: refused. The shards (1-64) are
# read in the statement's snapshot: for a client with a budget they hold only settles (see
# `settling`), each of which lowers what the month used, so one committed meanwhile and missed
# makes the check stricter, never looser.
#
# Without a budget there is nothing to decide, so nothing to take turns on: the reservation goes
# to the session's own shard, like a settle, and a client's creates wait for no one's commit on
# their month. (Only at the instant a budget is first set can such a reservation, made a moment
# before, go unseen, as it can by any create that read no budget.)
#
# It runs as a step of the job's intake statement (app.jobs.repository.INTAKE), which names its
# inputs: the client, the amount, the budget (NULL: unlimited) and the rows it depends on
# (`source`). The month is the UTC month of now(), the instant the job's created_at defaults to.
def reserve_step(*, client: str, amount: str, budget: str, source: str) -> str:
    shards = _SHARDS.format(client=client)
    return f"""
    INSERT INTO client_spend AS s (client_id, month, shard, reserved_usd)
    SELECT {client}, (date_trunc('month', now() AT TIME ZONE 'UTC'))::date,
           CASE WHEN {budget} IS NULL THEN 1 + pg_backend_pid() % 64 ELSE 0 END, {amount}
    FROM {source} WHERE {budget} IS NULL OR {amount} + {shards} <= {budget}
    ON CONFLICT (client_id, month, shard) DO UPDATE
    SET reserved_usd = s.reserved_usd + EXCLUDED.reserved_usd, updated_at = now()
    WHERE {budget} IS NULL OR s.spent_usd + s.reserved_usd + EXCLUDED.reserved_usd + {shards}
        <= {budget}
    RETURNING true AS ok
    """


# What a client's month has on its shards (1-64), to add to row 0's figures.
_SHARDS = """(
        SELECT COALESCE(sum(o.spent_usd + o.reserved_usd), 0) FROM client_spend o
        WHERE o.client_id = {client}
          AND o.month = (date_trunc('month', now() AT TIME ZONE 'UTC'))::date AND o.shard <> 0
    )"""


SELECT_MONTH = """
SELECT sum(reserved_usd) AS reserved_usd, sum(spent_usd) AS spent_usd FROM client_spend
WHERE client_id = $1 AND month = $2
HAVING count(*) > 0
"""

# A finished job with what fal billed: its estimate leaves `reserved`, its cost joins `spent`,
# on row 0, as that cost may exceed the estimate (and so must be seen by every reservation
# after it). Row 0 may not be there yet: a client without a budget reserves on its shards.
SETTLE = """
INSERT INTO client_spend AS s (client_id, month, shard, reserved_usd, spent_usd)
VALUES ($1, $2, 0, -$3::numeric, $4)
ON CONFLICT (client_id, month, shard) DO UPDATE
SET reserved_usd = s.reserved_usd - $3::numeric, spent_usd = s.spent_usd + $4::numeric,
    updated_at = now()
RETURNING (SELECT name FROM clients WHERE id = $1)
"""


def settle_step(source: str) -> str:
    """The settle of each job row in `source` (terminal, with the cost its transition booked),
    as a step `spend` for a statement's WITH list. Its cost is never more than the estimate it
    releases, so it goes on the session's own shard (migration 0018), where finishing jobs of
    one client do not wait for each other."""
    # Summed by client and month: one statement may settle several jobs of one (an upsert
    # may not touch a row twice).
    return f"""
    spend AS (
        INSERT INTO client_spend AS s (client_id, month, shard, reserved_usd, spent_usd)
        SELECT client_id, date_trunc('month', created_at AT TIME ZONE 'UTC')::date,
               1 + pg_backend_pid() % 64, -sum(estimated_cost_usd), sum(cost_usd)
        FROM {source}
        GROUP BY client_id, date_trunc('month', created_at AT TIME ZONE 'UTC')::date
        ON CONFLICT (client_id, month, shard) DO UPDATE
        SET reserved_usd = s.reserved_usd + EXCLUDED.reserved_usd,
            spent_usd = s.spent_usd + EXCLUDED.spent_usd, updated_at = now()
    )"""


def settling(transition: str) -> str:
    """`transition` (a terminal compare-and-set returning the job's row) with the job's settle in
    the same statement, fed by the row the compare-and-set returned, so it runs exactly when the
    transition does (`settle_step`). The row comes back with `client_name` (the metrics')."""
    return f"""
WITH moved AS (
{transition.strip()}
), {settle_step("moved").strip()}
SELECT moved.*, (SELECT name FROM clients WHERE id = moved.client_id) AS client_name FROM moved
"""


async def budget(
    conn: Connection | Pool, client_id: uuid.UUID, default: Decimal | None
) -> Decimal | None:
    value: Decimal | None = await conn.fetchval(SELECT_BUDGET, client_id, default)
    return value


async def month_figures(
    conn: Connection | Pool, client_id: uuid.UUID, month: date
) -> tuple[Decimal, Decimal]:
    """(reserved, spent) of the client's month."""
    row = await conn.fetchrow(SELECT_MONTH, client_id, month)
    if row is None:
        return Decimal(0), Decimal(0)
    return row["reserved_usd"], row["spent_usd"]


async def settle(
    conn: Connection, client_id: uuid.UUID, month: date, reserved: Decimal, cost: Decimal
) -> str:
    """The client's name, for the metrics."""
    name: str = await conn.fetchval(SETTLE, client_id, month, reserved, cost)
    return name


# Usage, from the jobs themselves (the ledger is the budget's lock, the jobs are the record):
# a job counts in the range when it was created in it. A job's images are those of its output;
# its cost is final once it is finished (`cost_usd`), and until then its estimate is reserved.
# One scan of ix_jobs_client_created over the range.
_USAGE_ROWS = """
SELECT {key} AS key,
       count(*) AS jobs,
       COALESCE(sum(jsonb_array_length(output -> 'images'))
                FILTER (WHERE status = 'succeeded'
                        AND jsonb_typeof(output -> 'images') = 'array'), 0) AS images,
       COALESCE(sum(cost_usd), 0) AS cost_usd,
       COALESCE(sum(estimated_cost_usd) FILTER (WHERE cost_usd IS NULL), 0) AS reserved_usd
FROM jobs
WHERE client_id = $1 AND created_at >= $2 AND created_at < $3
GROUP BY 1 ORDER BY 1
"""
_GROUP_KEYS = {
    "day": "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    "model": "model",
}
GroupBy = Literal["day", "model"]


async def usage_rows(
    pool: Pool, client_id: uuid.UUID, start: datetime, end: datetime, group_by: GroupBy
) -> list[asyncpg.Record]:
    return await pool.fetch(_USAGE_ROWS.format(key=_GROUP_KEYS[group_by]), client_id, start, end)


# The console's chart: what finished jobs cost, per UTC day and model.
SPEND_BY_DAY_AND_MODEL = """
SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, model,
       COALESCE(sum(cost_usd), 0) AS amount
FROM jobs
WHERE client_id = $1 AND created_at >= $2 AND created_at < $3
GROUP BY 1, 2 ORDER BY 1, 2
"""


async def spend_by_day_and_model(
    pool: Pool, client_id: uuid.UUID, start: datetime, end: datetime
) -> list[asyncpg.Record]:
    return await pool.fetch(SPEND_BY_DAY_AND_MODEL, client_id, start, end)
