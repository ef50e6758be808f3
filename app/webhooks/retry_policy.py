"""A delivery's retry policy in one place: the schedule, when to give up, and each endpoint's
circuit breaker. Pure functions of what an attempt returned; randomness is injected.

The circuit breaker keeps one endpoint that stops answering from spending the shared delivery
slots on timeouts. After `failures` consecutive breaker failures (no answer, or a 5xx) the
breaker opens for a cool-down that doubles with each trip (`cooldown` s, up to
MAX_COOLDOWN_SECONDS): the endpoint's deliveries stay pending, unclaimed, their attempts not
spent. Then it is half-open: one delivery at a time goes out as a probe. An answer that is not
a 5xx closes it and the held deliveries flow again; a failed probe opens it for twice as long.
The state lives on the endpoint row (consecutive_failures, breaker_open_until) and changes in
the transaction that records the attempts (app.worker.queue: ENDPOINTS_FAILED, ...).
"""

from __future__ import annotations

import enum
import random
from datetime import datetime

from app.webhooks.delivery import AttemptResult

# Svix's schedule: after the first attempt, these waits; then the delivery has failed.
DELIVERY_DELAYS = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
DELIVERY_MAX_ATTEMPTS = len(DELIVERY_DELAYS) + 1
MAX_RETRY_AFTER = 24 * 3600.0
JITTER = 0.2

# Errors that are not attempts at the receiver: they say nothing of its health.
NOT_SENT = ("endpoint_disabled", "no_signing_secret")
MAX_COOLDOWN_SECONDS = 600.0


class Circuit(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"  # deliveries held until breaker_open_until
    HALF_OPEN = "half_open"  # one probe at a time


def delivery_delay(attempt: int, *, retry_after: float | None, rng: random.Random) -> float | None:
    """Seconds until the attempt after `attempt` (1-based), or None when the schedule is done.
    A receiver's Retry-After (429/503) is honoured when it asks for longer, up to a day."""
    if attempt >= DELIVERY_MAX_ATTEMPTS:
        return None
    delay = DELIVERY_DELAYS[attempt - 1] * rng.uniform(1 - JITTER, 1 + JITTER)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay


def gives_up(result: AttemptResult) -> bool:
    """No retry: the endpoint is gone (410) or disabled."""
    return result.status_code == 410 or result.error == "endpoint_disabled"


def was_sent(result: AttemptResult) -> bool:
    return result.error not in NOT_SENT


def breaker_failure(result: AttemptResult) -> bool:
    """No answer in time (timeout, connection refused or reset) or a server error. A 4xx or a
    429 is an answer: the receiver is up and the schedule (or its Retry-After) paces it."""
    if not was_sent(result):
        return False
    if result.status_code is None:
        return True
    return result.status_code >= 500


def cooldown(trip: int, *, base: float) -> float:
    """Seconds the breaker stays open at its `trip`-th consecutive opening (1-based). The SQL
    that opens it (app.worker.queue.ENDPOINTS_FAILED) computes the same from its parameters."""
    return min(base * 2.0 ** (trip - 1), max(base, MAX_COOLDOWN_SECONDS))


def circuit(open_until: datetime | None, now: datetime) -> Circuit:
    if open_until is None:
        return Circuit.CLOSED
    return Circuit.OPEN if open_until > now else Circuit.HALF_OPEN
