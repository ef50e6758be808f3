"""The delivery policy's decisions as pure functions (app.webhooks.policy); the suite's
end-to-end delivery tests show the worker applying them."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

from app.webhooks import policy
from app.webhooks.delivery import AttemptResult
from app.webhooks.models import DeliveryStatus

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def _result(status: int | None = None, error: str | None = None) -> AttemptResult:
    return AttemptResult(duration_ms=1, status_code=status, error=error)


def test_a_2xx_succeeds_and_a_failure_is_retried_on_the_schedule() -> None:
    rng = random.Random(1)
    assert policy.next_attempt(_result(204), 1, now=NOW, rng=rng) == (
        DeliveryStatus.SUCCEEDED,
        None,
    )
    status, at = policy.next_attempt(_result(500), 2, now=NOW, rng=rng)
    assert status == DeliveryStatus.PENDING
    assert at is not None
    assert timedelta(seconds=240) <= at - NOW <= timedelta(seconds=360)


def test_410_a_disabled_endpoint_and_the_last_attempt_give_up() -> None:
    rng = random.Random(1)
    for result, attempt in (
        (_result(410), 1),
        (_result(error=policy.ENDPOINT_DISABLED), 1),
        (_result(503), policy.DELIVERY_MAX_ATTEMPTS),
    ):
        assert policy.next_attempt(result, attempt, now=NOW, rng=rng) == (
            DeliveryStatus.FAILED,
            None,
        )


def test_a_receivers_retry_after_lengthens_the_wait() -> None:
    result = AttemptResult(duration_ms=1, status_code=429, retry_after=3600.0)
    _, at = policy.next_attempt(result, 1, now=NOW, rng=random.Random(1))
    assert at == NOW + timedelta(hours=1)


def test_what_a_batch_does_to_its_endpoints() -> None:
    ok, gone, busy, down, mixed = (uuid.uuid4() for _ in range(5))
    # A generator, as the recorder passes them: read once.
    changes = policy.endpoint_changes(
        iter(
            [
                (ok, _result(500)),
                (ok, _result(200)),  # a success in the batch: recovered, the failure forgotten
                (gone, _result(410)),
                (busy, _result(429)),  # answered: the breaker closes, the failing period goes on
                (down, _result(error="timeout")),
                (down, _result(502)),
                (mixed, _result(404)),
                (mixed, _result(error="connection: reset")),  # answered in the same batch: 0
                (None, _result(error="timeout")),  # a job's own callback_url: no endpoint row
                (uuid.uuid4(), _result(error=policy.NO_SIGNING_SECRET)),  # never sent: nothing
            ]
        )
    )
    assert changes.recovered == {ok}
    assert changes.gone == {gone}
    assert changes.answered == {gone, busy, mixed}
    assert dict(changes.failed) == {busy: 0, down: 2, mixed: 0}


def test_the_cool_down_doubles_per_trip_up_to_its_ceiling() -> None:
    assert [policy.cooldown(trip, base=30.0) for trip in (1, 2, 3, 4, 5, 6)] == [
        30.0,
        60.0,
        120.0,
        240.0,
        480.0,
        policy.MAX_COOLDOWN_SECONDS,
    ]
    assert policy.cooldown(10**6, base=30.0) == policy.MAX_COOLDOWN_SECONDS
    # A first cool-down above the ceiling is kept, never shortened.
    assert policy.cooldown(3, base=1000.0) == 1000.0


def test_the_breakers_states() -> None:
    assert policy.circuit(None, NOW) == policy.Circuit.CLOSED
    assert policy.circuit(NOW + timedelta(seconds=1), NOW) == policy.Circuit.OPEN
    assert policy.circuit(NOW, NOW) == policy.Circuit.HALF_OPEN
