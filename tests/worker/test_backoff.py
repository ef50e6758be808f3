from __future__ import annotations

import random

import pytest

from app.webhooks import policy
from app.worker import backoff


def test_submit_delays_double_with_jitter_and_cap() -> None:
    rng = random.Random(1)
    for attempt, nominal in [(1, 1), (2, 2), (3, 4), (5, 16), (9, 256), (10, 300), (30, 300)]:
        delay = backoff.submit_retry_delay(attempt, retry_after=None, rng=rng)
        assert nominal * 0.8 <= delay <= nominal * 1.2


def test_retry_after_is_a_floor() -> None:
    delay = backoff.submit_retry_delay(1, retry_after=30, rng=random.Random(1))
    assert delay == 30


@pytest.mark.parametrize(("polls", "expected"), [(0, 1.0), (1, 1.0), (2, 1.5), (3, 2.25), (20, 15)])
def test_poll_mode_grows_to_15_s(polls: int, expected: float) -> None:
    delay = backoff.poll_delay(polls, webhook_mode=False, first=1.0, reconcile_after=30)
    assert delay == pytest.approx(expected)


def test_webhook_mode_polls_at_the_reconcile_cadence() -> None:
    assert backoff.poll_delay(7, webhook_mode=True, first=1.0, reconcile_after=30) == 30


def test_the_delivery_schedule_is_svixs_with_jitter() -> None:
    rng = random.Random(3)
    nominal = [5, 300, 1800, 7200, 18000, 36000, 36000]
    for attempt, seconds in enumerate(nominal, start=1):
        delay = policy.delivery_delay(attempt, retry_after=None, rng=rng)
        assert delay is not None
        assert seconds * 0.8 <= delay <= seconds * 1.2
    assert policy.delivery_delay(8, retry_after=None, rng=rng) is None


def test_retry_after_can_only_lengthen_a_delivery_delay_and_is_capped() -> None:
    rng = random.Random(3)
    assert policy.delivery_delay(1, retry_after=60, rng=rng) == 60
    assert policy.delivery_delay(1, retry_after=10**9, rng=rng) == 24 * 3600
    short = policy.delivery_delay(3, retry_after=1, rng=rng)
    assert short is not None
    assert short >= 1800 * 0.8
