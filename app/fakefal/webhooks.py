"""fal's completion webhooks: the bodies it POSTs to `fal_webhook`, and their delivery.

Delivery as fal documents it: 15 s for the first attempt, longer for retries; any non-2xx or
connection error is retried; a redirect is never followed and ends delivery (protocol notes 2.2).
Unlike fal, loopback and private targets are allowed: tests and demos receive on localhost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import httpx

from app.fakefal.failures import Failure
from app.fakefal.signing import WebhookSigner
from app.fakefal.stats import Stats
from app.fal.transport import wire_target
from app.http_client import HttpClient, HttpError, Timeouts

PAYLOAD_ERROR = (
    "Response payload is not JSON serializable. Either return a JSON serializable object or use "
    "the queue endpoint to retrieve the response."
)
FIRST_ATTEMPT_TIMEOUT = 15.0
RETRY_TIMEOUT = 120.0


def webhook_body(
    request_id: str, outcome: dict[str, Any] | Failure, *, payload_error: bool = False
) -> dict[str, Any]:
    """What fal POSTs: OK with the output, ERROR with the error body, or OK with no payload."""
    # gateway_request_id differs only when fal retried the request on another runner.
    ids = {"request_id": request_id, "gateway_request_id": request_id}
    if isinstance(outcome, Failure):
        return {**ids, "status": "ERROR", "error": outcome.webhook_error, "payload": outcome.body}
    if payload_error:
        return {**ids, "status": "OK", "payload": None, "payload_error": PAYLOAD_ERROR}
    return {**ids, "status": "OK", "payload": outcome}


# What httpx's client sent ahead of a webhook's own headers, and its User-Agent (the sender was
# an httpx.AsyncClient until it went straight to the wire; the bytes stay as they were, which
# tests/fakefal/test_webhook_wire.py checks against httpx itself).
_CLIENT_HEADERS = (
    ("accept", "*/*"),
    ("accept-encoding", "gzip, deflate"),
    ("connection", "keep-alive"),
    ("user-agent", f"python-httpx/{httpx.__version__}"),
    ("content-type", "application/json"),
)
_TIMEOUTS = {
    seconds: Timeouts(total=2 * seconds, pool=seconds, connect=seconds)
    for seconds in (FIRST_ATTEMPT_TIMEOUT, RETRY_TIMEOUT)
}
MAX_CONNECTIONS = 100


class WebhookSender:
    """Signs and POSTs webhooks on falrelay's HTTP/1.1 client (app.http_client). The client
    is made on first use, on the loop that serves the fake: a mounted app's lifespan never
    runs, so nothing may depend on one.

    Why not httpx: its client, request and response objects around each POST cost about
    0.9 ms of the fake's 3.0 ms of CPU per job (submit, then webhook, at 300 jobs/s); aiohttp,
    which came next, eight times this client's CPU per POST. The bytes on the wire are httpx's
    as before: its URL normalisation (`httpx.URL`), its headers in its order, its timeouts as
    the transport maps them (`app.fal.transport`).
    With thousands of webhooks waiting for a connection, httpcore's own pool rescans the
    waiters at every request (quadratic): the fake stopped answering at ~500 jobs/s."""

    def __init__(self, signer: WebhookSigner, stats: Stats) -> None:
        self._signer = signer
        self._stats = stats
        self._client: HttpClient | None = None

    async def send(
        self,
        url: str,
        request_id: str,
        body: bytes,
        *,
        user_id: str,
        retry_delays: Sequence[float],
    ) -> bool:
        """Deliver one webhook, retrying as configured; whether a receiver took it."""
        target: tuple[str, str] | None = None
        for attempt, delay in enumerate([0.0, *retry_delays]):
            if delay:
                await asyncio.sleep(delay)
            timeout = FIRST_ATTEMPT_TIMEOUT if attempt == 0 else RETRY_TIMEOUT
            self._stats.webhook_attempts += 1
            try:
                if target is None:
                    target = wire_target(url)
                status = await self._post(target, request_id, user_id, body, timeout)
            except (HttpError, httpx.InvalidURL):
                self._stats.webhook_failed_attempts += 1
                continue
            if 200 <= status < 300:
                self._stats.webhooks_sent += 1
                return True
            self._stats.webhook_failed_attempts += 1
            if 300 <= status < 400:
                break
        self._stats.webhooks_abandoned += 1
        return False

    async def _post(
        self,
        target: tuple[str, str],
        request_id: str,
        user_id: str,
        body: bytes,
        seconds: float,
    ) -> int:
        url, host = target
        # Signed afresh per attempt, as the timestamp is part of the signed message.
        signed = self._signer.headers(request_id, user_id, int(time.time()), body)
        headers = [
            ("host", host),
            *_CLIENT_HEADERS,
            *((name.lower(), value) for name, value in signed.items()),
            ("content-length", str(len(body))),
        ]
        if self._client is None:
            # No proxy is read from the environment: deliveries to localhost stay local.
            self._client = HttpClient(max_connections=MAX_CONNECTIONS)
        answer = await self._client.request(
            "POST", url, headers, body or None, timeouts=_TIMEOUTS[seconds]
        )
        return answer.status

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
