"""fal's queue API over an injected httpx client: submit, status, result, cancel.

Over falrelay's own transport (`app.runtime.fal_http_client`), calls go to it directly, without
httpx's objects (`FalTransport.exchange`): the same bytes on the wire, a third of the CPU.

Submission is the one call that costs money, and fal has no idempotency key (its own client
retries the POST blindly). So a failed submit is sorted by what provably happened:

- `SubmitNotSent`: fal never took the request (connection refused or reset before sending, a
  429, or a 5xx from fal's ingress without an `x-fal-request-id`). Safe to retry.
- `SubmitRejected`: fal answered and refused the request (4xx other than 408/429). Retrying
  cannot help; the job fails.
- `SubmitAmbiguous`: the request may have reached fal (a timeout after sending, a dropped
  connection, a 5xx that carries `x-fal-request-id`). The caller must not resubmit at once.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, ParamSpec, Protocol, TypeVar
from urllib.parse import quote

import httpx
import orjson

from app import tracing
from app.catalog.pricing import parse_units
from app.fal.transport import FalTransport, client_timeout, json_body
from app.metrics import FAL_CALLS, FAL_LATENCY, child
from app.retry_after import parse_retry_after

FalQueueStatus = Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
CancelOutcome = Literal["CANCELLATION_REQUESTED", "ALREADY_COMPLETED", "NOT_FOUND", "OK"]


@dataclass(frozen=True, slots=True)
class Submitted:
    request_id: str
    status_url: str
    response_url: str
    cancel_url: str


@dataclass(frozen=True, slots=True)
class QueueStatus:
    status: FalQueueStatus
    queue_position: int | None = None
    error: str | None = None
    error_type: str | None = None


@dataclass(frozen=True, slots=True)
class Result:
    status_code: int
    body: Any
    error_type: str | None = None
    # `X-Fal-Billable-Units`: what fal charged for the request, in the model's price unit
    # (images, megapixels, seconds); None when fal did not say.
    billable_units: Decimal | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300


class FalError(Exception):
    """A fal call that did not produce an answer we can use."""


class SubmitNotSent(FalError):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class SubmitRejected(FalError):
    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"fal refused the request ({status_code}): {detail}")
        self.status_code = status_code
        self.detail = detail


class SubmitAmbiguous(FalError):
    pass


class FalUnavailable(FalError):
    """Status, result or cancel could not be read now (network, 5xx); try again later."""


class FalRequestUnknown(FalError):
    """fal does not know the request (404): expired, or never existed."""


# Errors raised before any byte of the request left this process.
# LocalProtocolError: a request the transport refused to put on the wire.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.LocalProtocolError)


class Answered(Protocol):
    """What the client reads of an answer: an `httpx.Response` or a transport's `Answer`."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def text(self) -> str: ...
    def json(self) -> Any: ...


def _detail(response: Answered) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:500]
    return str(body)[:500]


P = ParamSpec("P")
T = TypeVar("T")


