"""SQL for clients' limits and the shared rate-limit state."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from app.clients.limits import LIMIT_NAMES
from app.db.pool import Pool

CLIENT_COLUMNS = (
    "id, name, created_at, requests_per_second, burst, max_endpoints, max_queued_jobs, "
    "max_in_flight, monthly_budget_usd, weight"
)

# NAME may also be a client's id: names are not unique (`keys create` twice with one name).
FIND_CLIENTS = f"""
SELECT {CLIENT_COLUMNS} FROM clients
WHERE name = $1 OR id::text = lower($1)
ORDER BY created_at, id
"""

LIST_CLIENTS = f"""
SELECT {CLIENT_COLUMNS},
       (SELECT count(*) FROM api_keys k WHERE k.client_id = c.id AND k.revoked_at IS NULL)
           AS active_keys
FROM clients c
ORDER BY created_at, id
"""

# Each limit changes only when given ($n true); given with NULL, it goes back to the default.
UPDATE_LIMITS = f"""
UPDATE clients SET
    requests_per_second = CASE WHEN $2 THEN $3::float8 ELSE requests_per_second END,
    burst = CASE WHEN $4 THEN $5::int ELSE burst END,
    max_endpoints = CASE WHEN $6 THEN $7::int ELSE max_endpoints END,
    max_queued_jobs = CASE WHEN $8 THEN $9::int ELSE max_queued_jobs END,
    max_in_flight = CASE WHEN $10 THEN $11::int ELSE max_in_flight END,
    monthly_budget_usd = CASE WHEN $12 THEN $13::numeric ELSE monthly_budget_usd END,
    weight = CASE WHEN $14 THEN COALESCE($15::int, 1) ELSE weight END
WHERE id = $1
RETURNING {CLIENT_COLUMNS}
"""

# GCRA, decided and recorded in one statement ($3: 1/rate, $4: burst/rate, both in seconds).
# Under concurrency the row lock orders the upserts and each sees its predecessor's TAT. A
# refused request leaves TAT where it was: refusals do not push the client's next slot away.
CONSUME = """
INSERT INTO rate_limits AS r (client_id, policy, tat, allowed)
VALUES ($1, $2, now() + make_interval(secs => $3), true)
ON CONFLICT (client_id, policy) DO UPDATE SET
    allowed = greatest(r.tat, now()) + make_interval(secs => $3)
              <= now() + make_interval(secs => $4),
    tat = CASE WHEN greatest(r.tat, now()) + make_interval(secs => $3)
                    <= now() + make_interval(secs => $4)
               THEN greatest(r.tat, now()) + make_interval(secs => $3)
               ELSE r.tat END
RETURNING extract(epoch FROM tat)::float8 AS tat, allowed,
          extract(epoch FROM now())::float8 AS now
"""


@dataclass(frozen=True, slots=True)
class RateState:
    tat: float
    now: float
    allowed: bool


async def find_clients(pool: Pool, name_or_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(FIND_CLIENTS, name_or_id)


async def list_clients(pool: Pool) -> list[asyncpg.Record]:
    return await pool.fetch(LIST_CLIENTS)


async def update_limits(
    pool: Pool, client_id: uuid.UUID, changes: dict[str, Any]
) -> asyncpg.Record | None:
    """`changes` maps limit names to new values (None: back to the default)."""
    args: list[Any] = [client_id]
    for name in LIMIT_NAMES:  # the order UPDATE_LIMITS takes its pairs of arguments in
        args += [name in changes, changes.get(name)]
    return await pool.fetchrow(UPDATE_LIMITS, *args)


async def consume(
    pool: Pool, client_id: uuid.UUID, policy: str, *, interval: float, tolerance: float
) -> RateState:
    row = await pool.fetchrow(CONSUME, client_id, policy, interval, tolerance)
    assert row is not None
    return RateState(tat=row["tat"], now=row["now"], allowed=row["allowed"])
