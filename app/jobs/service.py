"""What the jobs API does, independent of HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import re
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from app import ids, tracing
from app.billing import service as billing
from app.catalog import CATALOG, InputInvalid
from app.db.pool import Pool
from app.db.wakeup import Wakeup
from app.errors import (
    AppError,
    Conflict,
    NotFound,
    ServiceUnavailable,
    UnprocessableEntity,
    ValidationFailed,
    ValidationIssue,
)
from app.fal.client import FalClient, FalUnavailable
from app.fal.storage import FalStorage
from app.ids import JOB_ID_PREFIX
from app.jobs import file_inputs, lifecycle, repository
from app.jobs.intake import Intake
from app.jobs.models import PRIORITIES, JobStatus
from app.jobs.schemas import JobCreate
from app.jobs.watch import JobWatcher
from app.pagination import Page, decode_cursor, page_of
from app.webhooks import ssrf


class IdempotencyKeyReused(UnprocessableEntity):
    title = "Idempotency key reused"
    slug = "idempotency-key-reused"


class IdempotencyKeyInFlight(Conflict):
    title = "Idempotency key in flight"
    slug = "idempotency-key-in-flight"


class QueuedJobsLimitReached(Conflict):
    title = "Queued jobs limit reached"
    slug = "queued-jobs-limit-reached"


class JobNotCancelable(Conflict):
    title = "Job cannot be canceled"
    slug = "job-not-cancelable"


class FalUnreachable(ServiceUnavailable):
    title = "fal unreachable"
    slug = "fal-unreachable"


@dataclass(frozen=True, slots=True)
class Created:
    job: asyncpg.Record
    # False when an Idempotency-Key replay returned the job an earlier request made.
    created: bool


@dataclass(frozen=True, slots=True)
class FileLimits:
    """How big a file input may be, and above what size it is uploaded to fal's storage."""

    max_bytes: int = 10 * 1024 * 1024
    inline_bytes: int = 64 * 1024


@dataclass(frozen=True, slots=True)
class Prepared:
    job: repository.NewJob
    # What an idempotent replay is compared on: the input before its files were uploaded.
    fingerprint_input: dict[str, Any]
    uploads: list[file_inputs.DataFile]


async def _prepare(
    pool: Pool,
    client_id: uuid.UUID,
    request: JobCreate,
    *,
    allow_private_callback: bool,
    files: FileLimits,
) -> Prepared:
    if request.callback_url is not None and not allow_private_callback:
        # Only the checks that need no DNS lookup here, on the intake path; the delivery
        # worker checks the address it actually connects to.
        try:
            ssrf.check_literal(request.callback_url)
        except ssrf.RefusedAddress as exc:
            msg = f"points at {exc.address}, which is not a public address"
            raise ValidationFailed(
                [ValidationIssue(loc=["body", "callback_url"], msg=msg, type="url_not_public")]
            ) from exc
    spec = await CATALOG.lookup(pool, request.model)
    if spec is None:
        msg = f"unknown model {request.model!r}; GET /v1/models lists the models"
        raise ValidationFailed([ValidationIssue(loc=["body", "model"], msg=msg, type="model")])
    try:
        model_input = spec.normalise_input(request.input)
    except InputInvalid as exc:
        raise ValidationFailed(
            [
                ValidationIssue(
                    loc=["body", "input", *issue.path], msg=issue.message, type=issue.rule
                )
                for issue in exc.issues
            ]
        ) from exc
    _check_unicode(model_input)
    uploads = file_inputs.check(
        spec,
        model_input,
        max_bytes=files.max_bytes,
        inline_bytes=files.inline_bytes,
        allow_http=allow_private_callback,
    )
    job = repository.NewJob(
        id=ids.uuid7(),
        client_id=client_id,
        model=request.model,
        input=model_input,
        metadata=request.metadata,
        callback_url=request.callback_url,
        estimated_cost_usd=spec.price.estimate(model_input),
        priority=PRIORITIES[request.priority],
        start_timeout=request.start_timeout,
        unit_price_usd=spec.price.price_of_unit(model_input),
        # The request's span: the parent of everything that happens to the job later.
        trace_context=tracing.current_traceparent(),
    )
    fingerprint_input = file_inputs.digest_data_uris(model_input, spec) if uploads else model_input
    return Prepared(job, fingerprint_input, uploads)


def _check_unicode(model_input: dict[str, Any]) -> None:
    """A JSON string may escape half a UTF-16 pair (`"\\ud800"`): valid JSON, but no Unicode
    text, so neither Postgres nor fal could take it. One encode finds it; only then is the
    input walked, to point at the field."""
    try:
        orjson.dumps(model_input)
    except TypeError:
        path = _surrogate_at(model_input, ["body", "input"])
        msg = "is not valid Unicode text (it holds a lone UTF-16 surrogate)"
        raise ValidationFailed(
            [ValidationIssue(loc=path or ["body", "input"], msg=msg, type="unicode")]
        ) from None


def _surrogate_at(value: Any, path: list[str | int]) -> list[str | int] | None:
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return path
        return None
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, item in items:
        if isinstance(key, str) and _surrogate_at(key, path) is not None:
            return path
        found = _surrogate_at(item, [*path, key])
        if found is not None:
            return found
    return None


