"""Completion webhooks: fal's bodies and headers, signatures that verify against the served
JWKS, retries, no redirects, and each webhook fault knob."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import httpx
import pytest

from app.fakefal.signing import WebhookSigner
from app.fakefal.webhooks import PAYLOAD_ERROR
from tests.fakefal.conftest import StartFake
from tests.fakefal.support import Receiver, RunningFake, verify_signature, wait_for

PROMPT = {"prompt": "a lighthouse", "aspect_ratio": "1:1", "resolution": "1K", "seed": 9}


async def submit(
    http: httpx.AsyncClient, fake: RunningFake, webhook: str, body: Any = PROMPT
) -> dict[str, Any]:
    response = await http.post(fake.submit_url(), json=body, params={"fal_webhook": webhook})
    assert response.status_code == 200, response.text
    submitted: dict[str, Any] = response.json()
    return submitted


async def test_ok_webhook_is_fals_body_signed_with_the_served_key(
    start_fake: StartFake, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    fake = start_fake(user_id="user-123")
    submitted = await submit(http, fake, receiver.hook)
    await wait_for(lambda: len(receiver.deliveries) == 1)
    [delivery] = receiver.deliveries
    request_id = submitted["request_id"]
    result = (await http.get(submitted["response_url"])).json()
    assert delivery.json() == {
        "request_id": request_id,
        "gateway_request_id": request_id,
        "status": "OK",
        "payload": result,
    }
    headers = delivery.headers
    assert headers["content-type"] == "application/json"
    assert headers["x-fal-webhook-request-id"] == request_id
    assert headers["x-fal-webhook-user-id"] == "user-123"
    assert abs(int(headers["x-fal-webhook-timestamp"]) - time.time()) < 5
    jwks = (await http.get(f"{fake.url}/.well-known/jwks.json")).json()
    [key] = jwks["keys"]
    assert (key["kty"], key["crv"]) == ("OKP", "Ed25519")
    assert "=" not in key["x"]
    assert key["kid"]
    assert verify_signature(delivery, jwks)
    # A body changed in transit, or another fake's key, does not verify.
    delivery.body += b" "
    assert not verify_signature(delivery, jwks)
    delivery.body = delivery.body[:-1]
    assert not verify_signature(delivery, WebhookSigner().jwks())
    await wait_for(lambda: fake.fake.stats.webhooks_sent == 1)


async def test_webhook_goes_after_completion_never_before(
    start_fake: StartFake, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    fake = start_fake(queue_latency=0.1, run_latency=0.2)
    started = time.monotonic()
    submitted = await submit(http, fake, receiver.hook)
    await asyncio.sleep(0.15)
    assert receiver.deliveries == []
    await wait_for(lambda: len(receiver.deliveries) == 1)
    assert receiver.deliveries[0].received_at - started >= 0.3
    status = await http.get(submitted["status_url"])
    assert status.json()["status"] == "COMPLETED"


async def test_error_webhook_carries_the_error_body(
    fake: RunningFake, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await submit(http, fake, receiver.hook, {"prompt": ""})
    await wait_for(lambda: len(receiver.deliveries) == 1)
    body = receiver.deliveries[0].json()
    assert body["status"] == "ERROR"
    assert body["error"] == "Invalid status code: 422"
    assert body["payload"]["detail"][0]["loc"] == ["body", "prompt"]


async def test_cancelled_request_sends_an_error_webhook(
    start_fake: StartFake, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    fake = start_fake(queue_latency=5.0)
    submitted = await submit(http, fake, receiver.hook)
    await http.put(submitted["cancel_url"])
    await wait_for(lambda: len(receiver.deliveries) == 1)
    body = receiver.deliveries[0].json()
    assert (body["status"], body["error"]) == ("ERROR", "Invalid status code: 499")
    assert body["payload"]["error_type"] == "client_cancelled"


async def test_non_2xx_is_retried_until_accepted(
    start_fake: StartFake, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    fake = start_fake(webhook_retry_delays=[0.05, 0.05, 0.05])
    receiver.answers = [500, 503]
    await submit(http, fake, receiver.hook)
    await wait_for(lambda: fake.fake.stats.webhooks_sent == 1)
    assert len(receiver.deliveries) == 3
    assert len({d.body for d in receiver.deliveries}) == 1
    jwks = fake.fake.signer.jwks()
    assert all(verify_signature(d, jwks) for d in receiver.deliveries)
    stats = fake.fake.stats
    assert (stats.webhook_attempts, stats.webhook_failed_attempts) == (3, 2)


async def test_retries_run_out(
    start_fake: StartFake, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    fake = start_fake(webhook_retry_delays=[0.02, 0.02])
    receiver.answers = [500] * 10
    await submit(http, fake, receiver.hook)
    await wait_for(lambda: fake.fake.stats.webhooks_abandoned == 1)
    await asyncio.sleep(0.1)
    assert len(receiver.deliveries) == 3
    assert fake.fake.stats.webhooks_sent == 0


async def test_connection_errors_are_retried(
    start_fake: StartFake, http: httpx.AsyncClient
) -> None:
    fake = start_fake(webhook_retry_delays=[0.02])
    # A port nobody listens on: bind one, note it, close it.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    await submit(http, fake, f"http://127.0.0.1:{port}/hook")
    await wait_for(lambda: fake.fake.stats.webhooks_abandoned == 1)
    assert fake.fake.stats.webhook_failed_attempts == 2


async def test_redirects_are_not_followed_and_end_delivery(
    start_fake: StartFake, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    fake = start_fake(webhook_retry_delays=[0.02, 0.02])
    await submit(http, fake, f"{receiver.url}/moved")
    await wait_for(lambda: fake.fake.stats.webhooks_abandoned == 1)
    await asyncio.sleep(0.1)
    assert [d.path for d in receiver.deliveries] == ["/moved"]


async def test_drop(start_fake: StartFake, http: httpx.AsyncClient, receiver: Receiver) -> None:
    fake = start_fake(webhook_drop_rate=1.0)
    await submit(http, fake, receiver.hook)
    await wait_for(lambda: fake.fake.stats.webhooks_dropped == 1)
    await asyncio.sleep(0.1)
    assert receiver.deliveries == []


async def test_duplicate(
    start_fake: StartFake, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    fake = start_fake(webhook_duplicate_rate=1.0)
    submitted = await submit(http, fake, receiver.hook)
    await wait_for(lambda: len(receiver.deliveries) == 2)
    assert {d.json()["request_id"] for d in receiver.deliveries} == {submitted["request_id"]}
    assert receiver.deliveries[0].body == receiver.deliveries[1].body
    await wait_for(lambda: fake.fake.stats.webhooks_duplicated == 1)


async def test_payload_error(
    start_fake: StartFake, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    fake = start_fake(payload_error_rate=1.0)
    submitted = await submit(http, fake, receiver.hook)
    await wait_for(lambda: len(receiver.deliveries) == 1)
    body = receiver.deliveries[0].json()
    assert body == {
        "request_id": submitted["request_id"],
        "gateway_request_id": submitted["request_id"],
        "status": "OK",
        "payload": None,
        "payload_error": PAYLOAD_ERROR,
    }
    # The result is still there to fetch.
    assert (await http.get(submitted["response_url"])).json()["images"]
    assert fake.fake.stats.webhooks_payload_error == 1


async def test_delay(start_fake: StartFake, http: httpx.AsyncClient, receiver: Receiver) -> None:
    fake = start_fake(webhook_delay=0.3)
    started = time.monotonic()
    submitted = await submit(http, fake, receiver.hook)
    assert (await http.get(submitted["status_url"])).json()["status"] == "COMPLETED"
    await wait_for(lambda: len(receiver.deliveries) == 1)
    assert receiver.deliveries[0].received_at - started >= 0.3


async def test_reorder_makes_webhooks_arrive_out_of_order(
    start_fake: StartFake, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    fake = start_fake(webhook_reorder=0.3, random_seed=1)
    ids = [(await submit(http, fake, receiver.hook))["request_id"] for _ in range(8)]
    await wait_for(lambda: len(receiver.deliveries) == 8)
    arrived = [d.json()["request_id"] for d in receiver.deliveries]
    assert sorted(arrived) == sorted(ids)
    assert arrived != ids


async def test_submit_does_not_wait_for_a_slow_receiver(
    start_fake: StartFake, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    fake = start_fake(webhook_delay=1.0)
    started = time.monotonic()
    await submit(http, fake, receiver.hook)
    await submit(http, fake, receiver.hook)
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize("url", ["ftp://example.invalid/x", "not a url"])
async def test_webhook_url_must_be_http(
    fake: RunningFake, http: httpx.AsyncClient, url: str
) -> None:
    response = await http.post(fake.submit_url(), json=PROMPT, params={"fal_webhook": url})
    assert response.status_code == 422
    assert fake.fake.stats.submitted == 0


async def test_each_request_records_what_became_of_its_webhook(
    start_fake: StartFake, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    # A chaos run tells an allowed duplicate submission from a bug by these: whether fal's
    # webhook for a request ever landed, and when.
    fake = start_fake(webhook_duplicate_rate=1.0, webhook_retry_delays=[0.02])
    duplicated = await submit(http, fake, receiver.hook)
    await wait_for(lambda: fake.fake.stats.webhooks_duplicated == 1)
    await http.patch(f"{fake.url}/_fake/config", json={"webhook_duplicate_rate": 0.0})
    abandoned = await submit(http, fake, f"{receiver.url}/moved")
    await wait_for(lambda: fake.fake.stats.webhooks_abandoned == 1)
    await http.patch(f"{fake.url}/_fake/config", json={"webhook_drop_rate": 1.0})
    dropped = await submit(http, fake, receiver.hook)
    await wait_for(lambda: fake.fake.stats.webhooks_dropped == 1)

    listed = {
        r["id"]: r["webhook"]
        for r in (await http.get(f"{fake.url}/_fake/requests")).json()["requests"]
    }
    assert listed[duplicated["request_id"]]["duplicated"] is True
    assert len(listed[duplicated["request_id"]]["delivered_at"]) == 2
    assert listed[duplicated["request_id"]]["abandoned"] is False
    assert listed[abandoned["request_id"]] | {"delay": 0.0} == {
        "dropped": False,
        "duplicated": False,
        "payload_error": False,
        "delay": 0.0,
        "delivered_at": [],
        "abandoned": True,
    }
    assert listed[dropped["request_id"]]["dropped"] is True
    assert listed[dropped["request_id"]]["delivered_at"] == []
    assert listed[dropped["request_id"]]["abandoned"] is False
