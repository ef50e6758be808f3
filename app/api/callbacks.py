from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from starlette.responses import Response

from app import ids
from app.api.deps import RuntimeDep
from app.api.problems import error_responses
from app.api.raw import RawRequest
from app.api.responses import JSONBytes
from app.errors import AppError, BadRequest, NotFound
from app.fal.outcomes import FalWebhook
from app.fal.signatures import InvalidSignature
from app.ids import JOB_ID_PREFIX
from app.jobs import callbacks
from app.metrics import FAL_CALLBACKS, child
from app.runtime import Runtime

log = logging.getLogger(__name__)

router = APIRouter(prefix="/callbacks/fal", tags=["fal"])


class SignatureRejected(AppError):
    status = 401
    title = "Invalid signature"
    slug = "invalid-signature"


@router.post(
    "/{job_id}/{token}", responses=error_responses(BadRequest, SignatureRejected, NotFound)
)
async def fal_callback(
    job_id: str,
    token: str,
    request: Request,
    runtime: RuntimeDep,
    model: Annotated[
        str | None,
        Query(
            description="The job's model, as the URL handed to fal names it; checked against "
            "the job's, it lets the answer be recorded in one statement."
        ),
    ] = None,
) -> Response:
    """fal's webhook for one job: the URL's token checked, the signature verified (Ed25519,
    JWKS), then applied exactly once."""
    # Served by `fal_callback_raw` (app.api.raw) but under a root_path: declared for the docs.
    return await _apply(runtime, job_id, token, request.headers, request.body, model)


async def fal_callback_raw(request: RawRequest) -> Response:
    """`fal_callback` without FastAPI (its parameters are strings FastAPI would not refuse)."""
    params = request.path_params
    model = request.query_params.get("model")
    return await _apply(
        request.runtime, params["job_id"], params["token"], request.headers, request.body, model
    )


async def _apply(
    runtime: Runtime,
    job_id: str,
    token: str,
    headers: Mapping[str, str],
    read_body: Callable[[], Awaitable[bytes]],
    model: str | None,
) -> Response:
    if not (await runtime.callback_urls.get()).is_ours(job_id, token):
        FAL_CALLBACKS.labels("unknown_url").inc()
        raise SignatureRejected("This is not a callback URL this service handed to fal.")
    body = await read_body()
    try:
        request_id = await runtime.fal_signatures.verify(headers, body, now=time.time())
    except InvalidSignature as exc:
        FAL_CALLBACKS.labels("invalid_signature").inc()
        log.warning("refused a fal callback for %s: %s", job_id, exc)
        raise SignatureRejected(str(exc)) from None
    try:
        webhook = FalWebhook.model_validate_json(body)
    except ValidationError:
        raise BadRequest("The body is not a fal webhook.") from None
    if webhook.request_id != request_id:
        raise BadRequest("The body's request_id is not the signed one.")
    job_uuid = ids.decode(JOB_ID_PREFIX, job_id)
    outcome = callbacks.CallbackOutcome.UNKNOWN_JOB
    if job_uuid is not None:
        outcome = await callbacks.apply(
            runtime.pool,
            job_uuid,
            webhook,
            queue_url=runtime.settings.fal_queue_url,
            wakeup=runtime.wakeup,
            mirror=runtime.store is not None,
            model=model,
            transitions=runtime.transitions,
        )
    child(FAL_CALLBACKS, outcome.value).inc()
    if outcome is callbacks.CallbackOutcome.UNKNOWN_JOB:
        raise NotFound(f"No job {job_id!r}.")
    if outcome is callbacks.CallbackOutcome.FETCH_RESULT:
        runtime.wakeup.notify("reconcile")
    return JSONBytes({"received": True, "outcome": outcome.value})
