"""Sending one webhook: falrelay's HTTP/1.1 client (app.http_client), no redirects, a bounded
answer, and every failure named.

Not httpx, whose pool bookkeeping grows with the requests in flight (about 280 deliveries/s at
64 in flight here), nor aiohttp, whose objects around each POST cost eight times this client's
CPU. The client's guard is where the SSRF check sees every address dialled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from app.http_client import AnswerLost, HttpClient, InvalidRequest, NotSent, Timeouts, split_url
from app.retry_after import parse_retry_after
from app.webhooks import ssrf

RESPONSE_BODY_LIMIT = 2048
USER_AGENT = "falrelay-webhooks/1"
# Ahead of each delivery's own; identity: the answer is kept for people to read, not decoded.
_HEADERS = (
    ("user-agent", USER_AGENT),
    ("content-type", "application/json"),
    ("accept", "*/*"),
    ("accept-encoding", "identity"),
)


@dataclass(frozen=True, slots=True)
class AttemptResult:
    duration_ms: int
    status_code: int | None = None
    error: str | None = None  # no answer: timeout, connection, refused_address, ...
    response_body: str | None = None
    retry_after: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Sender:
    """What deliveries go out on: a client whose connections are at most `concurrency`, each
    POST bounded by `timeout` seconds in all; private addresses refused unless allowed."""

    def __init__(self, *, concurrency: int, timeout: float, allow_private: bool) -> None:
        self.client = HttpClient(
            max_connections=concurrency, guard=None if allow_private else ssrf.refuse_private
        )
        self.timeouts = Timeouts(total=timeout)

    async def close(self) -> None:
        await self.client.aclose()


def printable(raw: bytes) -> str:
    """Text Postgres can store (no NUL), whatever the receiver sent."""
    return raw.decode("utf-8", "replace").replace("\x00", "\ufffd")


async def send(sender: Sender, url: str, body: bytes, headers: dict[str, str]) -> AttemptResult:
    started = time.perf_counter()

    def elapsed() -> int:
        return int((time.perf_counter() - started) * 1000)

    try:
        origin, target = split_url(url)
        wire = [
            ("host", origin.authority),
            *_HEADERS,
            ("content-length", str(len(body))),
            *headers.items(),
        ]
        answer = await sender.client.request(
            "POST",
            (origin, target),
            wire,
            body,
            timeouts=sender.timeouts,
            body_limit=RESPONSE_BODY_LIMIT,
        )
    except InvalidRequest as exc:
        return AttemptResult(duration_ms=elapsed(), error=printable(f"invalid_url: {exc}".encode()))
    except (NotSent, AnswerLost) as exc:
        if exc.timed_out:
            return AttemptResult(duration_ms=elapsed(), error="timeout")
        cause = exc.cause
        if isinstance(exc, NotSent):
            refused = isinstance(cause, ssrf.RefusedAddress)
            error = f"{'refused_address' if refused else 'connection'}: {cause}"
        else:
            error = f"connection: {type(cause).__name__}"
        return AttemptResult(duration_ms=elapsed(), error=printable(error.encode()))
    throttled = answer.status in (429, 503)
    return AttemptResult(
        duration_ms=elapsed(),
        status_code=answer.status,
        response_body=printable(answer.body),
        retry_after=parse_retry_after(answer.headers.get("retry-after")) if throttled else None,
    )
