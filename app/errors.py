"""One error tree, in the shape of RFC 9457 problem documents.

Domain code raises `AppError` subclasses; the web layer (`app.api.problems`) renders them as
`application/problem+json`, with FastAPI's validation errors, Starlette's HTTP errors and
anything unexpected in the same shape. Nothing here knows the web framework.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, Field

TYPE_BASE = "https://falrelay.dev/problems/"


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str = Field(examples=[TYPE_BASE + "not-found"])
    title: str
    status: int
    detail: str | None = None
    errors: list[ValidationIssue] | None = None


class AppError(Exception):
    status: int = 500
    title: str = "Internal server error"
    slug: str = "internal"

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None):
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": TYPE_BASE + self.slug,
            "title": self.title,
            "status": self.status,
        }
        if self.detail:
            body["detail"] = self.detail
        return body


class BadRequest(AppError):
    status = 400
    title = "Bad request"
    slug = "bad-request"


class MalformedJSON(BadRequest):
    title = "Malformed JSON"
    slug = "malformed-json"


class Unauthorized(AppError):
    status = 401
    title = "Unauthorized"
    slug = "unauthorized"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class NotFound(AppError):
    status = 404
    title = "Not found"
    slug = "not-found"


class MethodNotAllowed(AppError):
    status = 405
    title = "Method not allowed"
    slug = "method-not-allowed"


class Conflict(AppError):
    status = 409
    title = "Conflict"
    slug = "conflict"


class PayloadTooLarge(AppError):
    status = 413
    title = "Payload too large"
    slug = "payload-too-large"


class UnprocessableEntity(AppError):
    status = 422
    title = "Unprocessable entity"
    slug = "unprocessable"


class ValidationFailed(UnprocessableEntity):
    title = "Validation failed"
    slug = "validation"

    def __init__(self, issues: Sequence[ValidationIssue], detail: str | None = None) -> None:
        super().__init__(detail or "The request does not match the schema; see `errors`.")
        self.issues = list(issues)

    def body(self) -> dict[str, Any]:
        return {**super().body(), "errors": [issue.model_dump() for issue in self.issues]}


class TooManyRequests(AppError):
    status = 429
    title = "Too many requests"
    slug = "too-many-requests"


class ServiceUnavailable(AppError):
    status = 503
    title = "Service unavailable"
    slug = "unavailable"


def issues_from_pydantic(
    errors: Iterable[Any], prefix: Sequence[str | int] = ()
) -> list[ValidationIssue]:
    """Pydantic/FastAPI error dicts → our issues, without echoing the input back."""
    return [
        ValidationIssue(loc=[*prefix, *error["loc"]], msg=error["msg"], type=error["type"])
        for error in errors
    ]
