"""Webhook deliveries end to end: a job at the fake fal, receivers on loopback."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.receivers import Answer, Received, Receiver
from tests.servers import LiveServer
from tests.stack import Stack, StackFactory
from tests.support import fail_deliveries, until


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver()
    with LiveServer(receiver.app) as server:
        yield receiver, server.url


async def register(stack: Stack, url: str, **body: Any) -> dict[str, Any]:
    response = await stack.api.post("/v1/webhook-endpoints", json={"url": url, **body})
    assert response.status_code == 201, response.text
    endpoint: dict[str, Any] = response.json()
    return endpoint


def verified(secret: str, request: Received) -> dict[str, Any]:
    body: dict[str, Any] = Webhook(secret).verify(request.body, request.headers)
    return body


async def deliveries_of(stack: Stack, endpoint: dict[str, Any]) -> list[dict[str, Any]]:
    page = (await stack.api.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries")).json()
    data: list[dict[str, Any]] = page["data"]
    return data


async def test_subscribed_events_arrive_signed_with_the_job(
    make_stack: StackFactory, receiver: tuple[Receiver, str]
) -> None:
    inbox, url = receiver
    async with make_stack() as stack:
        every = await register(
            stack,
            f"{url}/every",
            event_types=["job.submitted", "job.running", "job.succeeded", "job.failed"],
        )
        terminal = await register(stack, f"{url}/terminal")
        failures = await register(stack, f"{url}/failures", event_types=["job.failed"])
        job = await stack.wait_for(await stack.create_job())
        await until(lambda: len(inbox.at("/every")) == 2 and len(inbox.at("/terminal")) == 1)

        submitted, succeeded = (verified(every["secret"], r) for r in inbox.at("/every"))
        assert [submitted["type"], succeeded["type"]] == ["job.submitted", "job.succeeded"]
        assert succeeded["data"] == job
        assert submitted["data"]["status"] == "submitted"
        (only,) = inbox.at("/terminal")
        assert verified(terminal["secret"], only)["data"] == job
        assert only.headers["webhook-id"].startswith("evt_")
        assert only.headers["content-type"] == "application/json"
        await asyncio.sleep(0.2)
        assert inbox.at("/failures") == []
        assert await deliveries_of(stack, failures) == []
        # The endpoint's log shows the delivery and its one successful attempt.
        (delivery,) = await _settled(stack, terminal, lambda d: d["status"] == "succeeded")
        assert delivery["event_id"] == only.headers["webhook-id"]
        detail = (await stack.api.get(f"/v1/deliveries/{delivery['id']}")).json()
        (attempt,) = detail["attempts"]
        assert attempt["status_code"] == 200
        assert attempt["response_body"] == "ok"


async def test_a_jobs_callback_url_gets_its_terminal_event_signed_with_the_default_secret(
    make_stack: StackFactory, receiver: tuple[Receiver, str]
) -> None:
    inbox, url = receiver
    async with make_stack() as stack:
        # The client never asked for its secret: deliveries are signed all the same.
        response = await stack.api.post(
            "/v1/jobs", json={"input": {"prompt": "p"}, "callback_url": f"{url}/job-cb"}
        )
        job = await stack.wait_for(response.json()["id"])
        await until(lambda: len(inbox.at("/job-cb")) == 1)
        secret = (await stack.api.get("/v1/webhook-secret")).json()["secret"]
        (request,) = inbox.at("/job-cb")
        body = verified(secret, request)
        assert body["type"] == "job.succeeded"
        # The whole payload is compared in test_the_event_payload_is_the_job_as_it_became.
        assert (body["data"]["id"], body["data"]["status"]) == (job["id"], "succeeded")
        assert body["data"]["output"] == job["output"]

        async def recorded() -> bool:
            page = (await stack.api.get(f"/v1/jobs/{job['id']}/deliveries")).json()
            return [(d["url"], d["status"]) for d in page["data"]] == [
                (f"{url}/job-cb", "succeeded")
            ]

        await until(recorded)


async def test_a_failed_attempt_is_retried_with_the_same_webhook_id(
    make_stack: StackFactory, receiver: tuple[Receiver, str]
) -> None:
    inbox, url = receiver
    inbox.script("/flaky", Answer(500, b"boom"))
    async with make_stack() as stack:
        endpoint = await register(stack, f"{url}/flaky")
        await stack.wait_for(await stack.create_job())
        await until(lambda: len(inbox.at("/flaky")) == 1)
        (delivery,) = await _settled(stack, endpoint, lambda d: d["last_status_code"] == 500)
        assert delivery["status"] == "pending"
        assert delivery["attempt_count"] == 1
        # The schedule's next attempt is 5 s (±20 %) away.
        row = await stack.pool.fetchrow(
            "SELECT next_attempt_at - now() AS wait FROM deliveries WHERE endpoint_id = $1",
            _uuid(endpoint["id"]),
        )
        assert row is not None
        assert 3.5 < row["wait"].total_seconds() < 6.1
        # Time passes (the test moves the clock instead of sleeping).
        await stack.pool.execute(
            "UPDATE delivery_queue SET next_attempt_at = now() WHERE endpoint_id = $1",
            _uuid(endpoint["id"]),
        )
        await until(lambda: len(inbox.at("/flaky")) == 2)
        first, second = inbox.at("/flaky")
        assert first.headers["webhook-id"] == second.headers["webhook-id"]
        assert first.body == second.body
        (delivery,) = await _settled(stack, endpoint, lambda d: d["status"] == "succeeded")
        assert delivery["attempt_count"] == 2
        detail = (await stack.api.get(f"/v1/deliveries/{delivery['id']}")).json()
        assert [a["status_code"] for a in detail["attempts"]] == [500, 200]
        assert detail["attempts"][0]["response_body"] == "boom"


async def test_410_disables_the_endpoint(
    make_stack: StackFactory, receiver: tuple[Receiver, str]
) -> None:
    inbox, url = receiver
    inbox.script("/gone", then=Answer(410))
    async with make_stack() as stack:
        endpoint = await register(stack, f"{url}/gone")
        await stack.wait_for(await stack.create_job())
        await _settled(stack, endpoint, lambda d: d["status"] == "failed")
        current = (await stack.api.get(f"/v1/webhook-endpoints/{endpoint['id']}")).json()
        assert current["enabled"] is False
        assert "410" in current["disabled_reason"]
        # A disabled endpoint gets no deliveries for new events.
        await stack.wait_for(await stack.create_job())
        await asyncio.sleep(0.2)
        assert len(await deliveries_of(stack, endpoint)) == 1
        assert len(inbox.at("/gone")) == 1


async def test_redirects_are_failures_and_not_followed(
    make_stack: StackFactory, receiver: tuple[Receiver, str]
) -> None:
    inbox, url = receiver
    inbox.script("/moved", Answer(302, headers={"Location": f"{url}/elsewhere"}))
    async with make_stack() as stack:
        endpoint = await register(stack, f"{url}/moved")
        await stack.wait_for(await stack.create_job())
        (delivery,) = await _settled(stack, endpoint, lambda d: d["last_status_code"] == 302)
        assert delivery["status"] == "pending"
        assert inbox.at("/elsewhere") == []


async def test_retry_after_is_honoured(
    make_stack: StackFactory, receiver: tuple[Receiver, str]
) -> None:
    inbox, url = receiver
    inbox.script("/busy", Answer(429, headers={"Retry-After": "3600"}))
    async with make_stack() as stack:
        endpoint = await register(stack, f"{url}/busy")
        await stack.wait_for(await stack.create_job())
        await _settled(stack, endpoint, lambda d: d["last_status_code"] == 429)
        wait = await stack.pool.fetchval(
            "SELECT next_attempt_at - now() FROM deliveries WHERE endpoint_id = $1",
            _uuid(endpoint["id"]),
        )
        assert 3590 < wait.total_seconds() <= 3600


async def test_an_endpoint_failing_for_five_days_is_disabled(
    make_stack: StackFactory, receiver: tuple[Receiver, str]
) -> None:
    inbox, url = receiver
    inbox.script("/down", then=Answer(503))
    async with make_stack() as stack:
        endpoint = await register(stack, f"{url}/down")
        await stack.pool.execute(
            "UPDATE webhook_endpoints SET failing_since = now() - interval '5 days 1 minute' "
            "WHERE id = $1",
            _uuid(endpoint["id"]),
        )
        await stack.wait_for(await stack.create_job())
        await until(lambda: len(inbox.at("/down")) == 1)
        await until(lambda: _endpoint_disabled(stack, endpoint))
        current = (await stack.api.get(f"/v1/webhook-endpoints/{endpoint['id']}")).json()
        assert current["disabled_reason"] == "every delivery failed for 5 days"


async def _endpoint_disabled(stack: Stack, endpoint: dict[str, Any]) -> bool:
    current = (await stack.api.get(f"/v1/webhook-endpoints/{endpoint['id']}")).json()
    return current["enabled"] is False


async def test_a_success_clears_the_failing_period(
    make_stack: StackFactory, receiver: tuple[Receiver, str]
) -> None:
    _, url = receiver
    async with make_stack() as stack:
        endpoint = await register(stack, f"{url}/fine")
        await stack.pool.execute(
            "UPDATE webhook_endpoints SET failing_since = now() - interval '1 day' WHERE id = $1",
            _uuid(endpoint["id"]),
        )
        await stack.wait_for(await stack.create_job())
        await _settled(stack, endpoint, lambda d: d["status"] == "succeeded")
        await until(lambda: _failing_since(stack, endpoint, None))


async def _failing_since(stack: Stack, endpoint: dict[str, Any], expected: object) -> bool:
    current = (await stack.api.get(f"/v1/webhook-endpoints/{endpoint['id']}")).json()
    return bool(current["failing_since"] == expected)


async def test_a_hanging_receiver_does_not_delay_a_healthy_one(
    make_stack: StackFactory, receiver: tuple[Receiver, str]
) -> None:
    inbox, url = receiver
    inbox.script("/hang", then=Answer(delay=6))
    settings = {
        "delivery_concurrency": 6,
        "delivery_per_endpoint_concurrency": 2,
        "delivery_timeout_seconds": 5,
        "delivery_lease_seconds": 10,
        "shutdown_timeout_seconds": 0.5,
    }
    async with make_stack(**settings) as stack:
        await register(stack, f"{url}/hang")
        await register(stack, f"{url}/healthy")
        started = time.monotonic()
        jobs = [await stack.create_job(f"job {i}") for i in range(8)]
        await until(lambda: len(inbox.at("/healthy")) == 8, within=10)
        # All eight arrived before the first hanging call could even time out.
        assert time.monotonic() - started < 5
        # The hanging receiver holds no more than its cap of connections.
        assert len(inbox.at("/hang")) == 2
        assert len(jobs) == 8


async def test_deliveries_sign_with_every_active_secret_during_rotation(
    make_stack: StackFactory, receiver: tuple[Receiver, str]
) -> None:
    inbox, url = receiver
    async with make_stack() as stack:
        endpoint = await register(stack, f"{url}/rotating")
        old = endpoint["secret"]
        rotated = await stack.api.post(
            f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret",
            json={"grace_period_seconds": 3600},
        )
        new = rotated.json()["secret"]
        await stack.wait_for(await stack.create_job())
        await until(lambda: len(inbox.at("/rotating")) == 1)
        (request,) = inbox.at("/rotating")
        assert len(request.headers["webhook-signature"].split(" ")) == 2
        assert verified(old, request) == verified(new, request)

        # Rotating with no grace retires `new` at once; `old` keeps its own hour.
        newest = (
            await stack.api.post(
                f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret",
                json={"grace_period_seconds": 0},
            )
        ).json()["secret"]
        await stack.wait_for(await stack.create_job())
        await until(lambda: len(inbox.at("/rotating")) == 2)
        latest = inbox.at("/rotating")[1]
        assert len(latest.headers["webhook-signature"].split(" ")) == 2
        verified(newest, latest)
        verified(old, latest)
        with pytest.raises(WebhookVerificationError):
            verified(new, latest)


async def test_a_ping_after_many_rotations_carries_three_signatures(
    make_stack: StackFactory, receiver: tuple[Receiver, str]
) -> None:
    inbox, url = receiver
    async with make_stack() as stack:
        endpoint = await register(stack, f"{url}/often-rotated")
        issued = [endpoint["secret"]]
        for _ in range(20):
            rotated = await stack.api.post(
                f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret",
                json={"grace_period_seconds": 3600},
            )
            issued.append(rotated.json()["secret"])
        ping = await stack.api.post(f"/v1/webhook-endpoints/{endpoint['id']}/test")
        assert ping.status_code == 202, ping.text
        await until(lambda: len(inbox.at("/often-rotated")) == 1)
    (request,) = inbox.at("/often-rotated")
    signatures = request.headers["webhook-signature"].split(" ")
    assert len(signatures) == 3
    assert len(request.headers["webhook-signature"]) < 200
    for secret in issued[-3:]:
        assert verified(secret, request)["type"] == "ping"
    for secret in issued[:-3]:
        with pytest.raises(WebhookVerificationError):
            verified(secret, request)


async def test_a_callback_url_is_signed_with_both_default_secrets_during_rotation(
    make_stack: StackFactory, receiver: tuple[Receiver, str]
) -> None:
    inbox, url = receiver
    async with make_stack() as stack:
        old = (await stack.api.get("/v1/webhook-secret")).json()["secret"]
        rotated = await stack.api.post(
            "/v1/webhook-secret/rotate", json={"grace_period_seconds": 3600}
        )
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["secret"]
        response = await stack.api.post(
            "/v1/jobs", json={"input": {"prompt": "p"}, "callback_url": f"{url}/cb-rotating"}
        )
        await stack.wait_for(response.json()["id"])
        await until(lambda: len(inbox.at("/cb-rotating")) == 1)
        (request,) = inbox.at("/cb-rotating")
        assert len(request.headers["webhook-signature"].split(" ")) == 2
        assert verified(old, request) == verified(new, request)

        # With no grace the old one stops signing at once.
        newest = (
            await stack.api.post("/v1/webhook-secret/rotate", json={"grace_period_seconds": 0})
        ).json()["secret"]
        response = await stack.api.post(
            "/v1/jobs", json={"input": {"prompt": "p"}, "callback_url": f"{url}/cb-rotating"}
        )
        await stack.wait_for(response.json()["id"])
        await until(lambda: len(inbox.at("/cb-rotating")) == 2)
        latest = inbox.at("/cb-rotating")[1]
        verified(newest, latest)
        verified(old, latest)  # still in its hour
        with pytest.raises(WebhookVerificationError):
            verified(new, latest)


async def test_manual_retry_and_recover(
    make_stack: StackFactory, receiver: tuple[Receiver, str]
) -> None:
    inbox, url = receiver
    inbox.script("/later", then=Answer(500))
    async with make_stack() as stack:
        endpoint = await register(stack, f"{url}/later")
        for i in range(3):
            await stack.wait_for(await stack.create_job(f"job {i}"))
        await until(lambda: len(inbox.at("/later")) == 3)

        # The receiver has answered; wait until the answers are recorded too, or a late record
        # would undo what follows.
        async def recorded() -> bool:
            count = await stack.pool.fetchval(
                "SELECT count(*) FROM delivery_attempts a JOIN deliveries d "
                "ON d.id = a.delivery_id WHERE d.endpoint_id = $1",
                _uuid(endpoint["id"]),
            )
            return bool(count == 3)

        await until(recorded)
        # Exhaust the schedule at once: the deliveries are failed, out of the queue.
        await fail_deliveries(stack.pool, "endpoint_id = $1", _uuid(endpoint["id"]))
        inbox.script("/later", then=Answer(200))
        first, *_ = await deliveries_of(stack, endpoint)

        retried = await stack.api.post(f"/v1/deliveries/{first['id']}/retry")
        assert retried.status_code == 202
        await until(lambda: len(inbox.at("/later")) == 4)
        await _settled(
            stack, endpoint, lambda d: d["id"] != first["id"] or d["status"] == "succeeded", count=3
        )

        recovered = await stack.api.post(
            f"/v1/webhook-endpoints/{endpoint['id']}/recover",
            json={"since": "2020-01-01T00:00:00Z"},
        )
        assert recovered.json() == {"requeued": 2}
        await until(lambda: len(inbox.at("/later")) == 6)
        statuses = await _settled(stack, endpoint, lambda d: d["status"] == "succeeded", count=3)
        assert [d["status"] for d in statuses] == ["succeeded"] * 3
        ids = [r.headers["webhook-id"] for r in inbox.at("/later")]
        assert len(set(ids)) == 3  # three events, each sent twice, same id each time


async def test_a_delivery_claimed_by_a_dead_worker_is_sent_after_its_lease(
    make_stack: StackFactory, receiver: tuple[Receiver, str]
) -> None:
    inbox, url = receiver
    async with make_stack() as stack:
        endpoint = await register(stack, f"{url}/after-crash")
        # Hold every new delivery as if a worker had claimed it and died.
        await stack.pool.execute(
            "ALTER TABLE delivery_queue ALTER COLUMN locked_until"
            " SET DEFAULT now() + interval '1 hour'"
        )
        try:
            await stack.wait_for(await stack.create_job())
            await asyncio.sleep(0.3)
            assert inbox.at("/after-crash") == []
        finally:
            await stack.pool.execute(
                "ALTER TABLE delivery_queue ALTER COLUMN locked_until DROP DEFAULT"
            )
        await stack.pool.execute(
            "UPDATE delivery_queue SET locked_until = now() - interval '1 second' "
            "WHERE endpoint_id = $1",
            _uuid(endpoint["id"]),
        )
        await until(lambda: len(inbox.at("/after-crash")) == 1)
        (delivery,) = await _settled(stack, endpoint, lambda d: d["status"] == "succeeded")
        assert delivery["attempt_count"] == 1


async def test_the_connect_time_guard_refuses_a_target_that_turned_private(
    make_stack: StackFactory, receiver: tuple[Receiver, str]
) -> None:
    inbox, url = receiver
    async with make_stack(allow_private_webhook_urls=False) as stack:
        endpoint = await register(stack, "https://93.184.215.14/hook")
        # DNS rebinding, as the database sees it: the endpoint's host now means loopback.
        await stack.pool.execute(
            "UPDATE webhook_endpoints SET url = $2 WHERE id = $1",
            _uuid(endpoint["id"]),
            f"{url}/rebound",
        )
        await stack.wait_for(await stack.create_job())
        (delivery,) = await _settled(stack, endpoint, lambda d: d["last_error"] is not None)
        assert delivery["last_error"].startswith("refused_address")
        assert delivery["last_status_code"] is None
        await asyncio.sleep(0.2)
        assert inbox.received == []


async def _settled(
    stack: Stack,
    endpoint: dict[str, Any],
    condition: Callable[[dict[str, Any]], bool],
    *,
    count: int = 1,
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        deliveries = await deliveries_of(stack, endpoint)
        if len(deliveries) == count and all(condition(d) for d in deliveries):
            return deliveries
        assert time.monotonic() < deadline, deliveries
        await asyncio.sleep(0.02)


def _uuid(public_id: str) -> uuid.UUID:
    return uuid.UUID(hex=public_id.split("_", 1)[1])


async def test_binary_answers_are_recorded_and_do_not_block_other_results(
    make_stack: StackFactory, receiver: tuple[Receiver, str]
) -> None:
    inbox, url = receiver
    gzipped = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + bytes(range(256)) * 12
    inbox.script("/binary", then=Answer(200, gzipped, {"Content-Encoding": "gzip"}))
    async with make_stack() as stack:
        binary = await register(stack, f"{url}/binary")
        plain = await register(stack, f"{url}/plain")
        await stack.wait_for(await stack.create_job())
        (delivery,) = await _settled(stack, binary, lambda d: d["status"] == "succeeded")
        await _settled(stack, plain, lambda d: d["status"] == "succeeded")
        detail = (await stack.api.get(f"/v1/deliveries/{delivery['id']}")).json()
        (attempt,) = detail["attempts"]
        assert "\x00" not in attempt["response_body"]
        assert 0 < len(attempt["response_body"]) <= 2048
        assert inbox.at("/binary")[0].headers["accept-encoding"] == "identity"


async def test_the_first_2_kb_of_a_slow_answer_are_kept(
    make_stack: StackFactory, receiver: tuple[Receiver, str]
) -> None:
    inbox, url = receiver
    inbox.script("/long", then=Answer(500, b"x" * 10_000))
    async with make_stack() as stack:
        endpoint = await register(stack, f"{url}/long")
        await stack.wait_for(await stack.create_job())
        (delivery,) = await _settled(stack, endpoint, lambda d: d["last_status_code"] == 500)
        detail = (await stack.api.get(f"/v1/deliveries/{delivery['id']}")).json()
        assert detail["attempts"][0]["response_body"] == "x" * 2048
