from __future__ import annotations

from datetime import datetime
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from app.events.types import JOB_EVENT_TYPES, TERMINAL_EVENT_TYPES, EventType, JobEventType
from app.timestamps import Timestamp
from app.webhooks.models import DeliveryStatus

MAX_GRACE_SECONDS = 7 * 24 * 3600
MAX_URL_LENGTH = 2048


def _webhook_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials; verify the webhook signature instead")
    if parts.fragment:
        raise ValueError("must not have a #fragment")
    return value


# A URL falrelay will POST webhooks to (a job's callback_url, an endpoint's url).
WebhookURL = Annotated[
    str, StringConstraints(max_length=MAX_URL_LENGTH), AfterValidator(_webhook_url)
]


def _distinct(values: list[JobEventType]) -> list[JobEventType]:
    if len(set(values)) != len(values):
        raise ValueError("event types must not repeat")
    return values


EventTypes = Annotated[
    list[JobEventType],
    Field(min_length=1, max_length=len(JOB_EVENT_TYPES)),
    AfterValidator(_distinct),
]
Description = Annotated[str, StringConstraints(max_length=500)]


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    url: WebhookURL
    event_types: EventTypes = Field(
        default_factory=lambda: list(TERMINAL_EVENT_TYPES),
        description="Default: the three terminal events.",
    )
    description: Description | None = None


class EndpointUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    url: WebhookURL | None = None
    event_types: EventTypes | None = None
    description: Description | None = None
    enabled: bool | None = Field(
        default=None, description="true re-enables a disabled endpoint and clears its failures."
    )


class EndpointRead(BaseModel):
    id: str = Field(examples=["ep_0193a9d2c4f07a4c9b1e2d3f4a5b6c7d"])
    url: str
    event_types: list[EventType]
    description: str | None
    enabled: bool
    disabled_reason: str | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime


class EndpointCreated(EndpointRead):
    secret: str = Field(description="`whsec_...`: shown now and on rotation only.")


class EndpointPage(BaseModel):
    data: list[EndpointRead]
    next_cursor: str | None


class RotateSecret(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    grace_period_seconds: int = Field(
        default=24 * 3600,
        ge=0,
        le=MAX_GRACE_SECONDS,
        description="How long the old secret keeps signing too (default 24 h, at most 7 days).",
    )


class SecretRead(BaseModel):
    secret: str


class Recover(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: Timestamp = Field(description="Re-queue failed deliveries created at or after this.")


class Recovered(BaseModel):
    requeued: int


class AttemptRead(BaseModel):
    attempted_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None = Field(description="Why there was no answer: timeout, connection, ...")
    response_body: str | None = Field(description="The first 2 KB of the answer.")


class DeliveryRead(BaseModel):
    id: str = Field(examples=["dlv_0193a9d2c4f07a4c9b1e2d3f4a5b6c7d"])
    event_id: str = Field(description="The `webhook-id` header of every attempt.")
    event_type: EventType
    job_id: str | None
    endpoint_id: str | None
    url: str
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    succeeded_at: datetime | None
    attempts: list[AttemptRead] | None = Field(
        default=None, description="Every attempt, oldest first (on GET of one delivery)."
    )


class DeliveryPage(BaseModel):
    data: list[DeliveryRead]
    next_cursor: str | None
