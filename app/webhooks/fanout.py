"""Recording an event and fanning it out: one statement, inside the caller's transaction.

The event row and one delivery row per target are written together with the state change
that caused them, so a committed change always has its deliveries and an uncommitted one has
none. Targets: every enabled endpoint of the client subscribed to the event type, and — for
terminal events — the job's own callback_url.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from app.db.pool import Connection
from app.events.types import TERMINAL_EVENT_TYPES, EventType

RECORD_EVENT = """
WITH event AS (
    INSERT INTO events (id, client_id, job_id, type, payload, created_at)
    VALUES ($1, $2, $3, $4, $5, $6)
    RETURNING id
)
INSERT INTO deliveries (id, client_id, event_id, job_id, endpoint_id, url, next_attempt_at)
SELECT gen_random_uuid(), $2, $1, $3, e.id, NULL, $6
FROM webhook_endpoints e
WHERE e.client_id = $2 AND e.enabled AND $4 = ANY(e.event_types)
UNION ALL
SELECT gen_random_uuid(), $2, $1, $3, NULL, $7, $6
WHERE $7::text IS NOT NULL
"""

# A test event goes to the one endpoint it was asked for, whatever its subscriptions.
RECORD_PING = """
WITH event AS (
    INSERT INTO events (id, client_id, job_id, type, payload, created_at)
    VALUES ($1, $2, NULL, 'ping', $3, $4)
    RETURNING id
)
INSERT INTO deliveries (id, client_id, event_id, job_id, endpoint_id, url, next_attempt_at)
VALUES ($5, $2, $1, NULL, $6, NULL, $4)
"""


def _count(status: str) -> int:
    # asyncpg's command tag: "INSERT 0 <rows>"
    return int(status.rsplit(" ", 1)[-1])


async def record_event(
    conn: Connection,
    *,
    event_id: uuid.UUID,
    client_id: uuid.UUID,
    job_id: uuid.UUID | None,
    event_type: EventType,
    payload: dict[str, Any],
    at: datetime,
    callback_url: str | None,
) -> int:
    """Inserts the event and its deliveries; returns how many deliveries it queued."""
    to_callback = callback_url if event_type in TERMINAL_EVENT_TYPES else None
    status = await conn.execute(
        RECORD_EVENT, event_id, client_id, job_id, event_type, payload, at, to_callback
    )
    return _count(status)


async def record_ping(
    conn: Connection,
    *,
    event_id: uuid.UUID,
    delivery_id: uuid.UUID,
    client_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    payload: dict[str, Any],
    at: datetime,
) -> None:
    await conn.execute(RECORD_PING, event_id, client_id, payload, at, delivery_id, endpoint_id)
