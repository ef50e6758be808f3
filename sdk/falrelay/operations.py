"""Every API call as data: method, path, query, body, headers, how safe it is to send again,
and how to read the answer. The sync and async clients run the same operations, so what a
call sends and how its answer is read is written once."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from falrelay.models import (
    Delivery,
    DeliveryStatus,
    EventType,
    Job,
    JobStatus,
    Model,
    Page,
    Usage,
    WebhookEndpoint,
    WebhookEndpointWithSecret,
)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

MAX_PREFER_WAIT = 60.0  # the longest `Prefer: wait` the service honours


class Resend(Enum):
    """When a call may be sent again after a failure."""

    # Reads, and creates (their Idempotency-Key makes a second send return the first job):
    # after any transport failure and after 429/502/503/504.
    SAFE = "safe"
    # Everything else: only when the request provably never left (the connection failed).
    UNSENT = "unsent"


@dataclass(frozen=True)
class Operation(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    resend: Resend = Resend.UNSENT
    # Seconds the service may hold the answer on purpose (`Prefer: wait`): added to the
    # read timeout so a long wait is not mistaken for a dead connection.
    held_for: float = 0.0


def _model(cls: type[M]) -> Callable[[httpx.Response], M]:
    def parse(response: httpx.Response) -> M:
        return cls.model_validate_json(response.content)

    return parse


def _nothing(response: httpx.Response) -> None:
    return None


def _field(name: str) -> Callable[[httpx.Response], Any]:
    def parse(response: httpx.Response) -> Any:
        return response.json()[name]

    return parse


def _segment(value: str) -> str:
    """An id as one path segment: `../` or `?` in it cannot reach another route."""
    return quote(value, safe="")


def _query(**values: str | int | datetime | None) -> dict[str, str]:
    query: dict[str, str] = {}
    for name, value in values.items():
        if value is None:
            continue
        query[name] = value.isoformat() if isinstance(value, datetime) else str(value)
    return query


# Jobs


def create_job(
    input: Mapping[str, Any],
    *,
    model: str | None,
    metadata: Mapping[str, str] | None,
    callback_url: str | None,
    idempotency_key: str | None,
    prefer_wait: float | None,
    priority: str | None = None,
    start_timeout: float | None = None,
) -> Operation[Job]:
    body: dict[str, Any] = {"input": dict(input)}
    if model is not None:
        body["model"] = model
    if metadata is not None:
        body["metadata"] = dict(metadata)
    if callback_url is not None:
        body["callback_url"] = callback_url
    if priority is not None:
        body["priority"] = priority
    if start_timeout is not None:
        body["start_timeout"] = start_timeout
    # The key is made once here, so every resend of this call carries the same one.
    headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
    held_for = 0.0
    if prefer_wait is not None and prefer_wait > 0:
        held_for = min(prefer_wait, MAX_PREFER_WAIT)
        headers["Prefer"] = f"wait={held_for:g}"
    return Operation(
        "POST",
        "/v1/jobs",
        _model(Job),
        json=body,
        headers=headers,
        resend=Resend.SAFE,
        held_for=held_for,
    )


def get_job(job_id: str) -> Operation[Job]:
    return Operation("GET", f"/v1/jobs/{_segment(job_id)}", _model(Job), resend=Resend.SAFE)


def list_jobs(
    *,
    status: JobStatus | str | None,
    model: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    limit: int | None,
    cursor: str | None,
) -> Operation[Page[Job]]:
    params = _query(
        status=None if status is None else JobStatus(status).value,
        model=model,
        created_after=created_after,
        created_before=created_before,
        limit=limit,
        cursor=cursor,
    )
    return Operation("GET", "/v1/jobs", _model(Page[Job]), params=params, resend=Resend.SAFE)


def cancel_job(job_id: str) -> Operation[Job]:
    return Operation("POST", f"/v1/jobs/{_segment(job_id)}/cancel", _model(Job))


def delete_job(job_id: str) -> Operation[None]:
    # Not resent after an ambiguous failure: the second send would answer 404 for a job the
    # first one deleted.
    return Operation("DELETE", f"/v1/jobs/{_segment(job_id)}", _nothing)


def job_events(job_id: str, last_event_id: str | None) -> Operation[None]:
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    return Operation(
        "GET",
        f"/v1/jobs/{_segment(job_id)}/events",
        _nothing,
        headers=headers,
        resend=Resend.SAFE,
    )


# Webhook endpoints

ENDPOINTS = "/v1/webhook-endpoints"


def create_endpoint(
    url: str, *, event_types: Sequence[EventType] | None, description: str | None
) -> Operation[WebhookEndpointWithSecret]:
    body: dict[str, Any] = {"url": url}
    if event_types is not None:
        body["event_types"] = list(event_types)
    if description is not None:
        body["description"] = description
    # Not resent after an ambiguous failure: a second send would register a second endpoint.
    return Operation("POST", ENDPOINTS, _model(WebhookEndpointWithSecret), json=body)


def get_endpoint(endpoint_id: str) -> Operation[WebhookEndpoint]:
    return Operation(
        "GET", f"{ENDPOINTS}/{_segment(endpoint_id)}", _model(WebhookEndpoint), resend=Resend.SAFE
    )


def list_endpoints(*, limit: int | None, cursor: str | None) -> Operation[Page[WebhookEndpoint]]:
    return Operation(
        "GET",
        ENDPOINTS,
        _model(Page[WebhookEndpoint]),
        params=_query(limit=limit, cursor=cursor),
        resend=Resend.SAFE,
    )


def update_endpoint(endpoint_id: str, changes: Mapping[str, Any]) -> Operation[WebhookEndpoint]:
    return Operation(
        "PATCH", f"{ENDPOINTS}/{_segment(endpoint_id)}", _model(WebhookEndpoint), json=changes
    )


def delete_endpoint(endpoint_id: str) -> Operation[None]:
    return Operation("DELETE", f"{ENDPOINTS}/{_segment(endpoint_id)}", _nothing)


def rotate_endpoint_secret(endpoint_id: str, grace_period_seconds: int | None) -> Operation[str]:
    body = {} if grace_period_seconds is None else {"grace_period_seconds": grace_period_seconds}
    return Operation(
        "POST",
        f"{ENDPOINTS}/{_segment(endpoint_id)}/rotate-secret",
        _field("secret"),
        json=body,
    )


def test_endpoint(endpoint_id: str) -> Operation[Delivery]:
    return Operation("POST", f"{ENDPOINTS}/{_segment(endpoint_id)}/test", _model(Delivery))


def recover_endpoint(endpoint_id: str, since: datetime) -> Operation[int]:
    return Operation(
        "POST",
        f"{ENDPOINTS}/{_segment(endpoint_id)}/recover",
        _field("requeued"),
        json={"since": since.isoformat()},
    )


# Deliveries


def get_delivery(delivery_id: str) -> Operation[Delivery]:
    return Operation(
        "GET", f"/v1/deliveries/{_segment(delivery_id)}", _model(Delivery), resend=Resend.SAFE
    )


def list_deliveries(
    *,
    endpoint_id: str | None,
    job_id: str | None,
    status: DeliveryStatus | None,
    limit: int | None,
    cursor: str | None,
) -> Operation[Page[Delivery]]:
    if (endpoint_id is None) == (job_id is None):
        raise ValueError("pass exactly one of endpoint_id or job_id")
    if endpoint_id is not None:
        path = f"{ENDPOINTS}/{_segment(endpoint_id)}/deliveries"
    else:
        path = f"/v1/jobs/{_segment(job_id or '')}/deliveries"
    return Operation(
        "GET",
        path,
        _model(Page[Delivery]),
        params=_query(status=status, limit=limit, cursor=cursor),
        resend=Resend.SAFE,
    )


def retry_delivery(delivery_id: str) -> Operation[Delivery]:
    return Operation("POST", f"/v1/deliveries/{_segment(delivery_id)}/retry", _model(Delivery))


# The rest


def list_models() -> Operation[list[Model]]:
    def parse(response: httpx.Response) -> list[Model]:
        # `data` and no cursor: every model at once.
        return [Model.model_validate(model) for model in response.json()["data"]]

    return Operation("GET", "/v1/models", parse, resend=Resend.SAFE)


def webhook_secret() -> Operation[str]:
    return Operation("GET", "/v1/webhook-secret", _field("secret"), resend=Resend.SAFE)


def rotate_webhook_secret(grace_period_seconds: int | None) -> Operation[str]:
    body = {} if grace_period_seconds is None else {"grace_period_seconds": grace_period_seconds}
    return Operation("POST", "/v1/webhook-secret/rotate", _field("secret"), json=body)


def usage(
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    group_by: str = "day",
) -> Operation[Usage]:
    params = {"group_by": group_by}
    if start is not None:
        params["from"] = start.isoformat()
    if end is not None:
        params["to"] = end.isoformat()
    return Operation("GET", "/v1/usage", _model(Usage), params=params, resend=Resend.SAFE)
