"""What a finished fal request means for a job: its output, or an error a client can read.

fal has no FAILED status: a failure is a COMPLETED request whose result answers 4xx/5xx, or a
webhook with `status: "ERROR"`. Both carry the model's error body, mapped here to
`{"type", "message"}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict

from app.fal.client import Result


@dataclass(frozen=True, slots=True)
class Succeeded:
    output: dict[str, Any]
    # fal's `X-Fal-Billable-Units` on the result; a webhook carries none.
    billable_units: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    type: str
    message: str


Outcome = Succeeded | Failed


class FalWebhook(BaseModel):
    """fal's webhook body. `error` may be absent or null on OK bodies."""

    model_config = ConfigDict(extra="allow")

    request_id: str
    gateway_request_id: str | None = None
    status: str
    payload: Any = None
    error: str | None = None
    payload_error: str | None = None


def _error_message(body: Any, fallback: str) -> str:
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, list):
            parts = []
            for item in detail[:5]:
                if isinstance(item, dict):
                    loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                    parts.append(f"{loc}: {item.get('msg')}" if loc else str(item.get("msg")))
            if parts:
                return "; ".join(parts)
        if isinstance(detail, str) and detail:
            return detail
    return fallback


def _failure(status_code: int | None, body: Any, error_type: str | None, fallback: str) -> Failed:
    if status_code == 422 or (
        isinstance(body, dict) and isinstance(body.get("detail"), list) and error_type is None
    ):
        return Failed("invalid_input", _error_message(body, fallback))
    if error_type is None and isinstance(body, dict) and isinstance(body.get("error_type"), str):
        error_type = body["error_type"]
    return Failed(error_type or "model_error", _error_message(body, fallback))


def _success(output: Any, billable_units: Decimal | None = None) -> Outcome:
    if not isinstance(output, dict):
        return Failed("invalid_output", "fal returned an output that is not a JSON object")
    return Succeeded(output, billable_units)


def from_result(result: Result) -> Outcome:
    if result.ok:
        return _success(result.body, result.billable_units)
    return _failure(
        result.status_code, result.body, result.error_type, f"fal answered {result.status_code}"
    )


def from_webhook(webhook: FalWebhook) -> Outcome:
    """Only for bodies that carry their payload (not `payload_error` ones)."""
    if webhook.status == "OK":
        return _success(webhook.payload)
    status_code = None
    if webhook.error and webhook.error.startswith("Invalid status code: "):
        code = webhook.error.removeprefix("Invalid status code: ").strip()
        status_code = int(code) if code.isdigit() else None
    return _failure(status_code, webhook.payload, None, webhook.error or "fal reported an error")
