"""A webhook's bytes on the wire are what fal's webhooks sent through httpx's client (over the
same transport as the fal client's) before the sender went straight to the wire: request line,
headers in their order and case, and body, for URLs of every shape. A raw socket on loopback
records both."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from app.fakefal.signing import WebhookSigner
from app.fakefal.stats import Stats
from app.fakefal.webhooks import FIRST_ATTEMPT_TIMEOUT, WebhookSender
from app.fal.transport import FalTransport
from tests.servers import recording_server


def answering(status: int = 200) -> Callable[[bytes, int], bytes]:
    return lambda request, n: f"HTTP/1.1 {status} X\r\ncontent-length: 2\r\n\r\nok".encode()


async def httpx_sent(
    signer: WebhookSigner, url: str, request_id: str, user_id: str, at: int, body: bytes
) -> None:
    """A webhook as the sender sent it through httpx."""
    headers = {"Content-Type": "application/json", **signer.headers(request_id, user_id, at, body)}
    async with httpx.AsyncClient(
        transport=FalTransport(), follow_redirects=False, trust_env=False
    ) as client:
        await client.post(url, content=body, headers=headers, timeout=FIRST_ATTEMPT_TIMEOUT)


def timestamp(request: bytes) -> int:
    for line in request.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"x-fal-webhook-timestamp":
            return int(value)
    raise AssertionError("no timestamp header")


PATHS = [
    "/hook",
    "/callbacks/fal/0b4c1a52-8a7e-4c1e-9d0f-2f8f0e8c6b11/tok_en-42",
    "/a%2Fb/c%20d",
    "/café/ünïcode",
    "/q?x=1&y=%20z&z=a+b",
    "/q?fal=%E2%9C%93&empty=&flag",
    "/q?raw=a b&t=✓",
    "/path/../dot/./s",
    "/trailing/",
    "",
]
BODIES = [
    b'{"request_id": "r", "status": "OK", "payload": {"images": []}}',
    '{"payload": {"prompt": "a fox \u2603 in snow"}}'.encode(),
    b"x" * 70_000,
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_webhook_is_the_bytes_httpx_sent(path: str, host: str) -> None:
    signer, user_id = WebhookSigner(), "user-1"
    async with recording_server(answering()) as (port, seen):
        url = f"http://{host}:{port}{path}"
        sender = WebhookSender(signer, Stats())
        try:
            for body in BODIES:
                assert await sender.send(url, "req-1", body, user_id=user_id, retry_delays=[])
                sent = seen[-1]
                # The same moment signs the same bytes (Ed25519 is deterministic).
                await httpx_sent(signer, url, "req-1", user_id, timestamp(sent), body)
                assert seen[-1] == sent
        finally:
            await sender.aclose()


async def test_a_non_2xx_answer_is_retried_with_the_same_bytes_signed_again() -> None:
    stats = Stats()
    async with recording_server(answering(503)) as (port, seen):
        sender = WebhookSender(WebhookSigner(), stats)
        try:
            delivered = await sender.send(
                f"http://127.0.0.1:{port}/hook", "r", b"{}", user_id="u", retry_delays=[0.01]
            )
        finally:
            await sender.aclose()
    assert not delivered
    assert len(seen) == 2
    assert (stats.webhook_attempts, stats.webhook_failed_attempts) == (2, 2)
    assert stats.webhooks_abandoned == 1


@pytest.mark.parametrize("url", ["http://", "http://[::1/x", "http://bad host/x"])
async def test_a_url_httpx_refused_counts_as_failed_attempts(url: str) -> None:
    stats = Stats()
    sender = WebhookSender(WebhookSigner(), stats)
    try:
        assert not await sender.send(url, "r", b"{}", user_id="u", retry_delays=[0.0, 0.0])
    finally:
        await sender.aclose()
    assert (stats.webhook_attempts, stats.webhook_failed_attempts) == (3, 3)
    assert stats.webhooks_abandoned == 1
