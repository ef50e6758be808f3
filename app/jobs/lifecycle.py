"""Job state changes and the events they write, one transaction each.

Every function here is a compare-and-set on the job row plus the insert of its event in the
same transaction (the outbox): either both are committed or neither. The commonest (to
`submitted`, to `running`, and fal's callback's success) are one statement with their event.
None comes back when the job was not in a state the change may leave — someone else got
there first.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from app import ids
from app.billing import service as billing
from app.db.pool import Connection, Pool
from app.db.wakeup import FREED, Wakeup
from app.events.payloads import event_body
from app.events.types import EventType
from app.fal.client import Submitted
from app.fal.outcomes import Outcome, Succeeded
from app.jobs import repository as sql
from app.jobs.models import JobStatus
from app.jobs.schemas import fal_files, job_view
from app.metrics import COST_USD, JOB_TRANSITIONS, JOBS_SETTLED, child
from app.webhooks import fanout

ACTIVE = [JobStatus.QUEUED, JobStatus.SUBMITTED, JobStatus.RUNNING]


@dataclass(frozen=True, slots=True)
class _Step:
    """One compare-and-set and the event it writes."""

    event_type: EventType
    statement: str
    args: tuple[Any, ...]
    billable_units: Decimal | None = None


@dataclass(frozen=True, slots=True)
class _Applied:
    row: asyncpg.Record
    settled: Settled | None
    deliveries: int


async def _transition(
    pool: Pool,
    wakeup: Wakeup | None,
    event_type: EventType,
    statement: str,
    *args: Any,
    billable_units: Decimal | None = None,
) -> asyncpg.Record | None:
    (row,) = await _in_one_transaction(
        pool, wakeup, [_Step(event_type, statement, args, billable_units)]
    )
    return row


async def _in_one_transaction(
    pool: Pool, wakeup: Wakeup | None, steps: list[_Step]
) -> list[asyncpg.Record | None]:
    """Each step in turn, in one transaction: the row of each that applied, else None."""
    applied: list[_Applied | None] = []
    async with pool.acquire() as conn:
        if len(steps) == 1 and steps[0].statement in _WRITES_ITS_EVENT:
            # One statement: its own transaction.
            applied.append(await _apply(conn, steps[0]))
        else:
            async with conn.transaction():
                for step in steps:
                    applied.append(await _apply(conn, step))
    _announce(applied, wakeup)
    return [None if done is None else done.row for done in applied]


def _announce(applied: Sequence[_Applied | None], wakeup: Wakeup | None) -> None:
    """What the committed steps tell the metrics and this process's loops."""
    for done in applied:
        if done is None:
            continue
        row, settled = done.row, done.settled
        child(JOB_TRANSITIONS, row["status"]).inc()
        if settled is not None:
            child(JOBS_SETTLED, settled.client, row["model"], row["status"]).inc()
            child(COST_USD, settled.client, row["model"]).inc(float(settled.cost))
        if wakeup is not None:
            if done.deliveries:
                wakeup.notify("deliver")
            if settled is not None:
                # A finished job frees a slot at fal: a submission held back for one need not
                # wait for the next poll (app.db.wakeup.FREED).
                wakeup.notify(FREED)


async def _apply(conn: Connection, step: _Step) -> _Applied | None:
    if step.statement in _WRITES_ITS_EVENT:
        row = await conn.fetchrow(step.statement, *step.args, ids.uuid7())
        if row is None:
            return None
        client = row.get("client_name")
        return _Applied(
            row, None if client is None else Settled(client, row["cost_usd"]), row["deliveries"]
        )
    settled: Settled | None = None
    # A terminal transition settles in its own statement unless fal said what it billed: the
    # cost from its units is worked out here, between the compare-and-set and the settle.
    settling = _SETTLING.get(step.statement) if step.billable_units is None else None
    row = await conn.fetchrow(settling or step.statement, *step.args)
    if row is None:
        return None
    if settling is not None:
        settled = Settled(row["client_name"], row["cost_usd"])
    elif JobStatus(row["status"]).is_terminal:
        # In the terminal compare-and-set's transaction: a job settles exactly once.
        settled = await _settle(conn, row, step.billable_units)
    at = row["updated_at"]
    deliveries = await fanout.record_event(
        conn,
        event_id=ids.uuid7(),
        client_id=row["client_id"],
        job_id=row["id"],
        event_type=step.event_type,
        payload=event_body(step.event_type, at, job_view(row)),
        at=at,
        callback_url=row["callback_url"],
    )
    return _Applied(row, settled, deliveries)


