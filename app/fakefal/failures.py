"""How a fal request can end without an output, as its result, status and webhook show it.

A model error (422 validation) answers the model's own status and body. An infrastructure error
answers `{"detail", "error_type"}` with an `X-Fal-Error-Type` header, at the HTTP status fal's
request-errors page gives for that type (protocol notes 1.6).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Failure:
    status_code: int
    body: dict[str, Any]
    # What a COMPLETED status says in `error` and `error_type`.
    error: str
    error_type: str | None
    # `X-Fal-Request-Timeout-Type`: "user" when the request missed the start deadline its
    # caller set, which fal's clients never retry.
    timeout_type: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        headers = {"X-Fal-Error-Type": self.error_type} if self.error_type else {}
        if self.timeout_type:
            headers["X-Fal-Request-Timeout-Type"] = self.timeout_type
        return headers

    @property
    def webhook_error(self) -> str:
        return f"Invalid status code: {self.status_code}"


def validation_failure(detail: list[dict[str, Any]]) -> Failure:
    """The model refused its input: FastAPI's 422 with pydantic's error list."""
    return Failure(422, {"detail": detail}, "Invalid status code: 422", None)


def infra_failure(error_type: str) -> Failure:
    status_code, detail = INFRA_ERRORS[error_type]
    return Failure(status_code, {"detail": detail, "error_type": error_type}, detail, error_type)


INFRA_ERRORS: Mapping[str, tuple[int, str]] = {
    "request_timeout": (504, "Request timed out"),
    "startup_timeout": (504, "Runner startup timed out"),
    "runner_scheduling_failure": (503, "Failed to schedule a runner for the request"),
    "runner_connection_timeout": (503, "Timed out connecting to the runner"),
    "runner_disconnected": (503, "Runner disconnected"),
    "runner_connection_refused": (503, "Runner refused the connection"),
    "runner_connection_error": (503, "Error connecting to the runner"),
    "runner_incomplete_response": (502, "Runner returned an incomplete response"),
    "runner_server_error": (500, "Runner server error"),
    "internal_error": (500, "Internal server error"),
    "bad_request": (400, "Bad request"),
    "client_disconnected": (499, "Client disconnected"),
    "client_cancelled": (499, "Request cancelled by the client"),
}

# A drawn "validation" failure: what fal's image models answer for a flagged prompt, so it
# looks like a refusal of a valid-looking input (an invalid input fails on its own).
CONTENT_POLICY_DETAIL: list[dict[str, Any]] = [
    {
        "loc": ["body", "prompt"],
        "msg": (
            "The content could not be processed because it contained material flagged by a "
            "content checker."
        ),
        "type": "content_policy_violation",
    }
]

# Every failure `error_rate` can draw, by the name `error_types` lists.
FAILURES: Mapping[str, Failure] = {
    "validation": validation_failure(CONTENT_POLICY_DETAIL),
    **{name: infra_failure(name) for name in INFRA_ERRORS},
}

CANCELLED = FAILURES["client_cancelled"]

# A request that did not start within its `X-Fal-Request-Timeout` (protocol notes 1.8).
START_TIMEOUT = Failure(
    504,
    {"detail": "Request timed out", "error_type": "request_timeout"},
    "Request timed out",
    "request_timeout",
    timeout_type="user",
)
