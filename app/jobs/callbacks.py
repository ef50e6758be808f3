"""fal's webhook, once its signature is verified: apply it to the job, exactly once.

Duplicates, reordered deliveries and webhooks of a request that is not the job's are
acknowledged and change nothing; the compare-and-set in `lifecycle` makes the race with the
reconciler harmless too.
"""

from __future__ import annotations

import enum
import functools
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from app import tracing
from app.db.pool import Pool
from app.db.wakeup import Wakeup
from app.fal import outcomes
from app.fal.outcomes import FalWebhook, Succeeded
from app.fal.urls import request_urls
from app.jobs import lifecycle
from app.jobs import repository as sql
from app.jobs.models import JobStatus
from app.jobs.schemas import job_id as public_job_id
from app.jobs.transitions import Transitions

# A job adopted from a result is finished by the same callback a moment later; the reconciler
# looks only if that never happens.
_ADOPTED_POLL = timedelta(seconds=30)


class CallbackOutcome(enum.StrEnum):
    APPLIED = "applied"  # the job reached its terminal state
    DUPLICATE = "duplicate"  # the job was already terminal
    OTHER_REQUEST = "other_request"  # a webhook for a fal request that is not the job's
    FETCH_RESULT = "fetch_result"  # payload_error: the reconciler fetches the result now
    UNKNOWN_JOB = "unknown_job"


async def apply(
    pool: Pool,
    job_id: uuid.UUID,
    webhook: FalWebhook,
    *,
    queue_url: str,
    wakeup: Wakeup,
    mirror: bool = False,
    model: str | None = None,
    transitions: Transitions | None = None,
) -> CallbackOutcome:
    """`model`: the one the callback's URL names (app.fal.callback_urls), None for a URL
    without; only a hint, checked against the job's. Through `transitions`, a success is
    recorded together with the others that come meanwhile, and a callback that beats the
    record of its job's submission from this process waits for it."""
    if transitions is not None:
        await transitions.submission_recorded(job_id)
    if (
        not tracing.enabled()
        and webhook.payload_error is None
        and (webhook.status != "OK" or webhook.payload is not None)
    ):
        # The usual case, a job at fal getting its answer, is the compare-and-set alone: no read
        # first. Only when it changes nothing does the job's state say why (below). With tracing
        # on, the read comes first, as the span's parent is the job's stored trace context.
        result = outcomes.from_webhook(webhook)
        if (
            transitions is not None
            and model is not None
            and not mirror
            and isinstance(result, Succeeded)
        ):
            finished = await transitions.succeeded_at_fal(
                job_id, result, fal_request_id=webhook.request_id, model=model
            )
        else:
            finished = await lifecycle.finish(
                pool,
                job_id,
                result,
                fal_request_id=webhook.request_id,
                wakeup=wakeup,
                mirror=mirror,
                at_fal_only=True,
                model=model,
            )
        if finished is not None:
            return CallbackOutcome.APPLIED
    row = await pool.fetchrow(sql.SELECT_FOR_CALLBACK, job_id)
    if row is None:
        return CallbackOutcome.UNKNOWN_JOB
    # With tracing on, a span of the job's trace (app.tracing), its parent the job's POST
    # /v1/jobs, as the submission's is. Not a child of this HTTP request's span: that one's
    # parent is whatever fal sent (nothing), and it began before the job was known, so it stays
    # a trace of its own, linked from here. The job's state changes below are this span's.
    with tracing.job_span(
        "fal callback",
        row["trace_context"],
        attributes={"falrelay.job.id": public_job_id(job_id), "fal.request_id": webhook.request_id},
        link_current=True,
    ) as span:
        outcome = await _apply(pool, job_id, row, webhook, queue_url, wakeup, mirror=mirror)
        tracing.set_attributes(span, {"falrelay.callback.outcome": outcome.value})
        return outcome


async def _apply(
    pool: Pool,
    job_id: uuid.UUID,
    row: asyncpg.Record,
    webhook: FalWebhook,
    queue_url: str,
    wakeup: Wakeup,
    *,
    mirror: bool,
) -> CallbackOutcome:
    if row["fal_request_id"] not in (None, webhook.request_id):
        return CallbackOutcome.OTHER_REQUEST
    if JobStatus(row["status"]).is_terminal:
        return CallbackOutcome.DUPLICATE

    if webhook.payload_error is not None or (webhook.status == "OK" and webhook.payload is None):
        if row["status"] == JobStatus.QUEUED:
            # fal's callback beat the record of our own submit: adopt the request.
            await lifecycle.mark_submitted(
                pool,
                job_id,
                request_urls(queue_url, row["model"], webhook.request_id),
                next_poll_at=datetime.now(UTC),
                wakeup=wakeup,
            )
        await lifecycle.make_due(pool, job_id, webhook.request_id)
        return CallbackOutcome.FETCH_RESULT

    outcome = outcomes.from_webhook(webhook)
    if row["status"] == JobStatus.QUEUED:
        # fal's result beat the record of our own submit. Adopt the request first, so the job
        # reads submitted before completed (`submitted_at <= completed_at`, `job.submitted`
        # before the terminal event) — the late record of the submit then only keeps fal's
        # URLs.
        submitted = request_urls(queue_url, row["model"], webhook.request_id)
        if not (mirror and isinstance(outcome, Succeeded)):
            # Both in one transaction.
            adopted = await lifecycle.adopt_and_finish(
                pool,
                job_id,
                submitted,
                outcome,
                model=row["model"],
                next_poll_at=datetime.now(UTC) + _ADOPTED_POLL,
                wakeup=wakeup,
            )
            return CallbackOutcome.APPLIED if adopted is not None else CallbackOutcome.DUPLICATE
        # Its files are to be copied: two transactions. A crash between them leaves a
        # submitted job that fal's retried webhook, or the reconciler after `_ADOPTED_POLL`,
        # finishes.
        await lifecycle.mark_submitted(
            pool,
            job_id,
            submitted,
            next_poll_at=datetime.now(UTC) + _ADOPTED_POLL,
            wakeup=wakeup,
        )
    # At fal now (read so, or adopted just above): as to a job at fal, with the model read, so
    # that a success is one statement with its event. (The first try, before the read, missed
    # it: the submit's record landed in between, or the URL named no model or another.)
    finish = functools.partial(
        lifecycle.finish,
        pool,
        job_id,
        outcome,
        fal_request_id=webhook.request_id,
        wakeup=wakeup,
        mirror=mirror,
    )
    finished = await finish(at_fal_only=True, model=row["model"])
    if finished is None and not (mirror and isinstance(outcome, Succeeded)):
        # Moved on since the read (or back to queued): as any unfinished status allows. (Output
        # to copy is received the one way, whatever the status: nothing to try again.)
        finished = await finish()
    return CallbackOutcome.APPLIED if finished is not None else CallbackOutcome.DUPLICATE
