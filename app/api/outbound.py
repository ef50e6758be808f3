"""The webhooks falrelay sends, documented in the OpenAPI `webhooks` section."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import FastAPI, Header
from pydantic import BaseModel, Field

from app.events.types import SUMMARIES, JobEventType, PingEventType
from app.jobs.schemas import JobRead

HEADERS_DOC = (
    "Standard Webhooks v1: `webhook-id` (the event id, the same on every retry: deduplicate on "
    "it), `webhook-timestamp` (Unix seconds of this attempt), `webhook-signature` (one "
    "`v1,<base64 HMAC-SHA256>` per active secret, space-separated). Verify with the "
    "`standardwebhooks` package and the endpoint's `whsec_` secret (or, for a job's own "
    "callback_url, the client's secret from GET /v1/webhook-secret). Answer 2xx within 15 s; "
    "redirects are failures; 410 disables the endpoint; 429/503 may carry Retry-After."
)


class JobEvent(BaseModel):
    type: JobEventType
    timestamp: datetime
    data: JobRead


class PingEvent(BaseModel):
    type: PingEventType
    timestamp: datetime
    data: dict[str, Any] = Field(examples=[{"endpoint_id": "ep_...", "message": "..."}])


async def job_event(
    body: JobEvent,
    webhook_id: Annotated[str, Header(alias="webhook-id")],
    webhook_timestamp: Annotated[str, Header(alias="webhook-timestamp")],
    webhook_signature: Annotated[str, Header(alias="webhook-signature")],
) -> None:
    return None


async def ping_event(
    body: PingEvent,
    webhook_id: Annotated[str, Header(alias="webhook-id")],
    webhook_timestamp: Annotated[str, Header(alias="webhook-timestamp")],
    webhook_signature: Annotated[str, Header(alias="webhook-signature")],
) -> None:
    return None


def document(app: FastAPI) -> None:
    for name, summary in SUMMARIES.items():
        handler: Callable[..., Awaitable[None]] = ping_event if name == "ping" else job_event
        app.webhooks.post(
            name,
            summary=summary,
            description=HEADERS_DOC,
            operation_id="webhook_" + name.replace(".", "_"),
            responses={200: {"description": "Any 2xx answer acknowledges the event."}},
        )(handler)
