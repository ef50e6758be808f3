"""What the SDK raises: one tree under `FalrelayError`.

An answer with an error status becomes an `APIError` subclass chosen by status, carrying the
RFC 9457 problem fields the service sent (`type`, `title`, `detail`, `errors`) and the
`X-Request-ID` to quote when asking about it. No answer at all is an `APIConnectionError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    from falrelay.models import Job

PROBLEM_JSON = "application/problem+json"


class FalrelayError(Exception):
    """Everything the SDK raises."""


class ValidationIssue(BaseModel):
    """One entry of a problem's `errors`: where (`loc`), what (`msg`), and a code (`type`)."""

    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem document as the service sends it."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[ValidationIssue] | None = None


class APIError(FalrelayError):
    """The service answered with an error status."""

    def __init__(self, problem: Problem, response: httpx.Response) -> None:
        super().__init__(_describe(problem))
        self.problem = problem
        self.response = response
        self.status = problem.status
        self.type = problem.type
        self.title = problem.title
        self.detail = problem.detail
        self.errors = problem.errors or []
        self.request_id = response.headers.get("x-request-id")


class BadRequestError(APIError):
    """400: the request could not be read (malformed JSON, an unknown Last-Event-ID)."""


class AuthenticationError(APIError):
    """401: no API key, or not one the service knows (revoked, mistyped)."""


class PermissionDeniedError(APIError):
    """403."""


class NotFoundError(APIError):
    """404: no such resource for this client (another client's ids are 404s too)."""


class ConflictError(APIError):
    """409: e.g. cancelling a finished job, deleting an unfinished one, or an Idempotency-Key
    whose first use is still in flight."""


class PayloadTooLargeError(APIError):
    """413: the request body is over the service's limit."""


class UnprocessableEntityError(APIError):
    """422: the request does not match the schema; `errors` says where and why."""


class RateLimitError(APIError):
    """429."""


class InternalServerError(APIError):
    """5xx: the service (or something in front of it) failed; retried for safe calls."""


class APIConnectionError(FalrelayError):
    """No answer: the connection failed or broke."""

    def __init__(self, message: str, *, request: httpx.Request | None = None) -> None:
        super().__init__(message)
        self.request = request


class APITimeoutError(APIConnectionError):
    """No answer in time."""


class WaitTimeoutError(FalrelayError):
    """The job was not finished when the wait ran out; `job` is how it stood then."""

    def __init__(self, job: Job, timeout: float) -> None:
        super().__init__(f"job {job.id} is still {job.status} after {timeout:g} s")
        self.job = job
        self.timeout = timeout


class WebhookVerificationError(FalrelayError):
    """A webhook that is not a genuine, fresh falrelay delivery: answer it with 4xx."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def error_for(response: httpx.Response) -> APIError:
    """The exception for an error answer, read from its problem+json body when it has one
    (a proxy in front of the service may answer with anything)."""
    problem = _problem_of(response)
    status = response.status_code
    cls = _BY_STATUS.get(status) or (InternalServerError if status >= 500 else APIError)
    return cls(problem, response)


def _problem_of(response: httpx.Response) -> Problem:
    try:
        body: Any = response.json()
        if isinstance(body, dict):
            return Problem.model_validate({**body, "status": response.status_code})
    except (ValueError, ValidationError):
        pass
    text = response.text.strip()
    return Problem(
        title=response.reason_phrase or f"HTTP {response.status_code}",
        status=response.status_code,
        detail=text[:500] or None,
    )


def _describe(problem: Problem) -> str:
    text = f"{problem.status} {problem.title}"
    if problem.detail:
        text += f": {problem.detail}"
    for issue in problem.errors or []:
        text += f"\n  {'.'.join(str(part) for part in issue.loc)}: {issue.msg}"
    return text
