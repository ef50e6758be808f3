"""Request rate limits that hold across every replica: GCRA with its state in Postgres.

GCRA (the generic cell rate algorithm) keeps one timestamp per client, the theoretical arrival
time (TAT) of the next request. A request at `now` fits when `max(TAT, now) + 1/rate` is at most
`now + burst/rate`; it then moves TAT forward by `1/rate`. One `INSERT ... ON CONFLICT DO UPDATE
... RETURNING` decides and records (app.clients.repository.consume), so replicas agree without
a lock held across round trips, and Postgres's clock is the only clock.

The answers carry the IETF RateLimit fields, draft-ietf-httpapi-ratelimit-headers-10 (§4
`RateLimit-Policy: "default";q=<quota>;w=<window seconds>`, §5 `RateLimit:
"default";r=<remaining>;t=<seconds until the quota is whole again>`).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass

from app.clients import repository
from app.clients.limits import Rate
from app.db.pool import Pool
from app.errors import TooManyRequests

POLICY = "default"
# Float arithmetic on seconds: a request that fits exactly must not round to "one too many".
_EPSILON = 1e-6


class RateLimited(TooManyRequests):
    title = "Rate limit exceeded"
    slug = "rate-limited"


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    remaining: int
    # Seconds until a full burst is available again.
    reset: int
    # Seconds until the next request fits; 0 when this one was allowed.
    retry_after: int

    def headers(self, rate: Rate) -> dict[str, str]:
        return {
            "RateLimit-Policy": policy_field(rate),
            "RateLimit": f'"{POLICY}";r={self.remaining};t={self.reset}',
        }


def policy_field(rate: Rate) -> str:
    # The draft's policy is a quota per window; GCRA's burst over the time it takes to refill
    # states the same sustained rate (a window is whole seconds, so it is rounded).
    window = max(1, round(rate.burst / rate.per_second))
    return f'"{POLICY}";q={rate.burst};w={window}'


def decide(rate: Rate, *, tat: float, now: float, allowed: bool) -> Decision:
    """The decision as the client is told it, from the state the upsert returned (seconds)."""
    interval = 1.0 / rate.per_second
    tolerance = rate.burst * interval
    reset = max(0, math.ceil(tat - now - _EPSILON))
    if allowed:
        remaining = max(0, math.floor((now + tolerance - tat) / interval + _EPSILON))
        return Decision(True, min(remaining, rate.burst), reset, 0)
    retry_after = max(1, math.ceil(tat + interval - tolerance - now - _EPSILON))
    return Decision(False, 0, reset, retry_after)


async def consume(pool: Pool, client_id: uuid.UUID, rate: Rate) -> Decision:
    """Counts one request against the client's rate; one statement, whichever replica."""
    interval = 1.0 / rate.per_second
    state = await repository.consume(
        pool, client_id, POLICY, interval=interval, tolerance=rate.burst * interval
    )
    return decide(rate, tat=state.tat, now=state.now, allowed=state.allowed)


def refusal(rate: Rate, decision: Decision) -> RateLimited:
    return RateLimited(
        f"More than {rate.per_second:g} requests per second (bursts of up to {rate.burst}); "
        f"retry in {decision.retry_after} s.",
        headers={**decision.headers(rate), "Retry-After": str(decision.retry_after)},
    )
