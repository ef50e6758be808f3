"""Per-client request rates: the RateLimit fields on every answer under a limit, the 429, and
what counts (every /v1 request: test pings and secret rotations too)."""

from __future__ import annotations

import re

import pytest

from app.clients import service as clients
from app.clients.limits import Rate
from app.clients.ratelimit import decide
from app.db.pool import Pool
from tests.support import Tenant, assert_problem, count_jobs
from tests.tenants.conftest import ENDPOINT_URL

JOB = {"input": {"prompt": "a red fox in snow", "resolution": "1K"}}
FIELD = re.compile(r'^"default";r=(\d+);t=(\d+)$')


async def limit(pool: Pool, tenant: Tenant, **changes: object) -> None:
    # Before the tenant's first request: the key (and its limits) is not cached yet.
    await clients.set_limits(pool, str(tenant.client_id), dict(changes))


def remaining(response_headers: object) -> int:
    match = FIELD.match(response_headers["ratelimit"])  # type: ignore[index]
    assert match, response_headers
    return int(match.group(1))


async def test_answers_carry_the_fields_and_the_burst_ends_in_a_429(
    pool: Pool, client_a: Tenant
) -> None:
    # 0.2/s refills one request in 5 s: the test sends its burst long before that.
    await limit(pool, client_a, requests_per_second=0.2, burst=3)

    created = await client_a.http.post("/v1/jobs", json=JOB)
    assert created.status_code == 201
    assert created.headers["ratelimit-policy"] == '"default";q=3;w=15'
    assert remaining(created.headers) == 2
    missing = await client_a.http.get("/v1/jobs/job_00000000000000000000000000")
    assert_problem(missing, 404)
    assert remaining(missing.headers) == 1
    listed = await client_a.http.get("/v1/jobs")
    assert listed.status_code == 200
    assert listed.headers["ratelimit"].startswith('"default";r=0;t=')

    refused = await client_a.http.post("/v1/jobs", json=JOB)
    body = assert_problem(refused, 429, "rate-limited")
    assert "0.2 requests per second" in body["detail"]
    assert 1 <= int(refused.headers["retry-after"]) <= 5
    assert refused.headers["ratelimit-policy"] == '"default";q=3;w=15'
    assert remaining(refused.headers) == 0
    # Refused before the route ran: only the first job exists.
    assert await count_jobs(pool, client_a.client_id) == 1
    # A refusal does not push the next slot further away.
    again = await client_a.http.get("/v1/jobs")
    assert again.status_code == 429
    assert int(again.headers["retry-after"]) <= int(refused.headers["retry-after"])


async def test_a_client_without_a_rate_gets_no_fields(client_a: Tenant) -> None:
    response = await client_a.http.get("/v1/jobs")
    assert response.status_code == 200
    assert "ratelimit" not in response.headers
    assert "ratelimit-policy" not in response.headers


async def test_test_pings_and_secret_rotations_count(
    pool: Pool, client_a: Tenant, client_b: Tenant
) -> None:
    endpoint = await client_a.http.post("/v1/webhook-endpoints", json={"url": ENDPOINT_URL})
    assert endpoint.status_code == 201
    endpoint_id = endpoint.json()["id"]
    # This client's key is not cached yet, so its first request sees the limits.
    await limit(pool, client_b, requests_per_second=0.1, burst=2)
    other = client_b.http
    created = await other.post("/v1/webhook-endpoints", json={"url": ENDPOINT_URL})
    assert created.status_code == 201
    other_id = created.json()["id"]

    ping = await other.post(f"/v1/webhook-endpoints/{other_id}/test")
    assert ping.status_code == 202
    assert remaining(ping.headers) == 0
    rotated = await other.post(f"/v1/webhook-endpoints/{other_id}/rotate-secret")
    assert_problem(rotated, 429, "rate-limited")
    pinged = await other.post(f"/v1/webhook-endpoints/{other_id}/test")
    assert_problem(pinged, 429, "rate-limited")

    # The refused ping queued nothing, the refused rotation kept one secret.
    deliveries = await pool.fetchval(
        "SELECT count(*) FROM deliveries WHERE client_id = $1", client_b.client_id
    )
    assert deliveries == 1
    secrets = await pool.fetchval(
        "SELECT jsonb_array_length(secrets) FROM webhook_endpoints WHERE client_id = $1",
        client_b.client_id,
    )
    assert secrets == 1
    # Another client's budget is its own.
    assert (
        await client_a.http.post(f"/v1/webhook-endpoints/{endpoint_id}/test")
    ).status_code == 202


@pytest.mark.parametrize(
    ("rate", "tat", "allowed", "expected"),
    [
        # Burst of 5 at 1/s: the first request leaves 4, the whole burst is back in 1 s.
        (Rate(1, 5), 101.0, True, (4, 1, 0)),
        # The fifth request in the same instant leaves none; full again in 5 s.
        (Rate(1, 5), 105.0, True, (0, 5, 0)),
        # The sixth is refused; the next fits when TAT - burst/rate + 1/rate has come: 1 s.
        (Rate(1, 5), 105.0, False, (0, 5, 1)),
        # 10/s, burst 10, half used: 5 left, whole in 0.5 s (rounded up to 1).
        (Rate(10, 10), 100.5, True, (5, 1, 0)),
        # Floating point at the edge: exactly one slot left is one, not zero.
        (Rate(3, 3), 100.0 + 2 / 3, True, (1, 1, 0)),
    ],
)
def test_gcra_decisions(
    rate: Rate, tat: float, allowed: bool, expected: tuple[int, int, int]
) -> None:
    decision = decide(rate, tat=tat, now=100.0, allowed=allowed)
    assert (decision.remaining, decision.reset, decision.retry_after) == expected
    assert decision.allowed is allowed
