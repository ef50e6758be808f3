"""A delivery's client and job are its event's (migration 0033): it goes when its event goes,
with the job or with the client, though it has no foreign key of its own to either."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from app import ids
from app.db.pool import Pool
from app.webhooks import fanout
from tests.support import Tenant, job_uuid

PUBLIC_URL = "https://93.184.215.14/hooks/falrelay"  # a public literal: no DNS lookup


async def _rows(pool: Pool, client_id: uuid.UUID) -> dict[str, int]:
    row = await pool.fetchrow(
        """
        SELECT (SELECT count(*) FROM events WHERE client_id = $1) AS events,
               (SELECT count(*) FROM deliveries WHERE client_id = $1) AS deliveries,
               (SELECT count(*) FROM delivery_queue q JOIN deliveries d ON d.id = q.id
                 WHERE d.client_id = $1) AS queued,
               (SELECT count(*) FROM delivery_queue) AS queue
        """,
        client_id,
    )
    assert row is not None
    return dict(row)


async def test_a_delivery_goes_with_its_events_job_and_its_events_client(
    tenant: Tenant, pool: Pool
) -> None:
    created = await tenant.http.post(
        "/v1/webhook-endpoints", json={"url": PUBLIC_URL, "event_types": ["job.succeeded"]}
    )
    assert created.status_code == 201, created.text
    endpoint_id = ids.decode(ids.ENDPOINT_ID_PREFIX, created.json()["id"])
    assert endpoint_id is not None
    job = await tenant.http.post("/v1/jobs", json={"input": {"prompt": "a red fox"}})
    assert job.status_code == 201, job.text
    job_id = job_uuid(job.json()["id"])
    queue_before = await pool.fetchval("SELECT count(*) FROM delivery_queue")
    async with pool.acquire() as conn:
        await fanout.record_event(
            conn,
            event_id=ids.uuid7(),
            client_id=tenant.client_id,
            job_id=job_id,
            event_type="job.succeeded",
            payload={"type": "job.succeeded"},
            at=datetime.now(UTC),
            callback_url=PUBLIC_URL + "/callback",
        )
        await fanout.record_ping(
            conn,
            event_id=ids.uuid7(),
            delivery_id=ids.uuid7(),
            client_id=tenant.client_id,
            endpoint_id=endpoint_id,
            payload={"type": "ping"},
            at=datetime.now(UTC),
        )
    # Each delivery carries its event's client and job, as the statement copied them.
    mismatched = await pool.fetchval(
        """SELECT count(*) FROM deliveries d JOIN events e ON e.id = d.event_id
           WHERE d.client_id = $1
             AND (d.client_id <> e.client_id OR d.job_id IS DISTINCT FROM e.job_id)""",
        tenant.client_id,
    )
    assert mismatched == 0
    rows = await _rows(pool, tenant.client_id)
    assert {k: rows[k] for k in ("deliveries", "queued")} == {"deliveries": 3, "queued": 3}

    await pool.execute("DELETE FROM jobs WHERE id = $1", job_id)
    rows = await _rows(pool, tenant.client_id)
    assert (rows["deliveries"], rows["queued"]) == (1, 1)  # the ping's, which has no job
    assert await pool.fetchval("SELECT count(*) FROM deliveries WHERE job_id = $1", job_id) == 0

    await pool.execute("DELETE FROM clients WHERE id = $1", tenant.client_id)
    assert await _rows(pool, tenant.client_id) == {
        "events": 0,
        "deliveries": 0,
        "queued": 0,
        "queue": queue_before,
    }
