"""Submitting one claimed job to fal and recording what happened."""

from __future__ import annotations

import logging
import time

import asyncpg

from app import logs, tracing
from app.db.availability import retry_while_unavailable
from app.fal.client import (
    FalUnavailable,
    SubmitAmbiguous,
    SubmitNotSent,
    SubmitRejected,
    Submitted,
)
from app.jobs import lifecycle
from app.jobs.models import PRIORITIES, JobStatus
from app.jobs.schemas import job_id as public_job_id
from app.runtime import Runtime
from app.worker import backoff

log = logging.getLogger(__name__)
QUEUED = [JobStatus.QUEUED]
SubmitError = SubmitRejected | SubmitNotSent | SubmitAmbiguous


async def submit(runtime: Runtime, job: asyncpg.Record) -> None:
    """Send one claimed job to fal, then record fal's answer. The recording rides out a
    database outage for as long as the claim's lease lasts: fal has the request by then, and
    giving up would leave the job leased, and sent again, only when the lease runs out."""
    public_id = public_job_id(job["id"])
    logs.job_id.set(public_id)
    # A span of the job's trace, child of its POST /v1/jobs (app.tracing): the fal call and the
    # queries recording its answer are its children.
    with tracing.job_span(
        "submit job",
        job.get("trace_context"),
        attributes={
            "falrelay.job.id": public_id,
            "falrelay.model": job["model"],
            "falrelay.submit.attempt": job["attempts"],
        },
    ) as span:
        answer = await _submit(runtime, job)
        if not isinstance(answer, Submitted):
            tracing.set_error(span, type(answer).__name__, str(answer))


async def _submit(runtime: Runtime, job: asyncpg.Record) -> Submitted | SubmitError:
    claimed_at = time.monotonic()
    webhook_url = await runtime.callback_url(public_job_id(job["id"]), job["model"])
    answer: Submitted | SubmitError
    # fal's callback for the job, if it comes before the answer below is recorded, waits for
    # the record (app.jobs.transitions).
    with runtime.transitions.submitting(job["id"], attempt=job["attempts"]):
        try:
            answer = await runtime.fal.submit(
                job["model"],
                job["input"],
                webhook_url=webhook_url,
                low_priority=job["priority"] == PRIORITIES["low"],
                start_timeout=job["start_timeout"],
            )
        except (SubmitRejected, SubmitNotSent, SubmitAmbiguous) as exc:
            answer = exc
        lease_left = runtime.settings.submit_lease_seconds - (time.monotonic() - claimed_at)
        await retry_while_unavailable(
            lambda: _record(runtime, job, answer),
            for_seconds=lease_left - backoff.LEASE_MARGIN_SECONDS,
            rng=runtime.rng,
        )
    return answer


async def _record(runtime: Runtime, job: asyncpg.Record, answer: Submitted | SubmitError) -> None:
    job_id, attempt = job["id"], job["attempts"]
    settings = runtime.settings
    if isinstance(answer, SubmitRejected):
        await lifecycle.mark_failed(
            runtime.pool,
            job_id,
            error_type="submission_rejected",
            message=str(answer),
            from_statuses=QUEUED,
            wakeup=runtime.wakeup,
        )
        return
    if isinstance(answer, SubmitNotSent):
        if attempt >= settings.submit_max_attempts:
            await lifecycle.mark_failed(
                runtime.pool,
                job_id,
                error_type="submission_failed",
                message=f"fal did not accept the job in {attempt} attempts; last: {answer}",
                from_statuses=QUEUED,
                wakeup=runtime.wakeup,
            )
            return
        delay = backoff.submit_retry_delay(attempt, retry_after=answer.retry_after, rng=runtime.rng)
        await lifecycle.reschedule(
            runtime.pool, job_id, status=JobStatus.QUEUED, after=delay, last_error=str(answer)
        )
        return
    if isinstance(answer, SubmitAmbiguous):
        # fal may have the request. Keep the claim for a lease: if fal has it, its webhook
        # arrives meanwhile and finishes the job; otherwise the job is submitted again then.
        log.warning("ambiguous submit of job %s (attempt %d): %s", job_id, attempt, answer)
        if attempt >= settings.submit_max_attempts:
            await lifecycle.mark_failed(
                runtime.pool,
                job_id,
                error_type="submission_uncertain",
                message=f"fal's answer to the submission was lost {attempt} times; last: {answer}",
                from_statuses=QUEUED,
                wakeup=runtime.wakeup,
            )
            return
        await lifecycle.hold(
            runtime.pool, job_id, seconds=settings.submit_lease_seconds, last_error=str(answer)
        )
        return

    submitted = answer
    first_poll = backoff.poll_delay(
        0,
        webhook_mode=runtime.webhook_mode,
        first=settings.poll_interval_seconds,
        reconcile_after=settings.reconcile_after_seconds,
    )
    recorded = await runtime.transitions.submitted(
        job_id, submitted, next_poll_at=runtime.after(first_poll)
    )
    if recorded is not None:
        return
    # The job moved on while we were at fal: canceled by its client, or finished by fal's
    # webhook for an earlier (ambiguous) submission. Keep fal's ids where the job has none; a
    # request the job will not use must not keep running (and billing) at fal.
    state = await lifecycle.attach_fal_request(runtime.pool, job_id, submitted)
    unused = state is not None and (
        state[0] == JobStatus.CANCELED or state[1] != submitted.request_id
    )
    if unused:
        try:
            await runtime.fal.cancel(submitted.cancel_url)
        except FalUnavailable as exc:
            log.warning("could not cancel fal request %s: %s", submitted.request_id, exc)
