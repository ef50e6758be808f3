"""One error tree, rendered as RFC 9457 `application/problem+json`.

Domain code raises `AppError` subclasses; `install_handlers` renders them, FastAPI's request
validation errors, Starlette's HTTP errors and anything unexpected in the same shape.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from app.db.availability import UNAVAILABLE

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
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


def problem_response(error: AppError) -> Response:
    return Response(
        orjson.dumps(error.body()),
        status_code=error.status,
        media_type=PROBLEM_JSON,
        headers=error.headers,
    )


def error_responses(*errors: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entry that lists a route's problem answers in the OpenAPI document."""
    return {
        error.status: {
            "description": error.title,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for error in errors
    }


class MethodNotAllowed(AppError):
    status = 405
    title = "Method not allowed"
    slug = "method-not-allowed"


_STATUS_ERRORS: dict[int, type[AppError]] = {
    cls.status: cls
    for cls in (
        BadRequest,
        Unauthorized,
        NotFound,
        MethodNotAllowed,
        Conflict,
        PayloadTooLarge,
        ServiceUnavailable,
    )
}
# Failures that mean "the database cannot be reached right now", not "this request is wrong".
DATABASE_UNAVAILABLE = UNAVAILABLE

# Text Postgres cannot store: a NUL character (`\u0000`) in a text or jsonb value. The statement
# failed, so nothing was written; the request is invalid, not the service broken.
UNSTORABLE_TEXT = (asyncpg.CharacterNotInRepertoireError, asyncpg.UntranslatableCharacterError)


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path. FastAPI registers one route per method,
    and Starlette's 405 names only the methods of the first route that matched the path; so
    each method is tried against the routes (`matches`, which included routers answer too)."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    )


def install_handlers(app: FastAPI) -> None:
    async def on_app_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AppError)
        return problem_response(exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        if any(error["type"] == "json_invalid" for error in errors):
            return problem_response(MalformedJSON("The request body is not valid JSON."))
        return problem_response(ValidationFailed(issues_from_pydantic(errors)))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else None
        error = _STATUS_ERRORS.get(exc.status_code, AppError)(detail)
        error.status = exc.status_code
        error.headers.update(exc.headers or {})
        if exc.status_code == 405:
            error.headers["Allow"] = _allowed_methods(request)
        return problem_response(error)

    async def on_database_unavailable(request: Request, exc: Exception) -> Response:
        log.warning("database unavailable on %s %s: %r", request.method, request.url.path, exc)
        return problem_response(
            ServiceUnavailable(
                "The database is not reachable; retry shortly.", headers={"Retry-After": "2"}
            )
        )

    async def on_unstorable_text(request: Request, exc: Exception) -> Response:
        return problem_response(
            UnprocessableEntity("Text in the request contains a NUL character (\\u0000).")
        )

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(AppError())

    app.add_exception_handler(AppError, on_app_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    for exc_class in DATABASE_UNAVAILABLE:
        app.add_exception_handler(exc_class, on_database_unavailable)
    for text_error in UNSTORABLE_TEXT:
        app.add_exception_handler(text_error, on_unstorable_text)
    app.add_exception_handler(Exception, on_unexpected)
