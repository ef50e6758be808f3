"""What the jobs API does, independent of HTTP."""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import orjson
from pydantic import ValidationError

from app import ids
from app.catalog import MODELS
from app.db.pool import Pool
from app.errors import (
    Conflict,
    NotFound,
    UnprocessableEntity,
    ValidationFailed,
    ValidationIssue,
    issues_from_pydantic,
)
from app.jobs import repository
from app.jobs.models import JobStatus
from app.jobs.schemas import JOB_ID_PREFIX, JobCreate

MAX_PAGE_SIZE = 100


class IdempotencyKeyReused(UnprocessableEntity):
    title = "Idempotency key reused"
    slug = "idempotency-key-reused"


class IdempotencyKeyInFlight(Conflict):
    title = "Idempotency key in flight"
    slug = "idempotency-key-in-flight"


class JobNotCancelable(Conflict):
    title = "Job cannot be canceled"
    slug = "job-not-cancelable"


@dataclass(frozen=True, slots=True)
class Created:
    job: asyncpg.Record
    # False when an Idempotency-Key replay returned the job an earlier request made.
    created: bool


def _prepare(client_id: uuid.UUID, request: JobCreate) -> repository.NewJob:
    spec = MODELS[request.model]
    try:
        model_input = spec.normalise_input(request.input)
    except ValidationError as exc:
        raise ValidationFailed(
            issues_from_pydantic(exc.errors(), prefix=("body", "input"))
        ) from exc
    return repository.NewJob(
        id=ids.uuid7(),
        client_id=client_id,
        model=request.model,
        input=model_input,
        metadata=request.metadata,
        callback_url=request.callback_url,
    )


def _fingerprint(job: repository.NewJob) -> bytes:
    """Same normalised request → same bytes, however the JSON was spelled or ordered."""
    canonical = {
        "model": job.model,
        "input": job.input,
        "metadata": job.metadata,
        "callback_url": job.callback_url,
    }
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).digest()


async def create_job(
    pool: Pool, client_id: uuid.UUID, request: JobCreate, idempotency_key: str | None
) -> Created:
    job = _prepare(client_id, request)
    if idempotency_key is None:
        return Created(await repository.insert(pool, job), created=True)

    fingerprint = _fingerprint(job)
    row = await repository.insert_idempotent(
        pool, job, key=idempotency_key, fingerprint=fingerprint
    )
    if row is not None:
        return Created(row, created=True)
    existing = await repository.find_by_idempotency_key(pool, client_id, idempotency_key)
    if existing is None:
        # The conflicting row is not visible yet; an autocommit insert makes this all but
        # impossible, but the client's retry is the right answer if it happens.
        raise IdempotencyKeyInFlight(
            "A request with this Idempotency-Key is still being processed; retry shortly."
        )
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


async def cancel_job(pool: Pool, client_id: uuid.UUID, public_id: str) -> asyncpg.Record:
    job_uuid = ids.decode(JOB_ID_PREFIX, public_id)
    if job_uuid is None:
        raise NotFound(f"No job {public_id!r}.")
    row = await repository.cancel_queued(pool, client_id, job_uuid)
    if row is not None:
        return row
    status = await repository.get_status(pool, client_id, job_uuid)
    if status is None:
        raise NotFound(f"No job {public_id!r}.")
    if JobStatus(status).is_terminal:
        raise JobNotCancelable(f"Job {public_id} is already {status}.")
    raise JobNotCancelable(
        f"Job {public_id} is {status}: it has reached fal, and canceling it there is not "
        "supported yet."
    )


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[asyncpg.Record]
    next_cursor: str | None


def encode_cursor(created_at: datetime, job_uuid: uuid.UUID) -> str:
    raw = orjson.dumps([created_at.isoformat(), job_uuid.hex])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at_text, hex_id = orjson.loads(raw)
        created_at = datetime.fromisoformat(created_at_text)
        if created_at.tzinfo is None:
            raise ValueError("naive timestamp")
        return created_at, uuid.UUID(hex=hex_id)
    except (binascii.Error, orjson.JSONDecodeError, TypeError, ValueError) as exc:
        issue = ValidationIssue(
            loc=["query", "cursor"], msg="not a cursor this API returned", type="cursor_invalid"
        )
        raise ValidationFailed([issue]) from exc


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
) -> Page:
    where = repository.ListFilter(
        status=status.value if status is not None else None,
        model=model,
        created_after=created_after,
        created_before=created_before,
        after=decode_cursor(cursor) if cursor else None,
    )
    rows = await repository.list_page(pool, client_id, where, limit + 1)
    if len(rows) <= limit:
        return Page(rows, None)
    last = rows[limit - 1]
    return Page(rows[:limit], encode_cursor(last["created_at"], last["id"]))
