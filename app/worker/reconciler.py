"""Finishing jobs at fal whose callback has not come (or never will: poll mode)."""

from __future__ import annotations

import logging
from datetime import timedelta

import asyncpg

from app import logs, tracing
from app.db.availability import retry_while_unavailable
from app.fal import outcomes
from app.fal.client import FalRequestUnknown, FalUnavailable
from app.jobs import lifecycle
from app.jobs.models import JobStatus
from app.jobs.schemas import job_id as public_job_id
from app.runtime import Runtime
from app.worker import backoff

log = logging.getLogger(__name__)

EXPIRED = "fal no longer knows this request; it keeps results for about an hour after completion"


async def reconcile(runtime: Runtime, job: asyncpg.Record) -> None:
    """Ask fal about one claimed job and record the answer: still waiting, running, or done.

    A database outage while recording repeats the step (asking fal again is harmless) until
    the claim's lease is nearly over, rather than leaving the job leased until it runs out."""
    public_id = public_job_id(job["id"])
    logs.job_id.set(public_id)
    lease = runtime.settings.reconcile_lease_seconds
    # A span of the job's trace (app.tracing): each look at fal is one, with its calls inside.
    with tracing.job_span(
        "reconcile job",
        job.get("trace_context"),
        attributes={"falrelay.job.id": public_id, "falrelay.reconcile.poll": job["polls"]},
    ):
        await retry_while_unavailable(
            lambda: _reconcile(runtime, job),
            for_seconds=lease - backoff.LEASE_MARGIN_SECONDS,
            rng=runtime.rng,
        )


async def _reconcile(runtime: Runtime, job: asyncpg.Record) -> None:
    job_id, status = job["id"], JobStatus(job["status"])
    request_id = job["fal_request_id"]
    settings = runtime.settings
    poll_in = backoff.poll_delay(
        job["polls"],
        webhook_mode=runtime.webhook_mode,
        first=settings.poll_interval_seconds,
        reconcile_after=settings.reconcile_after_seconds,
    )
    next_poll = runtime.after(poll_in)

    if job["submitted_at"] + timedelta(seconds=settings.job_timeout_seconds) < runtime.now():
        await _time_out(runtime, job)
        return

    try:
        fal_status = await runtime.fal.status(job["fal_status_url"])
        if fal_status.status == "IN_QUEUE":
            await lifecycle.reschedule(
                runtime.pool, job_id, status=status, after=poll_in, last_error=None
            )
            return
        if fal_status.status == "IN_PROGRESS":
            if status == JobStatus.SUBMITTED:
                await lifecycle.mark_running(
                    runtime.pool, job_id, next_poll_at=next_poll, wakeup=runtime.wakeup
                )
                return
            await lifecycle.reschedule(
                runtime.pool, job_id, status=status, after=poll_in, last_error=None
            )
            return
        result = await runtime.fal.result(job["fal_response_url"])
    except FalRequestUnknown:
        await lifecycle.mark_failed(
            runtime.pool,
            job_id,
            error_type="result_unavailable",
            message=EXPIRED,
            wakeup=runtime.wakeup,
        )
        return
    except FalUnavailable as exc:
        await lifecycle.reschedule(
            runtime.pool, job_id, status=status, after=poll_in, last_error=str(exc)
        )
        return
    await lifecycle.finish(
        runtime.pool,
        job_id,
        outcomes.from_result(result),
        fal_request_id=request_id,
        wakeup=runtime.wakeup,
        mirror=runtime.store is not None,
    )


async def _time_out(runtime: Runtime, job: asyncpg.Record) -> None:
    hours = runtime.settings.job_timeout_seconds / 3600
    failed = await lifecycle.mark_failed(
        runtime.pool,
        job["id"],
        error_type="timeout",
        message=f"fal did not finish the job within {hours:g} h",
        wakeup=runtime.wakeup,
    )
    if failed is not None and job["fal_cancel_url"]:
        try:
            await runtime.fal.cancel(job["fal_cancel_url"])
        except FalUnavailable as exc:
            log.warning("could not cancel timed-out fal request %s: %s", job["fal_request_id"], exc)
