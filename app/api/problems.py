"""The error tree (`app.errors`) on the wire: RFC 9457 `application/problem+json`.

`install_handlers` renders `AppError`s, FastAPI's request validation errors, Starlette's HTTP
errors and anything unexpected in the same shape; `error_responses` lists a route's problem
answers in the OpenAPI document.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from app.db.availability import UNAVAILABLE
from app.errors import (
    AppError,
    BadRequest,
    Conflict,
    MalformedJSON,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
    UnprocessableEntity,
    ValidationFailed,
    issues_from_pydantic,
)

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


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


def _on_app_error(exc: Exception, method: str, path: str) -> Response:
    assert isinstance(exc, AppError)
    return problem_response(exc)


def _on_database_unavailable(exc: Exception, method: str, path: str) -> Response:
    log.warning("database unavailable on %s %s: %r", method, path, exc)
    return problem_response(
        ServiceUnavailable(
            "The database is not reachable; retry shortly.", headers={"Retry-After": "2"}
        )
    )


def _on_unstorable_text(exc: Exception, method: str, path: str) -> Response:
    return problem_response(
        UnprocessableEntity("Text in the request contains a NUL character (\\u0000).")
    )


# The errors of the domain and the database that have an answer of their own; anything else is
# a 500 (`on_unexpected`, which Starlette runs outside every middleware).
_KNOWN: dict[type[Exception], Callable[[Exception, str, str], Response]] = {
    AppError: _on_app_error,
    **{exc_class: _on_database_unavailable for exc_class in DATABASE_UNAVAILABLE},
    **{text_error: _on_unstorable_text for text_error in UNSTORABLE_TEXT},
}


def known_error_response(exc: Exception, method: str, path: str) -> Response | None:
    """The answer to `exc` when it is one of `_KNOWN`'s, looked up along its classes as
    Starlette's exception middleware does; None for anything else. For the routes served
    before FastAPI's router (app.api.raw), so that they answer exactly as the others."""
    for cls in type(exc).__mro__:
        handler = _KNOWN.get(cls)
        if handler is not None:
            return handler(exc, method, path)
    return None


def install_handlers(app: FastAPI) -> None:
    def known(
        handler: Callable[[Exception, str, str], Response],
    ) -> Callable[[Request, Exception], Awaitable[Response]]:
        async def on_known(request: Request, exc: Exception) -> Response:
            return handler(exc, request.method, request.url.path)

        return on_known

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

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(AppError())

    app.add_exception_handler(AppError, known(_on_app_error))
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    for exc_class, handler in _KNOWN.items():
        if exc_class is not AppError:
            app.add_exception_handler(exc_class, known(handler))
    app.add_exception_handler(Exception, on_unexpected)
