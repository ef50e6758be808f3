from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from pydantic import TypeAdapter
from starlette.datastructures import State
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive

from app.api import raw
from app.api.deps import PrincipalDep, RuntimeDep, authenticate, bearer_key
from app.api.problems import error_responses
from app.api.raw import RawRequest
from app.api.responses import ETAG_HEADER, JSONBytes, page_response, strong_etag
from app.api.usage import default_budget
from app.auth.service import Principal
from app.billing.service import BudgetExceeded
from app.errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    ValidationFailed,
    issues_from_pydantic,
)
from app.jobs import service, stream
from app.jobs.models import JobStatus
from app.jobs.schemas import IdempotencyKey, JobCreate, JobPage, JobRead, job_view
from app.jobs.service import (
    FalUnreachable,
    IdempotencyKeyInFlight,
    JobNotCancelable,
    QueuedJobsLimitReached,
)
from app.jobs.stream import UnknownLastEventId
from app.lifecycle import purge
from app.lifecycle.purge import JobNotFinished
from app.pagination import MAX_PAGE_SIZE
from app.runtime import Runtime
from app.storage.ranges import none_match
from app.timestamps import Timestamp

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post(
    "",
    status_code=201,
    response_model=JobRead,
    responses={
        200: {"model": JobRead, "description": "An Idempotency-Key replay: the earlier job."},
        **error_responses(
            BadRequest,
            Unauthorized,
            BudgetExceeded,
            IdempotencyKeyInFlight,
            QueuedJobsLimitReached,
            PayloadTooLarge,
            ValidationFailed,
        ),
    },
)
async def create_job(
    request: Request,
    body: JobCreate,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    idempotency_key: Annotated[IdempotencyKey | None, Header(alias="Idempotency-Key")] = None,
    prefer: Annotated[
        str | None,
        Header(
            alias="Prefer",
            description="`wait=N` (N ≤ 60): answer once the job is finished, or after N seconds.",
        ),
    ] = None,
) -> Response:
    """Store a job and queue it for fal; answered only once the job is committed."""
    # Served by `create_job_raw` (app.api.raw) but under a root_path: declared for the docs.
    return await _create_job(
        runtime, principal, body, idempotency_key, prefer, lambda: _client_gone(request.receive)
    )


_IDEMPOTENCY_KEY: TypeAdapter[str] = TypeAdapter(IdempotencyKey)
_JOB_CREATE: TypeAdapter[JobCreate] = TypeAdapter(JobCreate)


async def create_job_raw(request: RawRequest) -> Response:
    """`create_job` without FastAPI: what its dependencies and parameters did, in their order
    (the body read, the key authenticated, then every parameter's errors in one 422)."""
    body = await raw.json_body(request)
    runtime = request.runtime
    principal = await authenticate(
        runtime,
        bearer_key(request.headers.get("authorization")),
        State(request.scope.setdefault("state", {})),
    )
    errors: list[Any] = []
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None:
        idempotency_key = raw.validate(
            _IDEMPOTENCY_KEY, idempotency_key, ("header", "Idempotency-Key"), errors
        )
    job = raw.validate(_JOB_CREATE, body, ("body",), errors)
    if errors:
        raise ValidationFailed(issues_from_pydantic(errors))
    return await _create_job(
        runtime,
        principal,
        job,
        idempotency_key,
        request.headers.get("prefer"),
        request.client_gone,
    )


async def _create_job(
    runtime: Runtime,
    principal: Principal,
    body: JobCreate,
    idempotency_key: str | None,
    prefer: str | None,
    client_gone: Callable[[], Awaitable[None]],
) -> Response:
    result = await service.create_job(
        runtime.pool,
        principal.client_id,
        body,
        idempotency_key,
        allow_private_callback=runtime.settings.allow_private_webhook_urls,
        default_budget=default_budget(runtime.settings),
        max_queued_jobs=principal.limits.max_queued_jobs,
        storage=runtime.fal_storage,
        files=service.FileLimits(
            max_bytes=runtime.settings.max_input_file_bytes,
            inline_bytes=runtime.settings.inline_input_file_bytes,
        ),
        intake=runtime.intake,
    )
    if result.created:
        runtime.wakeup.notify("submit")
    job = result.job
    headers: dict[str, str] = {}
    wait = service.wait_seconds(prefer)
    if wait is not None:
        job = await service.wait_until_finished(
            runtime.pool,
            runtime.watcher,
            principal.client_id,
            job,
            wait,
            client_gone=client_gone(),
        )
        headers["Preference-Applied"] = f"wait={wait:g}"
    view = job_view(job)
    headers["Location"] = f"/v1/jobs/{view['id']}"
    return JSONBytes(view, status_code=201 if result.created else 200, headers=headers)


