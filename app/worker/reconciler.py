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
from app.worker import backoff
from app.worker.context import WorkerContext

log = logging.getLogger(__name__)

EXPIRED = "fal no longer knows this request; it keeps results for about an hour after completion"


async def reconcile(ctx: WorkerContext, job: asyncpg.Record) -> None:
    """Ask fal about one claimed job and record the answer: still waiting, running, or done.

    A database outage while recording repeats the step (asking fal again is harmless) until
    the claim's lease is nearly over, rather than leaving the job leased until it runs out."""
    public_id = public_job_id(job["id"])
    logs.job_id.set(public_id)
    lease = ctx.settings.reconcile_lease_seconds
    # A span of the job's trace (app.tracing): each look at fal is one, with its calls inside.
    with tracing.job_span(
        "reconcile job",
        job.get("trace_context"),
        attributes={"falrelay.job.id": public_id, "falrelay.reconcile.poll": job["polls"]},
    ):
        await retry_while_unavailable(
            lambda: _reconcile(ctx, job),
            for_seconds=lease - backoff.LEASE_MARGIN_SECONDS,
            rng=ctx.rng,
        )


async def _reconcile(ctx: WorkerContext, job: asyncpg.Record) -> None:
    job_id, status = job["id"], JobStatus(job["status"])
    request_id = job["fal_request_id"]
    settings = ctx.settings
    poll_in = backoff.poll_delay(
        job["polls"],
        webhook_mode=ctx.webhook_mode,
        first=settings.poll_interval_seconds,
        reconcile_after=settings.reconcile_after_seconds,
    )
    next_poll = ctx.after(poll_in)

    if job["submitted_at"] + timedelta(seconds=settings.job_timeout_seconds) < ctx.now():
        await _time_out(ctx, job)
        return

    try:
        fal_status = await ctx.fal.status(job["fal_status_url"])
        if fal_status.status == "IN_QUEUE":
            await lifecycle.reschedule(
                ctx.pool, job_id, status=status, after=poll_in, last_error=None
            )
            return
        if fal_status.status == "IN_PROGRESS":
            if status == JobStatus.SUBMITTED:
                await lifecycle.mark_running(
                    ctx.pool, job_id, next_poll_at=next_poll, wakeup=ctx.wakeup
                )
                return
            await lifecycle.reschedule(
                ctx.pool, job_id, status=status, after=poll_in, last_error=None
            )
            return
        result = await ctx.fal.result(job["fal_response_url"])
    except FalRequestUnknown:
        await lifecycle.mark_failed(
            ctx.pool, job_id, error_type="result_unavailable", message=EXPIRED, wakeup=ctx.wakeup
        )
        return
    except FalUnavailable as exc:
        await lifecycle.reschedule(
            ctx.pool, job_id, status=status, after=poll_in, last_error=str(exc)
        )
        return
    await lifecycle.finish(
        ctx.pool,
        job_id,
        outcomes.from_result(result),
        fal_request_id=request_id,
        wakeup=ctx.wakeup,
        mirror=ctx.store is not None,
    )


async def _time_out(ctx: WorkerContext, job: asyncpg.Record) -> None:
    hours = ctx.settings.job_timeout_seconds / 3600
    failed = await lifecycle.mark_failed(
        ctx.pool,
        job["id"],
        error_type="timeout",
        message=f"fal did not finish the job within {hours:g} h",
        wakeup=ctx.wakeup,
    )
    if failed is not None and job["fal_cancel_url"]:
        try:
            await ctx.fal.cancel(job["fal_cancel_url"])
        except FalUnavailable as exc:
            log.warning("could not cancel timed-out fal request %s: %s", job["fal_request_id"], exc)
