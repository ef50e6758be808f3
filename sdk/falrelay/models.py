"""The service's objects as typed models. Their fields follow the schemas in `openapi.json`
(a test compares them), and fields the service adds later are kept rather than refused, so an
older SDK keeps reading a newer service."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class JobStatus(StrEnum):
    QUEUED = "queued"
    SUBMITTED = "submitted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)


JobEventType = Literal[
    "job.submitted", "job.running", "job.succeeded", "job.failed", "job.canceled"
]
EventType = Literal[
    "job.submitted", "job.running", "job.succeeded", "job.failed", "job.canceled", "ping"
]
# Orders a client's own jobs for submission; `low` also waits behind normal work at fal.
JobPriority = Literal["high", "normal", "low"]
TERMINAL_EVENT_TYPES: frozenset[str] = frozenset({"job.succeeded", "job.failed", "job.canceled"})


class Image(_Model):
    """One generated image: a URL to fetch it from, never the bytes."""

    url: str
    content_type: str | None = None
    width: int | None = None
    height: int | None = None
    file_name: str | None = None
    file_size: int | None = None


# What a file is, for showing it: an <img>, a video or audio player, or a link.
FileKind = Literal["image", "video", "audio", "file"]


class File(_Model):
    """One file of a finished job's output, whatever the model: an image, a video, a sound,
    or anything else (`kind` "file"). A URL to fetch it from (or a `data:` URI when fal sent the
    bytes inline), never the bytes; what is unknown is None."""

    url: str
    content_type: str | None
    # A plain string rather than FileKind: a kind the service adds later still parses.
    kind: str
    width: int | None = None
    height: int | None = None
    duration: float | None = None  # seconds, for video and audio
    file_name: str | None = None
    file_size: int | None = None
    # When the service copies outputs to its own storage: `url` is its copy (a signed URL that
    # expires; read the job again for a fresh one), `source_url` fal's, `sha256` of the bytes,
    # `thumbnail_url` a small WebP of an image; `mirror_error` says why a copy is missing.
    source_url: str | None = None
    sha256: str | None = None
    thumbnail_url: str | None = None
    mirror_error: str | None = None


class JobError(_Model):
    type: str
    message: str


class Job(_Model):
    """The job object: the same in answers, listings, event streams and webhooks."""

    id: str
    model: str
    status: JobStatus
    input: dict[str, Any]
    metadata: dict[str, str]
    callback_url: str | None
    # The model's own output (for image models, `images`): kept as sent, so a model with
    # another output shape needs no new SDK.
    output: dict[str, Any] | None
    error: JobError | None
    fal_request_id: str | None
    # Defaults: events stored before these fields existed are sent without them.
    priority: JobPriority = "normal"
    start_timeout: float | None = None
    # Every file of the output, found through the model's output schema. Empty until the job
    # has succeeded, and from services older than this field (`falrelay.files.files_of` then
    # finds them in `output`).
    files: list[File] = Field(default_factory=list)
    created_at: datetime
    submitted_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    @property
    def images(self) -> list[Image]:
        """The output's images; empty until the job has succeeded."""
        raw = (self.output or {}).get("images") or []
        return [Image.model_validate(image) for image in raw]


class JobEvent(_Model):
    """A job's state change, as a webhook body or an event of the job's stream."""

    type: JobEventType
    timestamp: datetime
    data: Job
    # Not part of the body: the `webhook-id` header, or the stream's `id:` line. The same on
    # every retry of a delivery, so it is what a receiver deduplicates on.
    id: str | None = Field(default=None, exclude=True)


class PingEvent(_Model):
    """What `webhook_endpoints.test` sends."""

    type: Literal["ping"]
    timestamp: datetime
    data: dict[str, Any]
    id: str | None = Field(default=None, exclude=True)


Event = Annotated[JobEvent | PingEvent, Field(discriminator="type")]


class WebhookEndpoint(_Model):
    id: str
    url: str
    event_types: list[EventType]
    description: str | None
    enabled: bool
    disabled_reason: str | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime


class WebhookEndpointWithSecret(WebhookEndpoint):
    """An endpoint as created: with its `whsec_` secret, shown this once."""

    secret: str


DeliveryStatus = Literal["pending", "succeeded", "failed"]


class Attempt(_Model):
    attempted_at: datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    response_body: str | None


class Delivery(_Model):
    id: str
    event_id: str
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
    # Only on `deliveries.get`: every attempt, oldest first.
    attempts: list[Attempt] | None = None


ItemT = TypeVar("ItemT", bound=BaseModel)


class Page(_Model, Generic[ItemT]):
    """One page of a listing; the clients' `list` methods follow `next_cursor` for you."""

    data: list[ItemT]
    next_cursor: str | None


class ModelPrice(_Model):
    """What fal bills for a model: `unit_price_usd` per `unit` (image, megapixel, second of
    output), or per image by the input's `resolution` (`by_resolution`). Exact `Decimal`s."""

    # A plain string: a unit the service adds later still parses.
    unit: str
    unit_price_usd: Decimal | None = None
    by_resolution: dict[str, Decimal] | None = None
    typical_units: Decimal


class Model(_Model):
    """A model jobs can run: what it does (fal's `category`, e.g. text-to-image), its price,
    its typical run time at fal, and the JSON schemas of its input and output as fal publishes
    them."""

    id: str
    title: str
    description: str
    category: str
    # fal's pages the entry was taken from.
    source: list[str]
    price: ModelPrice
    typical_seconds: float
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]


class UsageGroup(_Model):
    """One day (UTC, `YYYY-MM-DD`) or one model of a usage answer."""

    key: str
    jobs: int
    images: int
    cost_usd: Decimal


class Usage(_Model):
    """The client's jobs created in [`start`, `end`) and what they cost. Amounts are exact
    `Decimal`s (the service sends decimal strings); `budget_usd` is None when unlimited."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")
    jobs: int
    images: int
    cost_usd: Decimal
    reserved_usd: Decimal
    budget_usd: Decimal | None
    groups: list[UsageGroup]
