"""The decisions both clients share, without a network: which failures are resent and after
how long, and how event-stream lines are read."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest

from falrelay.operations import Resend
from falrelay.retries import RetryPolicy
from falrelay.sse import ServerSentEvent, SSEDecoder

POLICY = RetryPolicy(max_retries=2, initial_delay=0.5, max_delay=8.0)


def answer(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers, json={"type": "x", "status": status})


@pytest.mark.parametrize(
    ("error", "resend", "retried"),
    [
        (httpx.ConnectError("refused"), Resend.UNSENT, True),
        (httpx.ConnectTimeout("slow"), Resend.UNSENT, True),
        (httpx.ReadTimeout("sent, no answer"), Resend.UNSENT, False),
        (httpx.RemoteProtocolError("dropped"), Resend.UNSENT, False),
        (httpx.ReadTimeout("sent, no answer"), Resend.SAFE, True),
        (httpx.RemoteProtocolError("dropped"), Resend.SAFE, True),
    ],
)
def test_transport_failures(error: Exception, resend: Resend, retried: bool) -> None:
    assert (POLICY.delay(resend, 0, error=error) is not None) is retried


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_not_now_answers_are_resent_only_when_safe(status: int) -> None:
    assert POLICY.delay(Resend.SAFE, 0, response=answer(status)) is not None
    assert POLICY.delay(Resend.UNSENT, 0, response=answer(status)) is None


@pytest.mark.parametrize("status", [400, 401, 404, 409, 422, 500])
def test_other_errors_are_not_resent(status: int) -> None:
    assert POLICY.delay(Resend.SAFE, 0, response=answer(status)) is None


def test_a_key_still_in_flight_is_resent() -> None:
    in_flight = httpx.Response(
        409, json={"type": "https://falrelay.dev/problems/idempotency-key-in-flight"}
    )
    assert POLICY.delay(Resend.SAFE, 0, response=in_flight) is not None


def test_backoff_grows_with_jitter_and_stops_after_max_retries() -> None:
    error = httpx.ConnectError("refused")
    first = [POLICY.delay(Resend.SAFE, 0, error=error) for _ in range(50)]
    second = [POLICY.delay(Resend.SAFE, 1, error=error) for _ in range(50)]
    assert all(d is not None and 0.25 <= d <= 0.5 for d in first)
    assert all(d is not None and 0.5 <= d <= 1.0 for d in second)
    assert len(set(first)) > 1
    assert POLICY.delay(Resend.SAFE, 2, error=error) is None
    assert RetryPolicy(max_retries=0).delay(Resend.SAFE, 0, error=error) is None


def test_retry_after_is_honoured_in_seconds_or_as_a_date_and_too_long_is_given_up() -> None:
    assert POLICY.delay(Resend.SAFE, 0, response=answer(503, **{"Retry-After": "3"})) == 3.0
    later = email.utils.formatdate(time.time() + 10, usegmt=True)
    delay = POLICY.delay(Resend.SAFE, 0, response=answer(429, **{"Retry-After": later}))
    assert delay is not None
    assert 8 < delay <= 10
    assert POLICY.delay(Resend.SAFE, 0, response=answer(429, **{"Retry-After": "3600"})) is None


def test_the_event_stream_format() -> None:
    decoder = SSEDecoder()
    lines = [
        "retry: 1000",
        "",
        ": keep-alive",
        "",
        "id: evt_1",
        "event: job.submitted",
        "data: {",
        'data: "a": 1}',
        "",
        "data:no space",
        "",
    ]
    events = [e for e in map(decoder.decode, lines) if e is not None]
    assert events == [
        ServerSentEvent("job.submitted", '{\n"a": 1}', "evt_1"),
        # No id line: the last one carries over, as the format says.
        ServerSentEvent("message", "no space", "evt_1"),
    ]
    assert decoder.retry == 1.0
    assert decoder.last_event_id == "evt_1"


def test_an_event_cut_off_by_a_broken_connection_is_forgotten() -> None:
    decoder = SSEDecoder()
    for line in ["id: evt_1", "event: job.submitted", "data: {half"]:
        assert decoder.decode(line) is None
    decoder.discard_partial()  # the connection broke; the next one sends the event again
    for line in ["id: evt_1", "event: job.submitted", "data: {}"]:
        decoder.decode(line)
    assert decoder.decode("") == ServerSentEvent("job.submitted", "{}", "evt_1")
