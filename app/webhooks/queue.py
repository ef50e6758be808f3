"""The delivery queue: claiming due deliveries and recording what their attempts did, each one
short statement or transaction, never across an HTTP call (the sending is
app.webhooks.delivery's, the loop app.worker.deliverer's). What the results mean for a delivery
and its endpoint is app.webhooks.policy's; the statements here store it.

A lease that runs out (its worker died) makes the row claimable again by anyone.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from app.db.pool import Pool
from app.webhooks import policy
from app.webhooks.delivery import AttemptResult
from app.webhooks.models import DeliveryStatus


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt, and what it made of its delivery (app.webhooks.policy.next_attempt)."""

    delivery_id: uuid.UUID
    attempt_count: int
    endpoint_id: uuid.UUID | None
    attempted_at: datetime
    result: AttemptResult
    status: DeliveryStatus
    next_attempt_at: datetime | None


# The delivery queue's own statements (leases, hand-backs, results) commit without waiting for
# their WAL to reach the disk. A flush per claim and per batch of results cost about 2.5 us of
# Postgres CPU per delivery each (measured alone, 50 rows a statement: the claim 16.9-17.0 us a
# row against 19.4-19.7, the recording 19.3-19.7 against 21.6-22.7), and its wait was in every
# claim's round trip. What a database crash can lose is the last fraction of a second of them
# (Postgres keeps the order: a later synchronous commit, a job's callback say, flushes them
# too). A lost lease or result is a delivery sent again once its lease is over, as when a
# worker dies between sending and recording: at least once, never lost; receivers deduplicate
# on `webhook-id`. Submissions stay synchronous: a lost record of one would submit the job to
# fal twice.
#
# A condition rather than a SET: set_config(..., true) lasts to the end of the statement's own
# transaction, and as a one-time filter (an uncorrelated subquery) it runs once, first, whatever
# the statement finds.
_COMMIT_ASYNCHRONOUSLY = "(SELECT set_config('synchronous_commit', 'off', true)) IS NOT NULL"

# Deliveries: claimed with everything sending needs (payload, target, secrets) in one round
# trip, skipping targets at their cap here, by fair share between clients over this process's
# slots, skipping endpoints whose breaker is open, and saying whether a due delivery was held
# back for what is in flight here. The statement is a function (migrations 0026, where its
# reasoning is, and 0030, which moved it onto the delivery queue), so that it runs on a plan
# made once per connection rather than planned anew on every call.
_CLAIM_DELIVERIES = (
    "SELECT * FROM claim_queued_deliveries($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    f" WHERE {_COMMIT_ASYNCHRONOUSLY}"
)

# Leased but not sent (beyond a target's cap, or given back by the worker that leased it):
# as if never claimed. The attempt count is the lease's compare-and-set token, as in _RECORD: a
# hand-back that comes after the lease ran out and another worker leased the row again must
# not end that worker's lease.
_RELEASE_DELIVERIES = f"""
UPDATE delivery_queue AS q SET locked_until = NULL, attempt_count = q.attempt_count - 1
FROM unnest($1::uuid[], $2::int[]) AS u(id, attempt_count)
WHERE q.id = ANY($1::uuid[]) AND q.id = u.id AND q.attempt_count = u.attempt_count
  AND {_COMMIT_ASYNCHRONOUSLY}
"""

# Results are recorded in batches (one transaction for many deliveries): under load, a commit
# per delivery would be the ceiling. Each attempt's log row (its id a UUIDv7 made by the
# database, migration 0025: one array fewer to send), its queue row (gone once the delivery
# succeeded or failed, due again later if it is to be retried), its delivery's new state in
# the log and the endpoints its 2xx recovered are one statement (data-modifying CTEs), so the
# common batch (all answered 2xx, or to callback_urls) is one round trip in its own implicit
# transaction rather than BEGIN, four statements and COMMIT.
#
# The queue row's attempt_count is the lease's compare-and-set token: a row whose lease ran out
# and was claimed again is left to its new worker, and the late first worker's result changes
# neither the queue nor the delivery, which is updated from the queue rows this batch ended or
# rescheduled. The log row is joined to deliveries: a delivery deleted meanwhile (its endpoint
# was) just has no log. Neither change to a delivery names a column an index holds (migration
# 0030): the queue row is deleted, or its due time set (a retry), and the delivery is updated
# in place, a HOT update where its page has room.
#
# The statement is a function (migration 0031, where the SQL is) whose plan reads each table
# by primary key, one probe per row of the batch, whatever the statistics: sent as a prepared
# statement, it ran on a generic plan made while a new deployment's tables were small, which
# scanned `deliveries` whole for each batch until the first ANALYZE.
#
# An answer closes the breaker; a 2xx also ends the failing period. Only endpoint rows that
# change are written (the hot path records successes to healthy endpoints).
_RECORD = (
    "SELECT record_delivery_results($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    f" WHERE {_COMMIT_ASYNCHRONOUSLY}"
)

# Answered, but not a 2xx (a 4xx, a 429): the endpoint is up, so its breaker closes; the
# failing period goes on (_ENDPOINTS_FAILED).
_ENDPOINTS_ANSWERED = """
UPDATE webhook_endpoints SET consecutive_failures = 0, breaker_open_until = NULL,
    updated_at = now()
WHERE id = ANY($1::uuid[]) AND consecutive_failures > 0
"""

