"""How a webhook delivery is retried, in one place: the schedule, when to give up, what a 410
means, when an endpoint is disabled, and each endpoint's circuit breaker. Pure functions of
what attempts returned; randomness and the clock are injected. The worker's deliverer applies
them (app.worker.deliverer); the delivery queue stores what they decide (app.webhooks.queue).

The schedule is Svix's: after the first attempt, DELIVERY_DELAYS; then the delivery has failed.
A receiver's Retry-After (429/503) lengthens a wait, up to a day. A 410 Gone fails the delivery
at once and disables its endpoint; so does an endpoint already disabled. An endpoint whose
deliveries have all failed for AUTO_DISABLE_AFTER is disabled.

The circuit breaker keeps one endpoint that stops answering from spending the shared delivery
slots on timeouts. After `failures` consecutive breaker failures (no answer, or a 5xx) the
breaker opens for a cool-down that doubles with each trip (`cooldown` s, up to
MAX_COOLDOWN_SECONDS): the endpoint's deliveries stay pending, unclaimed, their attempts not
spent. Then it is half-open: one delivery at a time goes out as a probe. An answer that is not
a 5xx closes it and the held deliveries flow again; a failed probe opens it for twice as long.
The state lives on the endpoint row (consecutive_failures, breaker_open_until) and changes in
the transaction that records the attempts; that statement applies `cooldown` to each row's own
count in SQL (reading the rows first would cost a round trip), from the constants here.
"""

from __future__ import annotations

import enum
import random
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from app.retry_after import MAX_SECONDS as MAX_RETRY_AFTER
from app.webhooks.delivery import AttemptResult
from app.webhooks.models import DeliveryStatus

# Svix's schedule: after the first attempt, these waits; then the delivery has failed.
DELIVERY_DELAYS = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
DELIVERY_MAX_ATTEMPTS = len(DELIVERY_DELAYS) + 1
JITTER = 0.2
# A receiver's Retry-After is honoured up to MAX_RETRY_AFTER, what the server honours from
# anyone (app.retry_after).

# Errors that are not attempts at the receiver: they say nothing of its health.
ENDPOINT_DISABLED = "endpoint_disabled"
NO_SIGNING_SECRET = "no_signing_secret"
NOT_SENT = (ENDPOINT_DISABLED, NO_SIGNING_SECRET)

# 410 Gone: the receiver says the endpoint will never take a delivery again.
GONE = 410
GONE_REASON = "the endpoint answered 410 Gone"

# An endpoint whose every delivery has failed this long is disabled.
AUTO_DISABLE_AFTER = timedelta(days=5)
AUTO_DISABLE_REASON = "every delivery failed for 5 days"

MAX_COOLDOWN_SECONDS = 600.0
# Doublings counted at most: 2^20 times the first cool-down is far past any ceiling, so a probe
# failing for weeks cannot grow the count (nor overflow the power in the SQL) without bound.
MAX_DOUBLINGS = 20


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
    return result.status_code == GONE or result.error == ENDPOINT_DISABLED


def next_attempt(
    result: AttemptResult, attempt: int, *, now: datetime, rng: random.Random
) -> tuple[DeliveryStatus, datetime | None]:
    """What becomes of a delivery after its `attempt`-th try: succeeded, pending until the
    returned time, or failed for good."""
    if result.succeeded:
        return DeliveryStatus.SUCCEEDED, None
    delay = (
        None
        if gives_up(result)
        else delivery_delay(attempt, retry_after=result.retry_after, rng=rng)
    )
    if delay is None:
        return DeliveryStatus.FAILED, None
    return DeliveryStatus.PENDING, now + timedelta(seconds=delay)


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
    that opens it (app.webhooks.queue) computes the same from its parameters."""
    doublings = min(trip - 1, MAX_DOUBLINGS)
    return min(base * 2.0**doublings, max(base, MAX_COOLDOWN_SECONDS))


def circuit(open_until: datetime | None, now: datetime) -> Circuit:
    if open_until is None:
        return Circuit.CLOSED
    return Circuit.OPEN if open_until > now else Circuit.HALF_OPEN


@dataclass(frozen=True, slots=True)
class EndpointChanges:
    """What a batch of attempts does to the endpoints they went to."""

    # A 2xx: the failing period ends and the breaker closes.
    recovered: set[uuid.UUID] = field(default_factory=set)
    # Answered, but not a 2xx nor a breaker failure (a 4xx, a 429): the endpoint is up, so its
    # breaker closes; its failing period goes on.
    answered: set[uuid.UUID] = field(default_factory=set)
    # Failed: per endpoint, its breaker failures in the batch (0: a failure that says the
    # endpoint is up, which only continues the failing period).
    failed: Counter[uuid.UUID] = field(default_factory=Counter)
    # Answered 410: disabled.
    gone: set[uuid.UUID] = field(default_factory=set)


def endpoint_changes(attempts: Iterable[tuple[uuid.UUID | None, AttemptResult]]) -> EndpointChanges:
    """From each attempt's endpoint (None: a job's own callback_url, which has no endpoint row)
    and result."""
    rows = [(endpoint, result) for endpoint, result in attempts if endpoint is not None]
    recovered = {e for e, r in rows if r.succeeded}
    gone = {e for e, r in rows if r.status_code == GONE}
    answered = {
        e for e, r in rows if r.status_code is not None and not breaker_failure(r)
    } - recovered
    failed: Counter[uuid.UUID] = Counter()
    for e, r in rows:
        if not r.succeeded and was_sent(r) and e not in gone and e not in recovered:
            failed[e] += 0 if e in answered else int(breaker_failure(r))
    return EndpointChanges(recovered=recovered, answered=answered, failed=failed, gone=gone)
