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
from app.fal.transport import AiohttpTransport

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


class WebhookSender:
    """Signs and POSTs webhooks. Its HTTP client is made on first use, on the loop that serves
    the fake: a mounted app's lifespan never runs, so nothing may depend on one."""

    def __init__(self, signer: WebhookSigner, stats: Stats) -> None:
        self._signer = signer
        self._stats = stats
        self._client: httpx.AsyncClient | None = None

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
        for attempt, delay in enumerate([0.0, *retry_delays]):
            if delay:
                await asyncio.sleep(delay)
            # Signed afresh per attempt, as the timestamp is part of the signed message.
            headers = {
                "Content-Type": "application/json",
                **self._signer.headers(request_id, user_id, int(time.time()), body),
            }
            timeout = FIRST_ATTEMPT_TIMEOUT if attempt == 0 else RETRY_TIMEOUT
            self._stats.webhook_attempts += 1
            try:
                response = await self._http().post(
                    url, content=body, headers=headers, timeout=timeout
                )
            except (httpx.HTTPError, httpx.InvalidURL):
                self._stats.webhook_failed_attempts += 1
                continue
            if response.is_success:
                self._stats.webhooks_sent += 1
                return True
            self._stats.webhook_failed_attempts += 1
            if 300 <= response.status_code < 400:
                break
        self._stats.webhooks_abandoned += 1
        return False

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # trust_env=False: an HTTP(S)_PROXY meant for the internet must not capture
            # deliveries to a receiver on localhost. aiohttp's pool underneath: with thousands
            # of webhooks waiting for a connection, httpcore's pool rescans the waiters at every
            # request (quadratic), and the fake stopped answering at ~500 jobs/s.
            self._client = httpx.AsyncClient(
                transport=AiohttpTransport(), follow_redirects=False, trust_env=False
            )
        return self._client
