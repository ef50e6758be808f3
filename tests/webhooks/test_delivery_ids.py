"""Delivery ids, made by the database (`uuid7()`, migration 0025): UUIDv7 like every id made in
Python, so that a delivery's primary key entries are written where the newest rows are."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from app import ids
from app.db.pool import Pool
from app.webhooks import fanout
from tests.support import Tenant

PUBLIC_URL = "https://93.184.215.14/hooks/falrelay"  # a public literal: no DNS lookup


def _millis(value: uuid.UUID) -> int:
    return value.int >> 80


async def test_uuid7_is_a_version_7_rfc_4122_uuid_of_the_current_millisecond(pool: Pool) -> None:
    before = ids.uuid7()
    made: list[uuid.UUID] = [
        row["id"] for row in await pool.fetch("SELECT uuid7() AS id FROM generate_series(1, 500)")
    ]
    after = ids.uuid7()
    assert len(set(made)) == len(made)
    for value in made:
        assert value.version == 7
        assert value.variant == uuid.RFC_4122
        assert _millis(before) <= _millis(value) <= _millis(after)
    # Made in order: their milliseconds never go back.
    assert [_millis(v) for v in made] == sorted(_millis(v) for v in made)


async def test_an_events_deliveries_get_time_ordered_ids(tenant: Tenant, pool: Pool) -> None:
    for path in ("/a", "/b"):
        created = await tenant.http.post(
            "/v1/webhook-endpoints",
            json={"url": PUBLIC_URL + path, "event_types": ["job.succeeded"]},
        )
        assert created.status_code == 201, created.text
    before = ids.uuid7()
    event_id = ids.uuid7()
    async with pool.acquire() as conn:
        queued = await fanout.record_event(
            conn,
            event_id=event_id,
            client_id=tenant.client_id,
            job_id=None,
            event_type="job.succeeded",
            payload={"type": "job.succeeded"},
            at=datetime.now(UTC),
            callback_url="https://93.184.215.14/callback",
        )
    after = ids.uuid7()
    made = await pool.fetch("SELECT id, endpoint_id FROM deliveries WHERE event_id = $1", event_id)
    assert queued == len(made) == 3  # two endpoints and the job's own callback URL
    for row in made:
        assert row["id"].version == 7
        assert _millis(before) <= _millis(row["id"]) <= _millis(after)
