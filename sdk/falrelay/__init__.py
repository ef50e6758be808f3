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

# The names below are imported on first use (PEP 562), as pydantic's are: `falrelay submit
# --help` and other light uses of the package then cost no httpx or model building.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOMES = {
    "APIConnectionError": "falrelay.errors",
    "APIError": "falrelay.errors",
    "APITimeoutError": "falrelay.errors",
    "AsyncClient": "falrelay.client",
    "Attempt": "falrelay.models",
    "AuthenticationError": "falrelay.errors",
    "BadRequestError": "falrelay.errors",
    "Client": "falrelay.client",
    "ConflictError": "falrelay.errors",
    "Delivery": "falrelay.models",
    "Event": "falrelay.models",
    "FalrelayError": "falrelay.errors",
    "File": "falrelay.models",
    "FileKind": "falrelay.models",
    "Image": "falrelay.models",
    "InternalServerError": "falrelay.errors",
    "Job": "falrelay.models",
    "JobError": "falrelay.models",
    "JobEvent": "falrelay.models",
    "JobStatus": "falrelay.models",
    "Model": "falrelay.models",
    "ModelPrice": "falrelay.models",
    "NotFoundError": "falrelay.errors",
    "Page": "falrelay.models",
    "PayloadTooLargeError": "falrelay.errors",
    "PermissionDeniedError": "falrelay.errors",
    "PingEvent": "falrelay.models",
    "RateLimitError": "falrelay.errors",
    "UnprocessableEntityError": "falrelay.errors",
    "Usage": "falrelay.models",
    "UsageGroup": "falrelay.models",
    "WaitTimeoutError": "falrelay.errors",
    "WebhookEndpoint": "falrelay.models",
    "WebhookEndpointWithSecret": "falrelay.models",
    "WebhookVerificationError": "falrelay.errors",
}


if not TYPE_CHECKING:  # type checkers see the imports above, and only them

    def __getattr__(name: str) -> Any:
        home = _HOMES.get(name)
        if home is None:
            # A submodule not imported yet (`falrelay.models`), as the eager imports made it.
            try:
                return importlib.import_module(f"{__name__}.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{__name__}.{name}":
                    raise
                raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(home), name)
        globals()[name] = value  # once: later uses are plain attribute lookups
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})


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