async def _client_gone(receive: Receive) -> None:
    """Returns when the client has disconnected: with the body read, that is all that comes."""
    while (await receive())["type"] != "http.disconnect":
        pass


@router.get(
    "",
    response_model=JobPage,
    responses=error_responses(Unauthorized, ValidationFailed),
)
async def list_jobs(
    principal: PrincipalDep,
    runtime: RuntimeDep,
    status: JobStatus | None = None,
    model: str | None = None,
    created_after: Timestamp | None = None,
    created_before: Timestamp | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
    cursor: str | None = None,
) -> Response:
    """The client's jobs, newest first, a page at a time (keyset pagination)."""
    page = await service.list_jobs(
        runtime.pool,
        principal.client_id,
        status=status,
        model=model,
        created_after=created_after,
        created_before=created_before,
        limit=limit,
        cursor=cursor,
    )
    return page_response(page, job_view)


@router.get(
    "/{job_id}",
    response_model=JobRead,
    responses={
        200: {"headers": {"ETag": ETAG_HEADER}},
        304: {
            "description": "Not modified: `If-None-Match` names the job's current `ETag`. No body.",
            "headers": {"ETag": ETAG_HEADER},
        },
        **error_responses(Unauthorized, NotFound),
    },
)
async def get_job(
    job_id: str,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    if_none_match: Annotated[
        str | None,
        Header(
            alias="If-None-Match",
            description="The `ETag` of the copy you hold: a 304 with no body while it is current.",
        ),
    ] = None,
) -> Response:
    """One job, as it stands now. Poll with `If-None-Match`: the answer is a bodiless 304 until
    the job changes."""
    response = JSONBytes(job_view(await service.get_job(runtime.pool, principal.client_id, job_id)))
    # From the bytes sent, not updated_at: a file URL's signature renews on its own schedule.
    etag = strong_etag(response.body)
    if none_match(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    response.headers["ETag"] = etag
    return response


@router.post(
    "/{job_id}/cancel",
    response_model=JobRead,
    responses=error_responses(Unauthorized, NotFound, JobNotCancelable, FalUnreachable),
)
async def cancel_job(job_id: str, principal: PrincipalDep, runtime: RuntimeDep) -> Response:
    """Cancel a job that has not finished (at fal too); a finished job answers 409."""
    row = await service.cancel_job(
        runtime.pool, runtime.fal, runtime.wakeup, principal.client_id, job_id
    )
    return JSONBytes(job_view(row))


@router.delete(
    "/{job_id}",
    status_code=204,
    responses=error_responses(Unauthorized, NotFound, JobNotFinished),
)
async def delete_job(job_id: str, principal: PrincipalDep, runtime: RuntimeDep) -> Response:
    """Delete a finished job with its events, deliveries and files; an unfinished one is 409."""
    await purge.delete_job(runtime.pool, runtime.store, principal.client_id, job_id)
    return Response(status_code=204)


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": (
                "Server-Sent Events: every event of the job in order, then new ones as they "
                "happen; the stream ends after the terminal event. Each event's `id` is its "
                "`webhook-id`, `event` its type, and `data` its webhook body. Resume with "
                "`Last-Event-ID`."
            ),
            "content": {stream.MEDIA_TYPE: {"schema": {"type": "string"}}},
        },
        **error_responses(UnknownLastEventId, Unauthorized, NotFound),
    },
)
async def job_events(
    request: Request,
    job_id: str,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    last_event_id: Annotated[
        str | None, Query(description="The same as the `Last-Event-ID` header.")
    ] = None,
) -> StreamingResponse:
    """The job's state changes as a Server-Sent Events stream, ending at a terminal state."""
    frames = await stream.open_job_stream(
        runtime.pool,
        principal.client_id,
        job_id,
        last_event_id_header or last_event_id,
        stopping=lambda: bool(getattr(request.app.state, "draining", False)),
        watcher=runtime.watcher,
    )
    # no-cache: a stream is never replayed from a cache; X-Accel-Buffering: nginx would
    # otherwise hold events back until its buffer fills.
    return StreamingResponse(
        frames,
        media_type=stream.MEDIA_TYPE,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
