"""The circuit breaker's stored state: what resets it, and that a long run of failed probes
cannot overflow its cool-down arithmetic (no worker runs here)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from app.db.pool import Pool
from app.webhooks import policy, queue
from app.webhooks.delivery import AttemptResult
from app.webhooks.models import DeliveryStatus
from tests.support import Tenant

PUBLIC_URL = "https://93.184.215.14/hooks/falrelay"  # a public literal: no DNS lookup


async def _open_breaker(tenant: Tenant, pool: Pool) -> uuid.UUID:
    created = await tenant.http.post("/v1/webhook-endpoints", json={"url": PUBLIC_URL})
    assert created.status_code == 201, created.text
    endpoint_id = uuid.UUID(hex=created.json()["id"].split("_", 1)[1])
    await pool.execute(
        "UPDATE webhook_endpoints SET consecutive_failures = 9, "
        "breaker_open_until = now() + interval '10 minutes' WHERE id = $1",
        endpoint_id,
    )
    return endpoint_id


async def _breaker(pool: Pool, endpoint_id: uuid.UUID) -> tuple[int, datetime | None]:
    row = await pool.fetchrow(
        "SELECT consecutive_failures, breaker_open_until FROM webhook_endpoints WHERE id = $1",
        endpoint_id,
    )
    assert row is not None
    return row["consecutive_failures"], row["breaker_open_until"]


async def test_re_enabling_or_repointing_an_endpoint_closes_its_breaker(
    tenant: Tenant, pool: Pool
) -> None:
    for change in ({"enabled": True}, {"url": PUBLIC_URL + "/fixed"}):
        endpoint_id = await _open_breaker(tenant, pool)
        public_id = f"ep_{endpoint_id.hex}"
        answer = await tenant.http.patch(f"/v1/webhook-endpoints/{public_id}", json=change)
        assert answer.status_code == 200, answer.text
        assert await _breaker(pool, endpoint_id) == (0, None), change


async def test_a_description_change_leaves_the_breaker_alone(tenant: Tenant, pool: Pool) -> None:
    endpoint_id = await _open_breaker(tenant, pool)
    answer = await tenant.http.patch(
        f"/v1/webhook-endpoints/ep_{endpoint_id.hex}", json={"description": "billing"}
    )
    assert answer.status_code == 200, answer.text
    failures, open_until = await _breaker(pool, endpoint_id)
    assert failures == 9
    assert open_until is not None


async def test_weeks_of_failed_probes_neither_overflow_nor_grow_without_bound(
    tenant: Tenant, pool: Pool
) -> None:
    endpoint_id = await _open_breaker(tenant, pool)
    # As after weeks of failed probes: the breaker is due a probe, and the count is huge.
    await pool.execute(
        "UPDATE webhook_endpoints SET consecutive_failures = 5000, breaker_open_until = now() "
        "WHERE id = $1",
        endpoint_id,
    )
    now = datetime.now(UTC)
    threshold, cooldown = 5, 30.0
    # One more failed probe (a 5xx), recorded as the deliverer records a batch.
    failed_probe = queue.Outcome(
        delivery_id=uuid.uuid4(),
        attempt_count=1,
        endpoint_id=endpoint_id,
        attempted_at=now,
        result=AttemptResult(duration_ms=1, status_code=503),
        status=DeliveryStatus.PENDING,
        next_attempt_at=now,
    )
    await queue.record(
        pool, [failed_probe], now=now, breaker_failures=threshold, breaker_cooldown=cooldown
    )
    failures, open_until = await _breaker(pool, endpoint_id)
    assert failures <= threshold + 20
    assert open_until is not None
    assert (open_until - now).total_seconds() == policy.MAX_COOLDOWN_SECONDS
    assert policy.cooldown(failures - threshold + 2, base=cooldown) == policy.MAX_COOLDOWN_SECONDS
