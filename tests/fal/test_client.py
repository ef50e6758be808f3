"""The submit policy: what may be retried, what fails, what must wait (httpx.MockTransport)."""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
import pytest

from app.fal.client import (
    FalClient,
    FalRequestUnknown,
    FalUnavailable,
    SubmitAmbiguous,
    SubmitNotSent,
    SubmitRejected,
)

MODEL = "imagineart/imagineart-2.0-preview/text-to-image"
BASE = "http://fal.test/imagineart/imagineart-2.0-preview/requests/req-1"
STATUS_URL, RESULT_URL, CANCEL_URL = f"{BASE}/status", BASE, f"{BASE}/cancel"
SUBMITTED: dict[str, object] = {
    "status": "IN_QUEUE",
    "request_id": "req-1",
    "response_url": "http://fal.test/imagineart/imagineart-2.0-preview/requests/req-1",
    "status_url": "http://fal.test/imagineart/imagineart-2.0-preview/requests/req-1/status",
    "cancel_url": "http://fal.test/imagineart/imagineart-2.0-preview/requests/req-1/cancel",
    "queue_position": 0,
}


def client(handler: Callable[[httpx.Request], httpx.Response]) -> FalClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return FalClient(http, queue_url="http://fal.test/", key="secret-key")


async def test_submit_sends_the_input_webhook_and_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=SUBMITTED)

    submitted = await client(handler).submit(
        MODEL, {"prompt": "p"}, webhook_url="https://relay.example/callbacks/fal/job_1?a=b"
    )
    assert submitted.request_id == "req-1"
    assert submitted.cancel_url == SUBMITTED["cancel_url"]
    (request,) = seen
    assert request.method == "POST"
    assert request.url.path == f"/{MODEL}"
    assert request.url.params["fal_webhook"] == "https://relay.example/callbacks/fal/job_1?a=b"
    assert request.headers["authorization"] == "Key secret-key"
    assert request.content == b'{"prompt":"p"}'


async def test_submit_without_webhook_has_no_query() -> None:
    urls: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        urls.append(request.url)
        return httpx.Response(200, json=SUBMITTED)

    await client(handler).submit(MODEL, {"prompt": "p"}, webhook_url=None)
    assert urls[0].query == b""


def _raise(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (_raise(httpx.ConnectError("refused")), SubmitNotSent),
        (_raise(httpx.ConnectTimeout("slow connect")), SubmitNotSent),
        (lambda r: httpx.Response(429, headers={"retry-after": "7"}), SubmitNotSent),
        (lambda r: httpx.Response(408), SubmitNotSent),
        (lambda r: httpx.Response(502, text="<html>nginx</html>"), SubmitNotSent),
        (lambda r: httpx.Response(503), SubmitNotSent),
        (_raise(httpx.ReadTimeout("no answer")), SubmitAmbiguous),
        (_raise(httpx.RemoteProtocolError("dropped")), SubmitAmbiguous),
        (_raise(httpx.WriteError("broken pipe")), SubmitAmbiguous),
        (lambda r: httpx.Response(500, headers={"x-fal-request-id": "r"}), SubmitAmbiguous),
        (lambda r: httpx.Response(200, text="not json"), SubmitAmbiguous),
        (lambda r: httpx.Response(200, json={"status": "IN_QUEUE"}), SubmitAmbiguous),
        (lambda r: httpx.Response(401, json={"detail": "bad key"}), SubmitRejected),
        (lambda r: httpx.Response(404, json={"detail": "no such app"}), SubmitRejected),
        (lambda r: httpx.Response(422, json={"detail": [{"msg": "x"}]}), SubmitRejected),
    ],
)
async def test_submit_failures_are_sorted_by_what_provably_happened(
    handler: Callable[[httpx.Request], httpx.Response], expected: type[Exception]
) -> None:
    with pytest.raises(expected):
        await client(handler).submit(MODEL, {"prompt": "p"}, webhook_url=None)


async def test_retry_after_is_kept() -> None:
    handler = lambda r: httpx.Response(429, headers={"retry-after": "7"})  # noqa: E731
    with pytest.raises(SubmitNotSent) as caught:
        await client(handler).submit(MODEL, {}, webhook_url=None)
    assert caught.value.retry_after == 7.0


async def test_retry_after_as_an_http_date_is_kept() -> None:
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(minutes=2), usegmt=True)
    handler = lambda r: httpx.Response(429, headers={"retry-after": when})  # noqa: E731
    with pytest.raises(SubmitNotSent) as caught:
        await client(handler).submit(MODEL, {}, webhook_url=None)
    assert caught.value.retry_after is not None
    assert 100 < caught.value.retry_after <= 120


async def test_rejection_carries_fals_detail() -> None:
    handler = lambda r: httpx.Response(401, json={"detail": "Invalid key"})  # noqa: E731
    with pytest.raises(SubmitRejected, match="Invalid key"):
        await client(handler).submit(MODEL, {}, webhook_url=None)