def _fingerprint(job: repository.NewJob, model_input: dict[str, Any]) -> bytes:
    """Same normalised request → same bytes, however the JSON was spelled or ordered."""
    canonical: dict[str, Any] = {
        "model": job.model,
        "input": model_input,
        "metadata": job.metadata,
        "callback_url": job.callback_url,
    }
    # Only when set: a request made before these options existed keeps its fingerprint.
    if job.priority != PRIORITIES["normal"]:
        canonical["priority"] = job.priority
    if job.start_timeout is not None:
        canonical["start_timeout"] = job.start_timeout
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).digest()


async def create_job(
    pool: Pool,
    client_id: uuid.UUID,
    request: JobCreate,
    idempotency_key: str | None,
    *,
    allow_private_callback: bool = False,
    default_budget: Decimal | None = None,
    max_queued_jobs: int | None = None,
    storage: FalStorage | None = None,
    files: FileLimits = FileLimits(),
    intake: Intake | None = None,
) -> Created:
    """Store the job and reserve its estimated cost, in one statement: a job the budget
    refuses (BudgetExceeded) is not stored. Through `intake`, with the client's concurrent
    creates; without, alone. `default_budget` is the monthly budget of clients
    that have none of their own (None: unlimited). With `max_queued_jobs` queued already, a
    new job is refused (QueuedJobsLimitReached); a replay of an accepted one is not."""
    prepared = await _prepare(
        pool, client_id, request, allow_private_callback=allow_private_callback, files=files
    )
    job = prepared.job
    fingerprint = None if idempotency_key is None else _fingerprint(job, prepared.fingerprint_input)
    if idempotency_key is not None and prepared.uploads:
        # A replay of a job with files to upload is looked up first, not uploaded again. Any
        # other goes straight to the intake, whose key is unique: a replay stores nothing there
        # and is looked up below, so a first request costs one statement, not two.
        existing = await repository.find_by_idempotency_key(pool, client_id, idempotency_key)
        if existing is not None:
            return _replay(existing, fingerprint)
    if prepared.uploads:
        # Before the intake: no HTTP while a transaction is open. A failed upload stores nothing.
        if storage is None:
            raise file_inputs.FileStorageUnavailable("No fal storage is configured for uploads.")
        await file_inputs.upload(storage, job.input, prepared.uploads)
    refusal: AppError | None = None
    try:
        store = functools.partial(repository.intake, pool) if intake is None else intake.store
        row = await store(
            job,
            key=idempotency_key,
            fingerprint=fingerprint,
            max_queued_jobs=max_queued_jobs,
            default_budget=default_budget,
        )
    except repository.KeyTaken:
        row = None
    except repository.BudgetRefused:
        row = None
        refusal = await billing.budget_exceeded(
            pool, client_id, job.estimated_cost_usd, default_budget=default_budget
        )
    else:
        if row is None:
            refusal = QueuedJobsLimitReached(
                f"{max_queued_jobs} of this client's jobs are queued already, its limit; "
                "create more once some have been submitted to fal."
            )
    if row is not None:
        return Created(row, created=True)

    # Nothing was stored. A request whose key another one used first (before, or meanwhile)
    # replays that job: it reserved when it was accepted, so a replay is never refused.
    existing = (
        None
        if idempotency_key is None
        else await repository.find_by_idempotency_key(pool, client_id, idempotency_key)
    )
    if existing is not None:
        return _replay(existing, fingerprint)
    if refusal is not None:
        raise refusal
    # The conflicting row is not visible yet: all but impossible, as the statement that found
    # it waited for its commit, but the client's retry is the right answer if it happens.
    raise IdempotencyKeyInFlight(
        "A request with this Idempotency-Key is still being processed; retry shortly."
    )


def _replay(existing: asyncpg.Record, fingerprint: bytes | None) -> Created:
    if existing["request_fingerprint"] != fingerprint:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was used with a different request body; "
            "use a new key for a new job."
        )
    return Created(existing, created=False)


async def get_job(pool: Pool, client_id: uuid.UUID, public_id: str) -> asyncpg.Record:
    job_uuid = ids.decode(JOB_ID_PREFIX, public_id)
    row = None if job_uuid is None else await repository.get(pool, client_id, job_uuid)
    if row is None:
        raise NotFound(f"No job {public_id!r}.")
    return row


async def count_unfinished(pool: Pool, client_id: uuid.UUID) -> dict[str, int]:
    """The client's unfinished jobs by status (queued, submitted, running)."""
    return await repository.count_unfinished(pool, client_id)