# The compare-and-sets with their event folded in: the payload rendered by the statement
# (app.jobs.schemas.job_view_sql), as the row it returns would be. The event's id is their last
# parameter.
_WRITES_ITS_EVENT = frozenset(
    {
        sql.MARK_SUBMITTED_WITH_EVENT,
        sql.MARK_RUNNING_WITH_EVENT,
        sql.MARK_SUCCEEDED_AT_FAL_WITH_EVENT,
    }
)

# The terminal compare-and-sets, each with the job's settle folded in (app.billing).
_SETTLING = {
    statement: billing.settling(statement)
    for statement in (
        sql.MARK_SUCCEEDED,
        sql.MARK_SUCCEEDED_AT_FAL,
        sql.MARK_MIRRORED,
        sql.MARK_FAILED,
        sql.MARK_CANCELED,
    )
}


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
    (row,) = await _in_one_transaction(
        pool, wakeup, [_submitted_step(job_id, submitted, next_poll_at)]
    )
    return row


async def mark_submitted_many(
    pool: Pool,
    submissions: list[tuple[uuid.UUID, Submitted, datetime]],
    *,
    wakeup: Wakeup | None,
) -> list[asyncpg.Record | None]:
    """`mark_submitted` for several jobs, in one statement (app.jobs.transitions): each job's
    row, in the order given, or None for one that had moved on."""
    # Row locks in one order (the jobs' ids), whichever statement takes them.
    ordered = sorted(submissions, key=lambda submission: submission[0])
    rows = await pool.fetch(
        sql.MARK_SUBMITTED_MANY_WITH_EVENT,
        [job_id for job_id, _, _ in ordered],
        [submitted.request_id for _, submitted, _ in ordered],
        [submitted.status_url for _, submitted, _ in ordered],
        [submitted.response_url for _, submitted, _ in ordered],
        [submitted.cancel_url for _, submitted, _ in ordered],
        [next_poll_at for _, _, next_poll_at in ordered],
        [ids.uuid7() for _ in ordered],
    )
    by_id = {row["id"]: row for row in rows}
    _announce([_Applied(row, None, row["deliveries"]) for row in rows], wakeup)
    return [by_id.get(job_id) for job_id, _, _ in submissions]


async def mark_succeeded_at_fal_many(
    pool: Pool,
    successes: list[tuple[uuid.UUID, Succeeded, str | None, str]],
    *,
    wakeup: Wakeup | None,
) -> list[asyncpg.Record | None]:
    """`finish` of several jobs at fal, each with fal's success, its request id and the model
    fal's callback named, none with billed units, in one statement, settled (app.jobs
    .transitions): each job's row, in the order given, or None for one that it left as it was
    (not at fal, another request's, another model)."""
    ordered = sorted(successes, key=lambda success: success[0])
    rows = await pool.fetch(
        sql.MARK_SUCCEEDED_AT_FAL_MANY_WITH_EVENT,
        [job_id for job_id, _, _, _ in ordered],
        [outcome.output for _, outcome, _, _ in ordered],
        [request_id for _, _, request_id, _ in ordered],
        [model for _, _, _, model in ordered],
        [orjson.dumps(fal_files(model, out.output)).decode() for _, out, _, model in ordered],
        [ids.uuid7() for _ in ordered],
    )
    by_id = {row["id"]: row for row in rows}
    _announce(
        [
            _Applied(row, Settled(row["client_name"], row["cost_usd"]), row["deliveries"])
            for row in rows
        ],
        wakeup,
    )
    return [by_id.get(job_id) for job_id, _, _, _ in successes]


