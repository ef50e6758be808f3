"""fal's completion webhooks: the bodies it POSTs to `fal_webhook`, and their delivery.

Delivery as fal documents it: 15 s for the first attempt, longer for retries; any non-2xx or
connection error is retried; a redirect is never followed and ends delivery (protocol notes 2.2).
Unlike fal, loopback and private targets are allowed: tests and demos receive on localhost.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import httpx
import yarl

from app.fakefal.failures import Failure
from app.fakefal.signing import WebhookSigner
from app.fakefal.stats import Stats

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
# an httpx.AsyncClient until it went straight to aiohttp; the wire stays as it was, which
# tests/fakefal/test_webhook_wire.py checks against httpx itself).
_CLIENT_HEADERS = (
    ("accept", "*/*"),
    ("accept-encoding", "gzip, deflate"),
    ("connection", "keep-alive"),
    ("user-agent", f"python-httpx/{httpx.__version__}"),
    ("content-type", "application/json"),
)
_TIMEOUTS = {
    seconds: aiohttp.ClientTimeout(
        total=2 * seconds, connect=seconds, sock_connect=seconds, sock_read=seconds
    )
    for seconds in (FIRST_ATTEMPT_TIMEOUT, RETRY_TIMEOUT)
}
MAX_CONNECTIONS = 100


class WebhookSender:
    """Signs and POSTs webhooks on aiohttp's pool. Its session is made on first use, on the
    loop that serves the fake: a mounted app's lifespan never runs, so nothing may depend on
    one.

    Why aiohttp directly, not httpx over it: httpx's client, request and response objects
    around each POST cost about 0.9 ms of the fake's 3.0 ms of CPU per job (submit, then
    webhook, at 300 jobs/s). The bytes on the wire are httpx's as before: its URL
    normalisation (`httpx.URL`), its headers in its order, its timeouts as the transport mapped
    them (`app.fal.transport`).
    With thousands of webhooks waiting for a connection, httpcore's own pool rescans the
    waiters at every request (quadratic): the fake stopped answering at ~500 jobs/s."""

    def __init__(self, signer: WebhookSigner, stats: Stats) -> None:
        self._signer = signer
        self._stats = stats
        self._session: aiohttp.ClientSession | None = None

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
        target: tuple[yarl.URL, str] | None = None
        for attempt, delay in enumerate([0.0, *retry_delays]):
            if delay:
                await asyncio.sleep(delay)
            timeout = FIRST_ATTEMPT_TIMEOUT if attempt == 0 else RETRY_TIMEOUT
            self._stats.webhook_attempts += 1
            try:
                if target is None:
                    target = _target(url)
                status = await self._post(target, request_id, user_id, body, timeout)
            except (aiohttp.ClientError, TimeoutError, httpx.InvalidURL):
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
        target: tuple[yarl.URL, str],
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
        session = self._session or self._open()
        async with session.request(
            "POST",
            url,
            headers=headers,
            data=body or None,
            allow_redirects=False,
            timeout=_TIMEOUTS[seconds],
        ) as answer:
            await answer.read()  # the connection goes back to the pool only once read
            return answer.status

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _open(self) -> aiohttp.ClientSession:
        # As the fal client's transport opens its session (app.fal.transport): no headers of
        # aiohttp's own, no decompression. An aiohttp session reads no proxy from the
        # environment (trust_env is off), so deliveries to localhost are never captured.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Content-Type", "Accept-Encoding"),
        )
        return self._session


def _target(url: str) -> tuple[yarl.URL, str]:
    """The URL as httpx encodes it, and the Host header httpx makes of it; raises
    httpx.InvalidURL where httpx refused the URL.

    Why the split: httpx's parse of each webhook's URL (unique per job) was 8 % of the fake's
    CPU end to end. Its origin (scheme and authority) is parsed by httpx once; a path and query
    made only of characters that httpx's encoding keeps, with no dot segment to remove, are
    kept as they are, which is what httpx does with them. Anything else goes to httpx whole."""
    scheme, sep, rest = url.partition("://")
    authority, slash, tail = rest.partition("/")
    plain = _PLAIN_AUTHORITY.fullmatch(authority) and _PLAIN_TAIL.fullmatch(tail)
    if sep and slash and plain and "/." not in f"/{tail}":
        origin = _origin(f"{scheme}://{authority}")
        if origin is not None:
            base, host = origin
            return yarl.URL(f"{base}/{tail}", encoded=True), host
    parsed = httpx.URL(url)
    # yarl would otherwise decode and re-encode the path and query.
    return yarl.URL(str(parsed), encoded=True), parsed.netloc.decode("ascii")


# An authority with no '%', '?' or '#' in it: httpx renders it on its own (`_origin`).
_PLAIN_AUTHORITY = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@\[\]]*")
# A path and query that httpx's percent-encoding leaves as they are: unreserved characters and
# the sub-delimiters, ':' and '@' (and '/' and '?' after the first '?'); no '%', no fragment.
_PLAIN_TAIL = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/]*(\?[A-Za-z0-9\-._~!$&'()*+,;=:@/?]*)?")


@functools.lru_cache(maxsize=64)
def _origin(origin: str) -> tuple[str, str] | None:
    """httpx's rendering of a URL's scheme and authority (its default port dropped, its host
    lower-cased) and its Host header; None where httpx would refuse it, or the rendering is not
    the origin followed by a slash."""
    try:
        parsed = httpx.URL(f"{origin}/")
    except httpx.InvalidURL:
        return None
    text = str(parsed)
    if not text.endswith("/") or parsed.raw_path != b"/":
        return None
    return text[:-1], parsed.netloc.decode("ascii")
