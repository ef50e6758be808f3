"""Endpoints, deliveries and `falrelay.webhooks.verify` against real signed deliveries, caught
by a receiver on loopback. The sync client runs in a thread: the servers and the test's
database checks share nothing with it but HTTP and Postgres."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from falrelay import (
    AsyncClient,
    Client,
    JobEvent,
    NotFoundError,
    PingEvent,
    WebhookVerificationError,
)
from falrelay.webhooks import verify
from tests.receivers import Received, Receiver
from tests.sdk.support import key_of
from tests.servers import LiveServer
from tests.stack import StackFactory

FOX = {"prompt": "a red fox in snow", "resolution": "1K"}
UNRELATED = "whsec_" + "A" * 32


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver()
    with LiveServer(receiver.app) as server:
        yield receiver, server.url


def arrived(inbox: Receiver, path: str, count: int, within: float = 10.0) -> list[Received]:
    deadline = time.monotonic() + within
    while len(inbox.at(path)) < count:
        assert time.monotonic() < deadline, f"{path}: {len(inbox.at(path))} of {count}"
        time.sleep(0.02)
    return inbox.at(path)


def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


async def test_endpoints_deliveries_and_verified_webhooks(
    make_stack: StackFactory, receiver: tuple[Receiver, str]
) -> None:
    inbox, receiver_url = receiver
    async with make_stack() as stack:

        def scenario() -> None:
            with Client(key_of(stack), base_url=stack.service_url) as client:
                endpoint = client.webhook_endpoints.create(
                    f"{receiver_url}/hooks", event_types=["job.succeeded"], description="sdk"
                )
                assert endpoint.secret.startswith("whsec_")
                assert endpoint.event_types == ["job.succeeded"]
                assert client.webhook_endpoints.get(endpoint.id).description == "sdk"
                assert [e.id for e in client.webhook_endpoints.list()] == [endpoint.id]
                changed = client.webhook_endpoints.update(endpoint.id, description="changed")
                assert changed.description == "changed"

                job = client.jobs.create(FOX, wait=True)
                (delivered,) = arrived(inbox, "/hooks", 1)
                event = verify(delivered.body, delivered.headers, endpoint.secret)
                assert isinstance(event, JobEvent)
                assert event.type == "job.succeeded"
                assert event.data == job
                assert event.id == delivered.headers["webhook-id"]
                with pytest.raises(WebhookVerificationError):
                    verify(delivered.body.replace(b"succeeded", b"failed"), delivered.headers,
                           endpoint.secret)  # fmt: skip
                with pytest.raises(WebhookVerificationError):
                    verify(delivered.body, delivered.headers, UNRELATED)

                until(lambda: next(client.deliveries.list(job_id=job.id)).status == "succeeded")
                (delivery,) = client.deliveries.list(endpoint_id=endpoint.id)
                assert delivery.event_id == event.id
                assert [d.id for d in client.deliveries.list(job_id=job.id)] == [delivery.id]
                (attempt,) = client.deliveries.get(delivery.id).attempts or []
                assert attempt.status_code == 200

                again = client.deliveries.retry(delivery.id)
                assert again.id == delivery.id
                _, resent = arrived(inbox, "/hooks", 2)
                assert resent.headers["webhook-id"] == event.id
                assert verify(resent.body, resent.headers, endpoint.secret) == event

                # During a rotation both secrets sign, so receivers can switch at leisure.
                new_secret = client.webhook_endpoints.rotate_secret(endpoint.id)
                client.webhook_endpoints.test(endpoint.id)
                _, _, ping = arrived(inbox, "/hooks", 3)
                assert len(ping.headers["webhook-signature"].split()) == 2
                for secrets in (endpoint.secret, new_secret, [UNRELATED, new_secret]):
                    pinged = verify(ping.body, ping.headers, secrets)
                    assert isinstance(pinged, PingEvent)
                    assert pinged.data["endpoint_id"] == endpoint.id

                assert client.webhook_endpoints.recover(endpoint.id, since=datetime.now(UTC)) == 0
                client.webhook_endpoints.delete(endpoint.id)
                with pytest.raises(NotFoundError):
                    client.webhook_endpoints.get(endpoint.id)

        await asyncio.to_thread(scenario)

        rows = await stack.pool.fetch(
            "SELECT id FROM webhook_endpoints WHERE client_id = $1", stack.client_id
        )
        assert rows == []


async def test_a_jobs_callback_url_is_signed_with_the_default_secret(
    make_stack: StackFactory, receiver: tuple[Receiver, str]
) -> None:
    inbox, receiver_url = receiver
    async with (
        make_stack() as stack,
        AsyncClient(key_of(stack), base_url=stack.service_url) as client,
    ):
        secret = await client.webhook_secret()
        job = await client.jobs.create(FOX, callback_url=f"{receiver_url}/job", wait=True)
        (delivered,) = await asyncio.to_thread(arrived, inbox, "/job", 1)
        event = verify(delivered.body, delivered.headers, secret)
        assert isinstance(event, JobEvent)
        assert event.data == job

        endpoint = await client.webhook_endpoints.create(f"{receiver_url}/async")
        assert [e.id async for e in client.webhook_endpoints.list()] == [endpoint.id]
        updated = await client.webhook_endpoints.update(endpoint.id, enabled=False)
        assert updated.enabled is False
        [listed] = [d async for d in client.deliveries.list(job_id=job.id)]
        assert (await client.deliveries.get(listed.id)).url == f"{receiver_url}/job"

        listed_models = {m.id: m for m in await client.models.list()}
        model = listed_models[job.model]
        assert "prompt" in model.input_schema["properties"]
        assert model.price.by_resolution == {"1K": Decimal("0.03"), "2K": Decimal("0.05")}
        assert any(m.category == "image-to-video" for m in listed_models.values())


async def test_the_default_secret_rotates_through_both_clients(
    make_stack: StackFactory, receiver: tuple[Receiver, str]
) -> None:
    inbox, receiver_url = receiver
    async with (
        make_stack() as stack,
        AsyncClient(key_of(stack), base_url=stack.service_url) as client,
    ):
        first = await client.webhook_secret()
        second = await client.rotate_webhook_secret(grace_period_seconds=3600)
        assert second != first
        assert await client.webhook_secret() == second

        def rotate_sync() -> str:
            with Client(key_of(stack), base_url=stack.service_url) as sync_client:
                return sync_client.rotate_webhook_secret()  # the default grace: 24 h

        third = await asyncio.to_thread(rotate_sync)
        assert await client.webhook_secret() == third
        stored = await stack.pool.fetchval(
            "SELECT webhook_secrets FROM clients WHERE id = $1", stack.client_id
        )
        assert [s["secret"] for s in stored] == [first, second, third]

        job = await client.jobs.create(FOX, callback_url=f"{receiver_url}/rotated", wait=True)
        (delivered,) = await asyncio.to_thread(arrived, inbox, "/rotated", 1)
        assert len(delivered.headers["webhook-signature"].split()) == 3
        for secret in (first, second, third):
            event = verify(delivered.body, delivered.headers, secret)
            assert isinstance(event, JobEvent)
            assert event.data.id == job.id
