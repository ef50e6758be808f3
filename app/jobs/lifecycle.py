"""Job state changes and the events they write, one transaction each.

Every function here is a compare-and-set on the job row plus the insert of its event in the
same transaction (the outbox): either both are committed or neither. None comes back when the
job was not in a state the change may leave — someone else got there first.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from app import ids
from app.billing import service as billing
from app.db.pool import Connection, Pool
from app.db.wakeup import Wakeup
from app.events.payloads import event_body
from app.events.types import EventType
from app.fal.client import Submitted
from app.fal.outcomes import Outcome, Succeeded
from app.jobs import repository as sql
from app.jobs.models import JobStatus
from app.jobs.schemas import job_view
from app.metrics import COST_USD, JOB_TRANSITIONS, JOBS_SETTLED
from app.webhooks import fanout

ACTIVE = [JobStatus.QUEUED, JobStatus.SUBMITTED, JobStatus.RUNNING]


async def _transition(
    pool: Pool,
    wakeup: Wakeup | None,
    event_type: EventType,
    statement: str,
    *args: Any,
    billable_units: Decimal | None = None,
) -> asyncpg.Record | None:
    settled: Settled | None = None
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(statement, *args)
        if row is None:
            return None
        if JobStatus(row["status"]).is_terminal:
            # In the terminal compare-and-set's transaction: a job settles exactly once.
            settled = await _settle(conn, row, billable_units)
        at = row["updated_at"]
        queued = await fanout.record_event(
            conn,
            event_id=ids.uuid7(),
            client_id=row["client_id"],
            job_id=row["id"],
            event_type=event_type,
            payload=event_body(event_type, at, job_view(row)),
            at=at,
            callback_url=row["callback_url"],
        )
    JOB_TRANSITIONS.labels(row["status"]).inc()
    if settled is not None:
        JOBS_SETTLED.labels(settled.client, row["model"], row["status"]).inc()
        COST_USD.labels(settled.client, row["model"]).inc(float(settled.cost))
    if wakeup is not None:
        if queued:
            wakeup.notify("deliver")
        if settled is not None:
            # A finished job frees a slot at fal: the next submission need not wait for a poll.
            wakeup.notify("submit")
    return row


@dataclass(frozen=True, slots=True)
class Settled:
    client: str  # the client's name, for the metrics
    cost: Decimal


async def _settle(conn: Connection, row: asyncpg.Record, billable_units: Decimal | None) -> Settled:
    """Turn the job's reservation into its final cost: what fal billed when it said (a
    succeeded job), else what the terminal statement booked (the estimate, or 0)."""
    cost: Decimal = row["cost_usd"]
    if billable_units is not None and row["status"] == JobStatus.SUCCEEDED:
        cost = billing.final_cost(row["model"], row["input"], row["unit_price_usd"], billable_units)
        await conn.execute(sql.SET_BILLED_COST, row["id"], cost, billable_units)
    client = await billing.settle(
        conn, row["client_id"], row["created_at"], row["estimated_cost_usd"], cost
    )
    return Settled(client, cost)


async def mark_submitted(
    pool: Pool,
    job_id: uuid.UUID,
    submitted: Submitted,
    *,
    next_poll_at: datetime,
    wakeup: Wakeup | None,
) -> asyncpg.Record | None:
    return await _transition(
        pool,
        wakeup,
        "job.submitted",
        sql.MARK_SUBMITTED,
        job_id,
        submitted.request_id,
        submitted.status_url,
        submitted.response_url,
        submitted.cancel_url,
        next_poll_at,
    )


async def attach_fal_request(
    pool: Pool, job_id: uuid.UUID, submitted: Submitted
) -> tuple[str, str | None] | None:
    """(status, fal_request_id) after keeping fal's ids on a job that has moved on."""
    row = await pool.fetchrow(
        sql.ATTACH_FAL_REQUEST,
        job_id,
        submitted.request_id,
        submitted.status_url,
        submitted.response_url,
        submitted.cancel_url,
    )
    return None if row is None else (row["status"], row["fal_request_id"])


async def mark_running(
    pool: Pool, job_id: uuid.UUID, *, next_poll_at: datetime, wakeup: Wakeup | None
) -> asyncpg.Record | None:
    return await _transition(pool, wakeup, "job.running", sql.MARK_RUNNING, job_id, next_poll_at)


