"""Telling "the database cannot be reached right now" from "this statement is wrong", and
riding out the first kind where giving up would cost a lease."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

T = TypeVar("T")

UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
    # Seen when a pooled connection broke mid-operation during an outage ("cannot switch to
    # state 12; another operation is in progress"): the connection is unusable, the request
    # was not the problem.
    asyncpg.InternalClientError,
)

RETRY_FIRST_SECONDS = 0.1
RETRY_MAX_SECONDS = 2.0


def is_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, UNAVAILABLE)


async def retry_while_unavailable(
    operation: Callable[[], Awaitable[T]],
    *,
    for_seconds: float,
    rng: random.Random | None = None,
) -> T:
    """`operation()`, run again while the database is unreachable, for up to `for_seconds`.

    For recording what a worker step did at fal or at a receiver: dropping that result would
    leave its row leased, and the work repeated, only when the lease runs out (a minute or
    two). Retries come at most `RETRY_MAX_SECONDS` apart, so the result lands within about
    that of the database's return. The operation must be safe to repeat (compare-and-set).
    """
    rng = rng or random.Random()
    deadline = time.monotonic() + for_seconds
    delay = RETRY_FIRST_SECONDS
    while True:
        try:
            return await operation()
        except UNAVAILABLE:
            pause = delay * rng.uniform(0.5, 1.0)
            if time.monotonic() + pause > deadline:
                raise
            await asyncio.sleep(pause)
            delay = min(delay * 2, RETRY_MAX_SECONDS)
