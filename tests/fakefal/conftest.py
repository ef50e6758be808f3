"""Fixtures for the fake fal: it and a webhook receiver on real loopback ports. None of them
needs the Postgres fixtures of tests/conftest.py.

One fake and one receiver serve the whole session (a uvicorn shutdown costs ~0.2 s): each test
resets the fake and sets its knobs over the control API, as a chaos run would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest

from app.fakefal import FakeFal, FakeFalConfig
from tests.fakefal.support import Receiver, RunningFake
from tests.servers import LiveServer

StartFake = Callable[..., RunningFake]


@pytest.fixture(scope="session")
def shared_fake() -> Iterator[RunningFake]:
    fake = FakeFal(FakeFalConfig())
    with LiveServer(fake.app) as server:
        yield RunningFake(fake, server.url)


def _reset(fake: RunningFake, **knobs: object) -> None:
    # Every knob given, so nothing of the previous test's config survives.
    config = FakeFalConfig(**knobs).model_dump(mode="json")  # type: ignore[arg-type]
    with httpx.Client() as control:
        control.post(f"{fake.url}/_fake/reset").raise_for_status()
        control.patch(f"{fake.url}/_fake/config", json=config).raise_for_status()


@pytest.fixture
def start_fake(shared_fake: RunningFake) -> Iterator[StartFake]:
    """The fake, reset, with these knobs: `start_fake(queue_latency=0.2)`."""

    def start(**knobs: object) -> RunningFake:
        _reset(shared_fake, **knobs)
        return shared_fake

    yield start
    _reset(shared_fake)  # cancels webhooks still pending


@pytest.fixture
def fake(start_fake: StartFake) -> RunningFake:
    return start_fake()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A client that sends fal's auth header."""
    async with httpx.AsyncClient(headers={"Authorization": "Key test-key"}, timeout=10) as client:
        yield client


@pytest.fixture(scope="session")
def shared_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    with LiveServer(receiver.app) as server:
        receiver.url = server.url
        yield receiver


@pytest.fixture
def receiver(shared_receiver: Receiver) -> Receiver:
    # Cleared at setup: the previous test's fake was reset at its teardown, so nothing of
    # that test arrives after this.
    shared_receiver.clear()
    return shared_receiver