async def mark_succeeded(
    pool: Pool,
    job_id: uuid.UUID,
    output: Any,
    *,
    fal_request_id: str | None,
    wakeup: Wakeup | None,
    billable_units: Decimal | None = None,
) -> asyncpg.Record | None:
    """`billable_units`: fal's `X-Fal-Billable-Units` for the request, when it sent one."""
    return await _transition(
        pool,
        wakeup,
        "job.succeeded",
        sql.MARK_SUCCEEDED,
        job_id,
        output,
        fal_request_id,
        billable_units=billable_units,
    )


async def receive_output(
    pool: Pool,
    job_id: uuid.UUID,
    outcome: Succeeded,
    *,
    fal_request_id: str | None,
    wakeup: Wakeup | None,
) -> asyncpg.Record | None:
    """Keep fal's result for the mirror loop, which copies its files and then marks the job
    succeeded (`mark_mirrored`). No event: to a client the job is still running."""
    row = await pool.fetchrow(
        sql.RECEIVE_OUTPUT, job_id, outcome.output, outcome.billable_units, fal_request_id
    )
    if row is not None and wakeup is not None:
        wakeup.notify("mirror")
    return row


async def mark_mirrored(
    pool: Pool,
    job_id: uuid.UUID,
    files: list[dict[str, Any]] | None,
    *,
    retry_at: datetime | None,
    billable_units: Decimal | None,
    wakeup: Wakeup | None,
) -> asyncpg.Record | None:
    """The job's files are copied (or, with `retry_at`, some will be tried again): it succeeds,
    and its `job.succeeded` carries our URLs."""
    return await _transition(
        pool,
        wakeup,
        "job.succeeded",
        sql.MARK_MIRRORED,
        job_id,
        files,
        retry_at,
        billable_units=billable_units,
    )


async def set_mirrored_files(
    pool: Pool,
    job_id: uuid.UUID,
    files: list[dict[str, Any]] | None,
    *,
    retry_at: datetime | None,
) -> bool:
    """False when the job is gone (deleted while its copy was retried)."""
    status: str = await pool.execute(sql.SET_MIRRORED_FILES, job_id, files, retry_at)
    return status.endswith(" 1")


async def mark_failed(
    pool: Pool,
    job_id: uuid.UUID,
    *,
    error_type: str,
    message: str,
    fal_request_id: str | None = None,
    from_statuses: list[JobStatus] = ACTIVE,
    wakeup: Wakeup | None,
) -> asyncpg.Record | None:
    error = {"type": error_type, "message": message}
    return await _transition(
        pool,
        wakeup,
        "job.failed",
        sql.MARK_FAILED,
        job_id,
        error,
        fal_request_id,
        [status.value for status in from_statuses],
    )


async def mark_canceled(
    pool: Pool,
    client_id: uuid.UUID,
    job_id: uuid.UUID,
    *,
    from_statuses: list[JobStatus],
    wakeup: Wakeup | None,
) -> asyncpg.Record | None:
    return await _transition(
        pool,
        wakeup,
        "job.canceled",
        sql.MARK_CANCELED,
        job_id,
        client_id,
        [status.value for status in from_statuses],
    )


async def reschedule(
    pool: Pool, job_id: uuid.UUID, *, status: JobStatus, after: float, last_error: str | None
) -> None:
    """Look again in `after` seconds (a retryable submit, a poll that found fal busy)."""
    await pool.execute(sql.RESCHEDULE, job_id, after, last_error, status.value)


async def hold(pool: Pool, job_id: uuid.UUID, *, seconds: float, last_error: str) -> None:
    await pool.execute(sql.HOLD, job_id, seconds, last_error)


async def make_due(pool: Pool, job_id: uuid.UUID, fal_request_id: str) -> str | None:
    status: str | None = await pool.fetchval(sql.DUE_NOW, job_id, fal_request_id)
    return status


async def finish(
    pool: Pool,
    job_id: uuid.UUID,
    outcome: Outcome,
    *,
    fal_request_id: str | None,
    wakeup: Wakeup | None,
    mirror: bool = False,
) -> asyncpg.Record | None:
    """Record fal's answer. With `mirror` (an object store is configured), a success waits for
    its files to be copied (`receive_output`)."""
    if isinstance(outcome, Succeeded) and mirror:
        return await receive_output(
            pool, job_id, outcome, fal_request_id=fal_request_id, wakeup=wakeup
        )
    if isinstance(outcome, Succeeded):
        return await mark_succeeded(
            pool,
            job_id,
            outcome.output,
            fal_request_id=fal_request_id,
            wakeup=wakeup,
            billable_units=outcome.billable_units,
        )
    return await mark_failed(
        pool,
        job_id,
        error_type=outcome.type,
        message=outcome.message,
        fal_request_id=fal_request_id,
        wakeup=wakeup,
    )