def _submitted_step(job_id: uuid.UUID, submitted: Submitted, next_poll_at: datetime) -> _Step:
    return _Step(
        "job.submitted",
        sql.MARK_SUBMITTED_WITH_EVENT,
        (
            job_id,
            submitted.request_id,
            submitted.status_url,
            submitted.response_url,
            submitted.cancel_url,
            next_poll_at,
        ),
    )


async def adopt_and_finish(
    pool: Pool,
    job_id: uuid.UUID,
    submitted: Submitted,
    outcome: Outcome,
    *,
    model: str,
    next_poll_at: datetime,
    wakeup: Wakeup | None,
) -> asyncpg.Record | None:
    """fal's answer for a job whose submit is not recorded yet: record the submit, then the
    answer, in one transaction, so the job reads submitted before it is finished (its
    `job.submitted` before the terminal event). The finish's row, None if it changed nothing.
    Not for a success whose files are to be copied (`finish` with `mirror`).

    The answer is applied as to a job at fal (`model`, the job's, as read), which it is by then
    in this transaction, or was already if the submit's record came first: a success is then
    one statement with its event."""
    _, row = await _in_one_transaction(
        pool,
        wakeup,
        [
            _submitted_step(job_id, submitted, next_poll_at),
            _outcome_step(
                job_id,
                outcome,
                fal_request_id=submitted.request_id,
                at_fal_only=True,
                model=model,
            ),
        ],
    )
    return row


def _outcome_step(
    job_id: uuid.UUID,
    outcome: Outcome,
    *,
    fal_request_id: str | None,
    at_fal_only: bool = False,
    model: str | None = None,
) -> _Step:
    if isinstance(outcome, Succeeded):
        if at_fal_only and model is not None and outcome.billable_units is None:
            # fal's callback names the model (app.fal.callback_urls): the files are worked out
            # here and the event written by the statement, which checks the model is the job's.
            return _Step(
                "job.succeeded",
                sql.MARK_SUCCEEDED_AT_FAL_WITH_EVENT,
                (job_id, outcome.output, fal_request_id, model, fal_files(model, outcome.output)),
            )
        return _Step(
            "job.succeeded",
            sql.MARK_SUCCEEDED_AT_FAL if at_fal_only else sql.MARK_SUCCEEDED,
            (job_id, outcome.output, fal_request_id),
            outcome.billable_units,
        )
    statuses = [JobStatus.SUBMITTED, JobStatus.RUNNING] if at_fal_only else ACTIVE
    return _failed_step(job_id, outcome.type, outcome.message, fal_request_id, statuses)


def _failed_step(
    job_id: uuid.UUID,
    error_type: str,
    message: str,
    fal_request_id: str | None,
    from_statuses: list[JobStatus],
) -> _Step:
    error = {"type": error_type, "message": message}
    return _Step(
        "job.failed",
        sql.MARK_FAILED,
        (job_id, error, fal_request_id, [status.value for status in from_statuses]),
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
    return await _transition(
        pool, wakeup, "job.running", sql.MARK_RUNNING_WITH_EVENT, job_id, next_poll_at
    )


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
    (row,) = await _in_one_transaction(
        pool, wakeup, [_failed_step(job_id, error_type, message, fal_request_id, from_statuses)]
    )
    return row


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
    at_fal_only: bool = False,
    model: str | None = None,
) -> asyncpg.Record | None:
    """Record fal's answer. With `mirror` (an object store is configured), a success waits for
    its files to be copied (`receive_output`). `at_fal_only`: leave a queued job as it is
    (`receive_output` always does). `model`: the job's, if the caller knows it; with a
    different one nothing changes."""
    if isinstance(outcome, Succeeded) and mirror:
        return await receive_output(
            pool, job_id, outcome, fal_request_id=fal_request_id, wakeup=wakeup
        )
    (row,) = await _in_one_transaction(
        pool,
        wakeup,
        [
            _outcome_step(
                job_id,
                outcome,
                fal_request_id=fal_request_id,
                at_fal_only=at_fal_only,
                model=model,
            )
        ],
    )
    return row
