from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Body, Query
from starlette.responses import Response

from app import ids
from app.api.deps import PrincipalDep, RuntimeDep
from app.api.problems import error_responses
from app.api.responses import JSONBytes, page_response
from app.errors import NotFound, Unauthorized, ValidationFailed
from app.ids import DELIVERY_ID_PREFIX
from app.jobs import service as jobs_service
from app.pagination import MAX_PAGE_SIZE
from app.webhooks import deliveries, endpoints
from app.webhooks.endpoints import EndpointLimitReached
from app.webhooks.models import DeliveryStatus
from app.webhooks.schemas import (
    DeliveryPage,
    DeliveryRead,
    EndpointCreate,
    EndpointCreated,
    EndpointPage,
    EndpointRead,
    EndpointUpdate,
    Recover,
    Recovered,
    RotateSecret,
    SecretRead,
)
from app.webhooks.views import delivery_view, endpoint_view

router = APIRouter(tags=["webhooks"])
ENDPOINTS = "/v1/webhook-endpoints"
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]
READ_ERRORS = error_responses(Unauthorized, NotFound)
WRITE_ERRORS = error_responses(Unauthorized, NotFound, ValidationFailed)


@router.post(
    ENDPOINTS,
    status_code=201,
    response_model=EndpointCreated,
    responses=error_responses(Unauthorized, EndpointLimitReached, ValidationFailed),
)
async def create_webhook_endpoint(
    body: EndpointCreate, principal: PrincipalDep, runtime: RuntimeDep
) -> Response:
    """Register a URL for job events; the answer carries its signing secret, shown once."""
    row, secret = await endpoints.create(
        runtime.pool,
        principal.client_id,
        body,
        allow_private=runtime.settings.allow_private_webhook_urls,
        max_endpoints=principal.limits.max_endpoints,
    )
    view = endpoint_view(row)
    return JSONBytes(
        {**view, "secret": secret},
        status_code=201,
        headers={"Location": f"{ENDPOINTS}/{view['id']}"},
    )


@router.get(ENDPOINTS, response_model=EndpointPage, responses=READ_ERRORS)
async def list_webhook_endpoints(
    principal: PrincipalDep, runtime: RuntimeDep, limit: Limit = 20, cursor: str | None = None
) -> Response:
    """The client's endpoints, newest first."""
    page = await endpoints.list_page(runtime.pool, principal.client_id, limit=limit, cursor=cursor)
    return page_response(page, endpoint_view)


@router.get(f"{ENDPOINTS}/{{endpoint_id}}", response_model=EndpointRead, responses=READ_ERRORS)
async def get_webhook_endpoint(
    endpoint_id: str, principal: PrincipalDep, runtime: RuntimeDep
) -> Response:
    """One endpoint (its secret is not shown again; rotate it to get a new one)."""
    return JSONBytes(
        endpoint_view(await endpoints.get(runtime.pool, principal.client_id, endpoint_id))
    )


@router.patch(f"{ENDPOINTS}/{{endpoint_id}}", response_model=EndpointRead, responses=WRITE_ERRORS)
async def update_webhook_endpoint(
    endpoint_id: str, body: EndpointUpdate, principal: PrincipalDep, runtime: RuntimeDep
) -> Response:
    """Change the URL, the event types, the description, or enable/disable the endpoint."""
    row = await endpoints.update(
        runtime.pool,
        principal.client_id,
        endpoint_id,
        body,
        allow_private=runtime.settings.allow_private_webhook_urls,
    )
    return JSONBytes(endpoint_view(row))


@router.delete(f"{ENDPOINTS}/{{endpoint_id}}", status_code=204, responses=READ_ERRORS)
async def delete_webhook_endpoint(
    endpoint_id: str, principal: PrincipalDep, runtime: RuntimeDep
) -> Response:
    """Delete the endpoint, its pending deliveries and its delivery log."""
    await endpoints.delete(runtime.pool, principal.client_id, endpoint_id)
    return Response(status_code=204)


@router.post(
    f"{ENDPOINTS}/{{endpoint_id}}/rotate-secret", response_model=SecretRead, responses=WRITE_ERRORS
)
async def rotate_webhook_secret(
    endpoint_id: str,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    body: Annotated[RotateSecret | None, Body()] = None,
) -> Response:
    """A new secret; the old one keeps signing too during the grace period (default 24 h)."""
    grace = (body or RotateSecret()).grace_period_seconds
    secret = await endpoints.rotate_secret(
        runtime.pool, principal.client_id, endpoint_id, grace_seconds=grace, now=datetime.now(UTC)
    )
    return JSONBytes({"secret": secret})