async def test_status_result_and_cancel() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/status"):
            return httpx.Response(202, json={"status": "IN_QUEUE", "queue_position": 3})
        if request.url.path.endswith("/cancel"):
            assert request.method == "PUT"
            return httpx.Response(400, json={"status": "ALREADY_COMPLETED"})
        return httpx.Response(
            422,
            json={"detail": [{"loc": ["body", "prompt"], "msg": "bad"}]},
            headers={"x-fal-request-id": "req-1"},
        )

    fal = client(handler)
    status = await fal.status(STATUS_URL)
    assert (status.status, status.queue_position) == ("IN_QUEUE", 3)
    result = await fal.result(RESULT_URL)
    assert (result.ok, result.status_code) == (False, 422)
    assert await fal.cancel(CANCEL_URL) == "ALREADY_COMPLETED"


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(404, json={"status": "NOT_FOUND"}), FalRequestUnknown),
        (httpx.Response(503, text="nginx"), FalUnavailable),
        (httpx.Response(200, json={"status": "FAILED"}), FalUnavailable),
    ],
)
async def test_status_trouble(response: httpx.Response, expected: type[Exception]) -> None:
    with pytest.raises(expected):
        await client(lambda r: response).status(STATUS_URL)


async def test_result_infrastructure_errors_are_retryable_but_model_errors_are_answers() -> None:
    with pytest.raises(FalUnavailable):
        await client(lambda r: httpx.Response(504, text="nginx")).result("http://fal.test/x")
    answer = await client(
        lambda r: httpx.Response(
            504,
            json={"detail": "Request timed out", "error_type": "request_timeout"},
            headers={"x-fal-request-id": "req-1", "x-fal-error-type": "request_timeout"},
        )
    ).result("http://fal.test/x")
    assert (answer.ok, answer.error_type) == (False, "request_timeout")
    with pytest.raises(FalUnavailable):
        await client(_raise(httpx.ReadTimeout("slow"))).result("http://fal.test/x")


def _as_sent(request: httpx.Request) -> tuple[str, str, list[tuple[bytes, bytes]], bytes, object]:
    return (
        request.method,
        str(request.url),
        request.headers.raw,
        request.read(),
        request.extensions.get("timeout"),
    )


async def test_each_call_is_the_request_httpx_client_would_send() -> None:
    """The client hands its requests to the transport itself (`FalClient._send`): each must be
    the one `AsyncClient.request` builds, header for header and byte for byte, the client's
    default headers, timeout and cookies included."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(200, json=SUBMITTED, headers={"set-cookie": "lb=7; Path=/"})
        if request.method == "PUT":
            return httpx.Response(202, json={"status": "CANCELLATION_REQUESTED"})
        if request.url.path.endswith("/status"):
            return httpx.Response(202, json={"status": "IN_QUEUE", "queue_position": 0})
        return httpx.Response(200, json={"images": []})

    def recorder(into: list[httpx.Request]) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            into.append(request)
            return answer(request)

        return httpx.MockTransport(handler)

    hooked: list[str] = []

    async def on_request(request: httpx.Request) -> None:
        hooked.append(f"{request.method} sent")

    async def on_response(response: httpx.Response) -> None:
        hooked.append(f"{response.request.method} answered {response.status_code}")

    seen: list[httpx.Request] = []
    http = httpx.AsyncClient(
        transport=recorder(seen),
        timeout=httpx.Timeout(30, connect=5),
        headers={"User-Agent": "falrelay"},
        event_hooks={"request": [on_request], "response": [on_response]},
    )
    fal = FalClient(http, queue_url="http://fal.test/", key="secret-key", media_ttl_seconds=60)
    arguments = {"prompt": "ünïcode ✓", "n": 1.5e16, "seed": 2**70, "nested": {"a": [1, None]}}
    webhook = "https://relay.example/callbacks/fal/job_1/tok?x=a b&y=é"
    await fal.submit(MODEL, arguments, webhook_url=webhook, low_priority=True, start_timeout=2.5)
    await fal.submit(MODEL, arguments, webhook_url=None)  # now with fal's cookie
    await fal.status(STATUS_URL)
    await fal.result(RESULT_URL)
    await fal.cancel(CANCEL_URL)

    # What the client sent before: AsyncClient's own request building, from a fresh client.
    expected: list[httpx.Request] = []
    reference = httpx.AsyncClient(
        transport=recorder(expected),
        timeout=httpx.Timeout(30, connect=5),
        headers={"User-Agent": "falrelay"},
    )
    submit_headers = {
        "Authorization": "Key secret-key",
        "X-Fal-Object-Lifecycle-Preference": '{"expiration_duration_seconds":60}',
    }
    url = f"http://fal.test/{MODEL}"
    await reference.post(
        f"{url}?fal_webhook={quote(webhook, safe='')}",
        json=arguments,
        headers={**submit_headers, "X-Fal-Queue-Priority": "low", "X-Fal-Request-Timeout": "2.5"},
    )
    await reference.post(url, json=arguments, headers=submit_headers)
    await reference.get(STATUS_URL, headers={"Authorization": "Key secret-key"})
    await reference.get(RESULT_URL, headers={"Authorization": "Key secret-key"})
    await reference.put(CANCEL_URL, headers={"Authorization": "Key secret-key"})

    assert [_as_sent(r) for r in seen] == [_as_sent(r) for r in expected]
    assert (b"Cookie", b"lb=7") in seen[1].headers.raw
    assert hooked[:4] == ["POST sent", "POST answered 200", "POST sent", "POST answered 200"]
    assert len(hooked) == 10
