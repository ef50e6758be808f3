"""Fair delivery and the circuit breaker, end to end: `falrelay serve` and receivers on
loopback, a short delivery timeout so that a hanging receiver costs seconds, not minutes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from app import ids
from app.auth import service as auth_service
from app.ids import ENDPOINT_ID_PREFIX
from tests.e2e.test_deliveries import register, until
from tests.receivers import Answer, Receiver
from tests.servers import LiveServer
from tests.stack import Stack, StackFactory

HANG = Answer(delay=6.0)  # past the 4 s delivery timeout: a receiver that never answers in time
SLOTS = 16
HANGING_ENDPOINTS = 40


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver()
    with LiveServer(receiver.app) as server:
        yield receiver, server.url


async def _second_client(stack: Stack) -> httpx.AsyncClient:
    _, key = await auth_service.create_client(stack.pool, "tenant-b")
    return httpx.AsyncClient(base_url=stack.service_url, headers={"Authorization": f"Bearer {key}"})


async def test_a_clients_hanging_endpoints_do_not_delay_another_clients_webhook(
    make_stack: StackFactory, receiver: tuple[Receiver, str]
) -> None:
    inbox, url = receiver
    inbox.script("/hang", then=HANG)
    async with make_stack(
        delivery_concurrency=SLOTS,
        delivery_timeout_seconds=4.0,
        delivery_lease_seconds=8.0,
        shutdown_timeout_seconds=0.5,
        delivery_fair_share=True,  # False: B waits 7.9 s (measured)
    ) as stack:
        # A: more hanging endpoints than the process has slots, each with one delivery.
        for _ in range(HANGING_ENDPOINTS):
            await register(stack, f"{url}/hang")
        await stack.wait_for(await stack.create_job())
        # Every slot A may take is hanging before B's job exists.
        await until(lambda: len(inbox.at("/hang")) >= SLOTS // 2, within=15.0)
        async with await _second_client(stack) as b:
            response = await b.post("/v1/webhook-endpoints", json={"url": f"{url}/b"})
            assert response.status_code == 201, response.text
            started = time.monotonic()
            response = await b.post("/v1/jobs", json={"input": {"prompt": "p", "resolution": "1K"}})
            assert response.status_code == 201, response.text
            await until(lambda: len(inbox.at("/b")) == 1, within=15.0)
        latency = inbox.at("/b")[0].at - started
        # Without fair share B waits behind A's 40 deliveries: three rounds of 4 s timeouts.
        assert latency < 3.0, f"B's webhook took {latency:.1f} s"
        leased = await stack.pool.fetchval(
            "SELECT count(*) FROM delivery_queue WHERE client_id = $1 AND locked_until > now()",
            stack.client_id,
        )
    # A holds its share of what is sent, never every slot: a quarter of them stays for others.
    # A send to /hang is in flight until the 4 s timeout, so the requests that reached the
    # receiver within any span well short of that (arrivals lag sends on a busy machine) were
    # all in flight together.
    arrivals = sorted(r.at for r in inbox.at("/hang"))
    together = max(sum(1 for b in arrivals if a <= b < a + 3.0) for a in arrivals)
    assert 0 < together <= SLOTS - SLOTS // 4, arrivals
    # Leased, it holds its share of twice as many rows (app.worker.deliverer.LEASE_FACTOR): the
    # next ones are ready to go out as soon as a send ends.
    assert 0 < leased <= 2 * (SLOTS - SLOTS // 4)


async def _endpoint_state(stack: Stack, endpoint_id: str) -> tuple[int, datetime | None]:
    row = await stack.pool.fetchrow(
        "SELECT consecutive_failures, breaker_open_until FROM webhook_endpoints WHERE id = $1",
        ids.decode(ENDPOINT_ID_PREFIX, endpoint_id),
    )
    assert row is not None
    return row["consecutive_failures"], row["breaker_open_until"]


async def test_the_breaker_opens_holds_probes_and_closes_by_itself(
    make_stack: StackFactory, receiver: tuple[Receiver, str]
) -> None:
    inbox, url = receiver
    inbox.script("/flaky", then=Answer(status=500))
    async with make_stack(
        delivery_breaker_failures=3, delivery_breaker_cooldown_seconds=1.5
    ) as stack:
        endpoint = await register(stack, f"{url}/flaky")
        ping = f"/v1/webhook-endpoints/{endpoint['id']}/test"
        for _ in range(3):
            assert (await stack.api.post(ping)).status_code in (200, 201, 202)
        await until(lambda: len(inbox.at("/flaky")) == 3)
        await until(lambda: _opened(stack, endpoint["id"]))
        failures, open_until = await _endpoint_state(stack, endpoint["id"])
        assert failures == 3
        assert open_until is not None
        first_open = open_until
        # Held: new deliveries to it stay pending and unsent while it is open.
        for _ in range(2):
            assert (await stack.api.post(ping)).status_code in (200, 201, 202)
        held = await stack.pool.fetchval(
            "SELECT count(*) FROM deliveries d JOIN events e ON e.id = d.event_id "
            "WHERE d.status = 'pending' AND d.attempt_count = 0 AND e.type = 'ping'"
        )
        assert held == 2
        assert len(inbox.at("/flaky")) == 3
        # Half-open: one probe; it fails (500) and the breaker opens for twice as long.
        await until(lambda: len(inbox.at("/flaky")) >= 4, within=10.0)
        await until(lambda: _state_changed(stack, endpoint["id"], first_open), within=10.0)
        failures, open_until = await _endpoint_state(stack, endpoint["id"])
        assert failures == 4
        assert open_until is not None
        reopened_at = datetime.now(UTC)
        assert 2.0 < (open_until - reopened_at).total_seconds() <= 3.1
        assert len(inbox.at("/flaky")) == 4  # nothing more while open
        # The receiver is back: the next probe succeeds, closes it, and the rest flows.
        inbox.script("/flaky", Answer(delay=0.8), then=Answer())
        await until(lambda: len(inbox.at("/flaky")) >= 6, within=15.0)
        probe, after = inbox.at("/flaky")[4:6]
        # One probe at a time: the next request waited for the probe's answer.
        assert after.at - probe.at >= 0.7
        await until(lambda: _closed(stack, endpoint["id"]), within=10.0)
        await until(lambda: _pings_settled(stack), within=15.0)
        # The held pings were each delivered at their first attempt: holding spent none.
        attempts = await stack.pool.fetch(
            "SELECT d.attempt_count, d.status FROM deliveries d JOIN events e ON e.id = "
            "d.event_id WHERE e.type = 'ping' ORDER BY d.created_at"
        )
        assert [r["status"] for r in attempts] == ["succeeded"] * 5
        # The two held pings: one was the failed probe (attempt 1) then delivered (2), the
        # other went out once, after the breaker closed.
        assert sorted(r["attempt_count"] for r in attempts[3:]) == [1, 2]


async def _opened(stack: Stack, endpoint_id: str) -> bool:
    _, open_until = await _endpoint_state(stack, endpoint_id)
    return open_until is not None


async def _state_changed(stack: Stack, endpoint_id: str, first: datetime) -> bool:
    _, open_until = await _endpoint_state(stack, endpoint_id)
    return open_until is not None and open_until > first


async def _closed(stack: Stack, endpoint_id: str) -> bool:
    failures, open_until = await _endpoint_state(stack, endpoint_id)
    return failures == 0 and open_until is None


async def _pings_settled(stack: Stack) -> bool:
    pending = await stack.pool.fetchval(
        "SELECT count(*) FROM deliveries d JOIN events e ON e.id = d.event_id "
        "WHERE e.type = 'ping' AND d.status = 'pending'"
    )
    return bool(pending == 0)