def _measured(
    operation: str,
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Counts each call by outcome (ok, or the FalError subclass) and times it; with tracing
    on, each call is a span (`fal submit`, ...), child of the job's span in progress.

    Spans by hand rather than httpx's instrumentation: one span per call whatever the
    transport, named for what it does, and no `traceparent` sent to fal, which records no
    trace of ours."""

    def decorate(call: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(call)
        async def measured(*args: P.args, **kwargs: P.kwargs) -> T:
            started = time.perf_counter()
            outcome = "ok"
            with tracing.span(
                f"fal {operation}", kind="client", attributes={"fal.operation": operation}
            ) as span:
                try:
                    return await call(*args, **kwargs)
                except FalError as exc:
                    outcome = type(exc).__name__
                    tracing.set_error(span, outcome, str(exc))
                    raise
                finally:
                    child(FAL_CALLS, operation, outcome).inc()
                    child(FAL_LATENCY, operation).observe(time.perf_counter() - started)

        return measured

    return decorate


class FalClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        queue_url: str,
        key: str | None,
        media_ttl_seconds: int | None = None,
    ) -> None:
        self._http = http
        self._queue_url = queue_url.rstrip("/")
        self._headers = {"Authorization": f"Key {key}"} if key else {}
        # How long fal keeps the files a request makes (fal's storage settings; its default is
        # the account's, forever if unset). With outputs mirrored, fal's copy can go once ours
        # is safe.
        self._submit_headers = dict(self._headers)
        if media_ttl_seconds is not None:
            self._submit_headers["X-Fal-Object-Lifecycle-Preference"] = orjson.dumps(
                {"expiration_duration_seconds": media_ttl_seconds}
            ).decode()
        # The client's headers merged with ours once, as `AsyncClient.request` merges them on
        # every call (see `_send`).
        self._merged_headers = _merged(http.headers, self._headers)
        self._merged_submit_headers = _merged(http.headers, self._submit_headers)
        self._timeouts = client_timeout(http.timeout.as_dict())

    @_measured("submit")
    async def submit(
        self,
        model: str,
        arguments: dict[str, Any],
        *,
        webhook_url: str | None,
        low_priority: bool = False,
        start_timeout: float | None = None,
    ) -> Submitted:
        """`low_priority`: fal starts the request only when no normal one of the account waits.
        `start_timeout`: seconds fal has to start it (queue wait included), else it ends with
        a 504 `request_timeout`."""
        url = f"{self._queue_url}/{model}"
        if webhook_url:
            url += "?fal_webhook=" + quote(webhook_url, safe="")
        headers = self._merged_submit_headers
        if low_priority or start_timeout is not None:
            extra = {}
            if low_priority:
                extra["X-Fal-Queue-Priority"] = "low"
            if start_timeout is not None:
                extra["X-Fal-Request-Timeout"] = f"{start_timeout:g}"
            headers = _merged(headers, extra)
        try:
            response = await self._send("POST", url, headers, json=arguments)
        except _NOT_SENT as exc:
            raise SubmitNotSent(f"{type(exc).__name__}: {exc}") from exc
        except httpx.TransportError as exc:
            # The request may have been sent: a read timeout, a reset after writing.
            raise SubmitAmbiguous(f"{type(exc).__name__}: {exc}") from exc

        if response.status_code == 429:
            wait = parse_retry_after(response.headers.get("retry-after"))
            raise SubmitNotSent("fal answered 429", retry_after=wait)
        if response.status_code >= 500:
            if "x-fal-request-id" in response.headers:
                raise SubmitAmbiguous(f"fal answered {response.status_code} for a request it saw")
            raise SubmitNotSent(f"fal's ingress answered {response.status_code}")
        if response.status_code == 408:
            raise SubmitNotSent("fal answered 408")
        if response.status_code >= 400:
            raise SubmitRejected(response.status_code, _detail(response))
        try:
            body = response.json()
            return Submitted(
                request_id=str(body["request_id"]),
                status_url=str(body["status_url"]),
                response_url=str(body["response_url"]),
                cancel_url=str(body["cancel_url"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            # fal took the request (2xx) but we cannot tell which one it is.
            raise SubmitAmbiguous(f"unreadable submit answer: {response.text[:200]}") from exc

    @_measured("status")
    async def status(self, status_url: str) -> QueueStatus:
        response = await self._get(status_url)
        if response.status_code == 404:
            raise FalRequestUnknown(_detail(response))
        if response.status_code not in (200, 202):
            raise FalUnavailable(f"status answered {response.status_code}: {_detail(response)}")
        try:
            body = response.json()
            status = body.get("status")
        except (ValueError, AttributeError):
            raise FalUnavailable(f"unreadable status answer: {response.text[:200]}") from None
        if status not in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED"):
            raise FalUnavailable(f"unknown fal status {status!r}")
        return QueueStatus(
            status=status,
            queue_position=body.get("queue_position"),
            error=body.get("error"),
            error_type=body.get("error_type"),
        )

    @_measured("result")
    async def result(self, response_url: str) -> Result:
        """The model's answer: its output (2xx), or the error it gave (4xx/5xx from the model).

        Infrastructure trouble — no answer, or a 5xx without `x-fal-request-id` — raises
        FalUnavailable instead, since the result may still be fetched later."""
        response = await self._get(response_url)
        if response.status_code >= 500 and "x-fal-request-id" not in response.headers:
            raise FalUnavailable(f"result answered {response.status_code}")
        if response.status_code == 404:
            raise FalRequestUnknown(_detail(response))
        try:
            body = response.json()
        except ValueError:
            body = {"detail": response.text[:2000]}
        error_type = response.headers.get("x-fal-error-type")
        if error_type is None and isinstance(body, dict):
            error_type = body.get("error_type")
        return Result(
            status_code=response.status_code,
            body=body,
            error_type=error_type,
            billable_units=parse_units(response.headers.get("x-fal-billable-units")),
        )

    @_measured("cancel")
    async def cancel(self, cancel_url: str) -> CancelOutcome:
        try:
            response = await self._send("PUT", cancel_url, self._merged_headers)
        except httpx.TransportError as exc:
            raise FalUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500:
            raise FalUnavailable(f"cancel answered {response.status_code}")
        try:
            outcome = response.json().get("status")
        except (ValueError, AttributeError):
            outcome = None
        if outcome in ("CANCELLATION_REQUESTED", "ALREADY_COMPLETED", "NOT_FOUND", "OK"):
            return outcome  # type: ignore[no-any-return]
        if response.status_code == 404:
            return "NOT_FOUND"
        raise FalUnavailable(f"cancel answered {response.status_code}: {_detail(response)}")

    async def _get(self, url: str) -> Answered:
        try:
            return await self._send("GET", url, self._merged_headers)
        except httpx.TransportError as exc:
            raise FalUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def _send(
        self, method: str, url: str, headers: httpx.Headers, *, json: Any = None
    ) -> Answered:
        """The request `AsyncClient.request` would send — its headers, the client's cookies,
        timeout and transport, the same bytes. Over falrelay's transport, handed to it without
        httpx's objects (`FalTransport.exchange`); over any other, as an `httpx.Request` to
        the transport directly.

        Why not `AsyncClient.send`: around the transport (its auth and redirect generators,
        the response's stream wrapper, a cookie-jar pass over every answer) it cost about
        0.2 ms of CPU per submit, a third of the fal call's, in a loop of 3,000 submits to the
        fake fal. What it does that applies here is done here: event hooks, the client's
        cookies out and back (only when there are any), the body read whole. A client with
        auth or that follows redirects (not ours: `app.runtime.fal_http_client`) goes through
        `send`."""
        http = self._http
        if http.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        direct = _direct(http)
        if direct is not None:
            body = None if json is None else json_body(json)
            answer = await direct.exchange(
                method, url, headers.multi_items(), json=body, timeouts=self._timeouts
            )
            if "set-cookie" in answer.headers:
                # Kept as `send` keeps them; the calls that follow send them back, as httpx.
                setting = httpx.Response(
                    answer.status_code,
                    headers=answer.headers.multi_items(),
                    request=httpx.Request(method, url),
                )
                http.cookies.extract_cookies(setting)
            return answer
        cookies = http.cookies
        request = httpx.Request(
            method,
            url,
            headers=headers,
            json=json,
            cookies=cookies or None,
            extensions={"timeout": http.timeout.as_dict()},
        )
        if http.auth is not None or http.follow_redirects:
            return await http.send(request)
        hooks = http.event_hooks
        for hook in hooks["request"]:
            await hook(request)
        response = await http._transport_for_url(request.url).handle_async_request(request)
        response.request = request
        try:
            if "set-cookie" in response.headers:
                cookies.extract_cookies(response)
            for hook in hooks["response"]:
                await hook(response)
            await response.aread()
        except BaseException:
            await response.aclose()
            raise
        return response


def _direct(http: httpx.AsyncClient) -> FalTransport | None:
    """The client's transport when a call may skip httpx's objects: falrelay's own, for every
    URL, with nothing of the client's to run around the call (auth, redirects, event hooks,
    cookies). Asked at each call, as any of them may be set on the client later (a cookie by
    an answer)."""
    transport = http._transport
    if (
        isinstance(transport, FalTransport)
        and not http._mounts
        and http.auth is None
        and not http.follow_redirects
        and not any(http.event_hooks.values())
        and not http.cookies
    ):
        return transport
    return None


def _merged(base: httpx.Headers, extra: dict[str, str]) -> httpx.Headers:
    """`base` then `extra`, a name in both taking extra's value at extra's place (httpx's
    merge of a client's headers with a request's)."""
    merged = httpx.Headers(base)
    merged.update(extra)
    return merged
