"""The Python SDK for falrelay: `Client` (sync) and `AsyncClient` over httpx, typed models,
typed errors, and `falrelay.webhooks.verify` for receivers.

    from falrelay import Client

    with Client() as client:  # FALRELAY_URL, FALRELAY_API_KEY
        job = client.jobs.create({"prompt": "a red fox in snow"}, wait=True)
        print(job.images[0].url)

Any model: `client.jobs.create(input, model="fal-ai/...")`. `falrelay.files.files_of(job)` lists
a finished job's images, videos, sounds and other files; `falrelay.files.data_uri(path)` sends a
local file as a file input (`image_url` and the like).
"""

from falrelay.client import AsyncClient, Client
from falrelay.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    FalrelayError,
    InternalServerError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    UnprocessableEntityError,
    WaitTimeoutError,
    WebhookVerificationError,
)
from falrelay.models import (
    Attempt,
    Delivery,
    Event,
    File,
    FileKind,
    Image,
    Job,
    JobError,
    JobEvent,
    JobStatus,
    Model,
    ModelPrice,
    Page,
    PingEvent,
    Usage,
    UsageGroup,
    WebhookEndpoint,
    WebhookEndpointWithSecret,
)

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AsyncClient",
    "Attempt",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "Delivery",
    "Event",
    "FalrelayError",
    "File",
    "FileKind",
    "Image",
    "InternalServerError",
    "Job",
    "JobError",
    "JobEvent",
    "JobStatus",
    "Model",
    "ModelPrice",
    "NotFoundError",
    "Page",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PingEvent",
    "RateLimitError",
    "UnprocessableEntityError",
    "Usage",
    "UsageGroup",
    "WaitTimeoutError",
    "WebhookEndpoint",
    "WebhookEndpointWithSecret",
    "WebhookVerificationError",
]