# A failure starts (or continues) the endpoint's failing period; $7 of it (the policy's
# AUTO_DISABLE_AFTER) disables it, with $8 as the reason.
# $2 breaker failures per endpoint in the batch (app.webhooks.policy.breaker_failure): while
# closed they add up, and reaching $4 opens the breaker for $5 s; a failure while half-open
# (count already at $4 or more) is a failed probe: open again, the cool-down doubling per trip
# up to $6 s. Failures recorded while it is open are attempts sent before it opened: they
# change nothing. The cool-down is app.webhooks.policy.cooldown, computed here from each row's
# own count (reading the rows first would cost a round trip per batch): trip - 1 doublings,
# trip - 1 being count - $4 + 1, counted up to MAX_DOUBLINGS.
_ENDPOINTS_FAILED = f"""
UPDATE webhook_endpoints AS e SET
    failing_since = COALESCE(e.failing_since, $3),
    enabled = e.enabled AND NOT COALESCE(e.failing_since < $3 - $7::interval, false),
    disabled_reason = CASE WHEN e.enabled AND e.failing_since < $3 - $7::interval
                           THEN $8::text ELSE e.disabled_reason END,
    consecutive_failures = CASE
        WHEN u.n = 0 OR e.breaker_open_until > $3 THEN e.consecutive_failures
        -- Counted up to where the cool-down reaches its ceiling, so a probe failing for weeks
        -- cannot overflow power() below.
        WHEN e.consecutive_failures >= $4
            THEN LEAST(e.consecutive_failures + 1, $4 + {policy.MAX_DOUBLINGS})
        ELSE LEAST(e.consecutive_failures + u.n, $4) END,
    breaker_open_until = CASE
        WHEN u.n = 0 OR e.breaker_open_until > $3 THEN e.breaker_open_until
        WHEN e.consecutive_failures >= $4
            THEN $3 + make_interval(secs => LEAST(
                $5 * power(2, LEAST(e.consecutive_failures - $4 + 1, {policy.MAX_DOUBLINGS})),
                GREATEST($5, $6)))
        WHEN e.consecutive_failures + u.n >= $4 THEN $3 + make_interval(secs => $5)
        ELSE e.breaker_open_until END,
    updated_at = now()
FROM unnest($1::uuid[], $2::int[]) AS u(id, n)
WHERE e.id = u.id
"""

# A 410: disabled, $2 the reason (the policy's GONE_REASON).
_ENDPOINTS_GONE = """
UPDATE webhook_endpoints SET enabled = false, updated_at = now(), disabled_reason = $2
WHERE id = ANY($1::uuid[]) AND enabled
"""


@dataclass(frozen=True, slots=True)
class DeliveryClaim:
    rows: list[asyncpg.Record]
    # A due delivery was skipped for what is in flight here (see migration 0026).
    held_back: bool


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
) -> DeliveryClaim:
    """Lease up to `limit` due deliveries, skipping `saturated` targets, by fair share between
    clients over `capacity` slots (`in_flight` per client here, `reserve` held back for
    clients with none), or first due first with `fair_share` off. Each row's
    `trace_context` is its job's with `traced`, else NULL."""
    rows = await pool.fetch(
        _CLAIM_DELIVERIES,
        limit,
        lease,
        saturated,
        list(in_flight),
        list(in_flight.values()),
        capacity,
        reserve,
        fair_share,
        traced,
    )
    return DeliveryClaim(
        rows=[row for row in rows if row["id"] is not None], held_back=rows[0]["held_back"]
    )


async def release_deliveries(pool: Pool, rows: Sequence[asyncpg.Record]) -> None:
    """Hand back claimed `rows` unsent, each only while its lease is still the one claimed."""
    await pool.execute(
        _RELEASE_DELIVERIES, [row["id"] for row in rows], [row["attempt_count"] for row in rows]
    )


async def record(
    pool: Pool,
    batch: Sequence[Outcome],
    *,
    now: datetime,
    breaker_failures: int,
    breaker_cooldown: float,
) -> None:
    """Store a batch of attempts in one transaction: each attempt's log row, each delivery's
    new state (compare-and-set on its attempt count), and what the batch does to its
    endpoints (app.webhooks.policy.endpoint_changes): recovered, answered, failed (the
    failing period, auto-disabling, the breaker over `breaker_failures` and
    `breaker_cooldown`), gone."""
    rows = [
        (
            o.delivery_id,
            o.attempt_count,
            o.status.value,
            o.next_attempt_at,
            o.attempted_at,
            o.result.duration_ms,
            o.result.status_code,
            o.result.error,
            o.result.response_body,
        )
        for o in batch
    ]
    changes = policy.endpoint_changes((o.endpoint_id, o.result) for o in batch)
    args = (*_columns(rows, 9), list(changes.recovered))
    if not (changes.answered or changes.failed or changes.gone):
        await pool.execute(_RECORD, *args)
        return
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_RECORD, *args)
        if changes.answered:
            await conn.execute(_ENDPOINTS_ANSWERED, list(changes.answered))
        if changes.failed:
            await conn.execute(
                _ENDPOINTS_FAILED,
                list(changes.failed),
                list(changes.failed.values()),
                now,
                breaker_failures,
                breaker_cooldown,
                policy.MAX_COOLDOWN_SECONDS,
                policy.AUTO_DISABLE_AFTER,
                policy.AUTO_DISABLE_REASON,
            )
        if changes.gone:
            await conn.execute(_ENDPOINTS_GONE, list(changes.gone), policy.GONE_REASON)


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows → one list per column, for `unnest($1::..[], $2::..[], ...)`."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * width