@router.post(
    f"{ENDPOINTS}/{{endpoint_id}}/test",
    status_code=202,
    response_model=DeliveryRead,
    responses=READ_ERRORS,
)
async def test_webhook_endpoint(
    endpoint_id: str, principal: PrincipalDep, runtime: RuntimeDep
) -> Response:
    """Send a `ping` event to this endpoint now; the answer is its delivery, queued."""
    delivery_id = await endpoints.send_test(
        runtime.pool,
        principal.client_id,
        endpoint_id,
        wakeup=runtime.wakeup,
        now=datetime.now(UTC),
    )
    row, _ = await deliveries.get(
        runtime.pool, principal.client_id, ids.encode(DELIVERY_ID_PREFIX, delivery_id)
    )
    return JSONBytes(delivery_view(row), status_code=202)


@router.get(
    f"{ENDPOINTS}/{{endpoint_id}}/deliveries", response_model=DeliveryPage, responses=READ_ERRORS
)
async def list_endpoint_deliveries(
    endpoint_id: str,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    status: DeliveryStatus | None = None,
    limit: Limit = 20,
    cursor: str | None = None,
) -> Response:
    """The endpoint's deliveries, newest first."""
    endpoint = await endpoints.get(runtime.pool, principal.client_id, endpoint_id)
    page = await deliveries.list_page(
        runtime.pool,
        principal.client_id,
        endpoint_id=endpoint["id"],
        status=status,
        limit=limit,
        cursor=cursor,
    )
    return page_response(page, delivery_view)


@router.post(
    f"{ENDPOINTS}/{{endpoint_id}}/recover", response_model=Recovered, responses=WRITE_ERRORS
)
async def recover_webhook_endpoint(
    endpoint_id: str, body: Recover, principal: PrincipalDep, runtime: RuntimeDep
) -> Response:
    """Queue again every failed delivery of this endpoint created since `since`."""
    endpoint = await endpoints.get(runtime.pool, principal.client_id, endpoint_id)
    count = await deliveries.recover(
        runtime.pool, principal.client_id, endpoint["id"], body.since, wakeup=runtime.wakeup
    )
    return JSONBytes({"requeued": count})


@router.get("/v1/deliveries/{delivery_id}", response_model=DeliveryRead, responses=READ_ERRORS)
async def get_delivery(delivery_id: str, principal: PrincipalDep, runtime: RuntimeDep) -> Response:
    """One delivery with every attempt: time, duration, status or error, the answer's start."""
    row, attempts = await deliveries.get(runtime.pool, principal.client_id, delivery_id)
    return JSONBytes(delivery_view(row, attempts))


@router.post(
    "/v1/deliveries/{delivery_id}/retry",
    status_code=202,
    response_model=DeliveryRead,
    responses=READ_ERRORS,
)
async def retry_delivery(
    delivery_id: str, principal: PrincipalDep, runtime: RuntimeDep
) -> Response:
    """Attempt this delivery again now (same event, same `webhook-id`)."""
    await deliveries.retry(runtime.pool, principal.client_id, delivery_id, wakeup=runtime.wakeup)
    row, _ = await deliveries.get(runtime.pool, principal.client_id, delivery_id)
    return JSONBytes(delivery_view(row), status_code=202)


@router.get("/v1/jobs/{job_id}/deliveries", response_model=DeliveryPage, responses=READ_ERRORS)
async def list_job_deliveries(
    job_id: str,
    principal: PrincipalDep,
    runtime: RuntimeDep,
    status: DeliveryStatus | None = None,
    limit: Limit = 20,
    cursor: str | None = None,
) -> Response:
    """The deliveries of one job's events, to every endpoint and its callback_url."""
    job = await jobs_service.get_job(runtime.pool, principal.client_id, job_id)
    page = await deliveries.list_page(
        runtime.pool,
        principal.client_id,
        job_id=job["id"],
        status=status,
        limit=limit,
        cursor=cursor,
    )
    return page_response(page, delivery_view)


@router.get("/v1/webhook-secret", response_model=SecretRead, responses=READ_ERRORS)
async def get_webhook_secret(principal: PrincipalDep, runtime: RuntimeDep) -> Response:
    """The client's default secret: it signs deliveries to jobs' own callback_url."""
    return JSONBytes({"secret": await endpoints.default_secret(runtime.pool, principal.client_id)})


@router.post(
    "/v1/webhook-secret/rotate",
    response_model=SecretRead,
    responses=error_responses(Unauthorized, ValidationFailed),
)
async def rotate_default_webhook_secret(
    principal: PrincipalDep,
    runtime: RuntimeDep,
    body: Annotated[RotateSecret | None, Body()] = None,
) -> Response:
    """A new default secret; the old one keeps signing too during the grace period (default
    24 h)."""
    grace = (body or RotateSecret()).grace_period_seconds
    secret = await endpoints.rotate_default_secret(
        runtime.pool, principal.client_id, grace_seconds=grace, now=datetime.now(UTC)
    )
    return JSONBytes({"secret": secret})
