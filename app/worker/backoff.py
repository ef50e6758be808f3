"""When to try again. Pure functions of the attempt count; randomness is injected."""

from __future__ import annotations

import random

SUBMIT_BASE_DELAY = 1.0
SUBMIT_MAX_DELAY = 300.0
POLL_GROWTH = 1.5
POLL_MAX_INTERVAL = 15.0
JITTER = 0.2
# A step stops retrying the recording of its result this long before its claim's lease ends,
# so that a late write never races another worker that has claimed the row again.
LEASE_MARGIN_SECONDS = 5.0


def jittered(delay: float, rng: random.Random) -> float:
    return delay * rng.uniform(1 - JITTER, 1 + JITTER)


def submit_retry_delay(attempt: int, *, retry_after: float | None, rng: random.Random) -> float:
    """Seconds before submit attempt `attempt + 1`: 1, 2, 4 ... 300 s, ±20 %, never sooner
    than fal's Retry-After."""
    delay = jittered(min(SUBMIT_BASE_DELAY * 2 ** (attempt - 1), SUBMIT_MAX_DELAY), rng)
    return max(delay, retry_after or 0.0)


def poll_delay(polls: int, *, webhook_mode: bool, first: float, reconcile_after: float) -> float:
    """Seconds until the next status poll of a job at fal.

    With webhooks, polling is the fallback for a callback that never came: every
    `reconcile_after` seconds (fal keeps results about an hour, so a slow cadence is safe).
    Without, polling is how results arrive: `first`, then 1.5x per poll up to 15 s.
    """
    if webhook_mode:
        return reconcile_after
    return min(first * POLL_GROWTH ** max(polls - 1, 0), max(POLL_MAX_INTERVAL, first))