async def cancel_job(
    pool: Pool, fal: FalClient, wakeup: Wakeup, client_id: uuid.UUID, public_id: str
) -> asyncpg.Record:
    """Cancel a job that has not finished. At fal (submitted, running) fal is asked first, with
    no transaction open; the job is canceled once fal agrees or does not know the request."""
    job_uuid = ids.decode(JOB_ID_PREFIX, public_id)
    if job_uuid is None:
        raise NotFound(f"No job {public_id!r}.")
    row = await lifecycle.mark_canceled(
        pool, client_id, job_uuid, from_statuses=[JobStatus.QUEUED], wakeup=wakeup
    )
    if row is not None:
        return row
    job = await repository.get_for_cancel(pool, client_id, job_uuid)
    if job is None:
        raise NotFound(f"No job {public_id!r}.")
    status = JobStatus(job["status"])
    if status.is_terminal or job["fal_cancel_url"] is None:
        raise JobNotCancelable(f"Job {public_id} is already {status}.")

    try:
        answer = await fal.cancel(job["fal_cancel_url"])
    except FalUnavailable as exc:
        raise FalUnreachable("fal could not be reached to cancel the job; retry.") from exc
    if answer == "ALREADY_COMPLETED":
        await lifecycle.make_due(pool, job_uuid, job["fal_request_id"])
        wakeup.notify("reconcile")
        raise JobNotCancelable(
            f"fal had already finished job {public_id}; its result is being recorded."
        )
    row = await lifecycle.mark_canceled(
        pool,
        client_id,
        job_uuid,
        from_statuses=[JobStatus.SUBMITTED, JobStatus.RUNNING],
        wakeup=wakeup,
    )
    if row is None:
        current = await repository.get_status(pool, client_id, job_uuid)
        raise JobNotCancelable(f"Job {public_id} finished first: it is {current}.")
    return row


async def list_jobs(
    pool: Pool,
    client_id: uuid.UUID,
    *,
    status: JobStatus | None,
    model: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    limit: int,
    cursor: str | None,
    metadata: dict[str, str] | None = None,
) -> Page:
    """A page of the client's jobs, newest first; `metadata`: only jobs whose metadata holds
    every one of these pairs (the console's search)."""
    where = repository.ListFilter(
        status=status.value if status is not None else None,
        model=model,
        created_after=created_after,
        created_before=created_before,
        metadata=metadata,
        after=decode_cursor(cursor) if cursor else None,
    )
    rows = await repository.list_page(pool, client_id, where, limit + 1)
    return page_of(rows, limit)


MAX_WAIT_SECONDS = 60.0
# A wait answers at its deadline with the job as it last read it when the job watcher has
# polled it this recently and seen no move; older than that (its polls failing), it reads.
STALE_AFTER_SECONDS = 2.0


# RFC 7240 makes `wait` a delta-seconds (digits); a fraction is allowed as a courtesy. Not
# `float()`: it reads "nan", "inf", "1e999" and "1_0", and a NaN deadline never passes.
_WAIT_VALUE = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")


def wait_seconds(prefer: str | None) -> float | None:
    """`Prefer: wait=N` (RFC 7240), capped at 60 s; None when absent or unreadable (an
    unknown or malformed preference is ignored, as the RFC asks)."""
    if not prefer:
        return None
    for preference in prefer.split(","):
        name, _, value = preference.strip().partition("=")
        if name.strip().lower() == "wait":
            text = value.strip()
            if len(text) >= 2 and text[0] == text[-1] == '"':
                text = text[1:-1]
            if not _WAIT_VALUE.fullmatch(text):
                return None
            return min(float(text), MAX_WAIT_SECONDS)
    return None


async def wait_until_finished(
    pool: Pool,
    watcher: JobWatcher,
    client_id: uuid.UUID,
    job: asyncpg.Record,
    seconds: float,
    *,
    client_gone: Awaitable[object] | None = None,
) -> asyncpg.Record:
    """The job once it is terminal, or as it stands after `seconds`.

    Holds no connection while it waits, and reads the job only when the process's job watcher
    says it moved from the status the caller read: a waiting request costs the database nothing
    of its own. At the deadline it answers with the job as last read, unless the watcher saw
    it move since or has not looked at it lately (the database is unavailable, say).

    `client_gone` completes when the client has gone away: the wait then ends at once, with the
    job as last read, rather than being watched for nobody until its deadline."""
    if not 0.0 <= seconds <= MAX_WAIT_SECONDS:  # also false for NaN
        seconds = MAX_WAIT_SECONDS if seconds > 0 else 0.0
    if client_gone is None:
        return await _wait(pool, watcher, client_id, job, seconds)
    waiting = asyncio.ensure_future(_wait(pool, watcher, client_id, job, seconds))
    gone = asyncio.ensure_future(client_gone)
    try:
        await asyncio.wait((waiting, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        waiting.cancel()  # nothing when it has finished
    return waiting.result() if waiting.done() else job


async def _wait(
    pool: Pool, watcher: JobWatcher, client_id: uuid.UUID, job: asyncpg.Record, seconds: float
) -> asyncpg.Record:
    deadline = time.monotonic() + seconds
    async with watcher.watch(job["id"], job["status"]) as watch:
        while not JobStatus(job["status"]).is_terminal:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watch.changed.wait(), timeout=left)
            if watch.holds_current(within=STALE_AFTER_SECONDS):
                continue  # the deadline, with nothing new: the loop ends
            watch.changed.clear()
            job = await repository.get(pool, client_id, job["id"]) or job
    return job
