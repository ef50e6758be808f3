"""Recording an event and fanning it out: one statement, inside the caller's transaction, or
steps of the state change's own statement (`recording`).

The event row and one delivery row per target are written together with the state change
that caused them, so a committed change always has its deliveries and an uncommitted one has
none. Targets: every enabled endpoint of the client subscribed to the event type, and — for
terminal events — the job's own callback_url. Delivery ids are UUIDv7 made by the database
(`uuid7()`, migration 0025), time-ordered like every id made in Python.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from app.db.pool import Connection
from app.events.types import TERMINAL_EVENT_TYPES, EventType

# Each delivery queued is also a row of the delivery queue (migration 0030), from the columns
# its insert returns.
ENQUEUE = """
INSERT INTO delivery_queue (id, client_id, event_id, endpoint_id, url, next_attempt_at,
                            attempt_count)
SELECT id, client_id, event_id, endpoint_id, url, next_attempt_at, 0"""


def recording(
    *,
    source: str,
    event_id: str,
    client_id: str,
    job_id: str,
    event_type: str,
    payload: str,
    at: str,
    callback_url: str,
) -> str:
    """The steps that record an event and queue its deliveries, for a statement's WITH list:
    `event`, then `queued` (one row per delivery, as it is logged) and `enqueued` (its row of
    the delivery queue). Each argument is an SQL expression over
    `source`, a step of the caller's that yields one row per event (none: nothing recorded).
    `callback_url` is the job's own callback URL, for a terminal event (NULL: none)."""
    return f"""
    event AS (
        INSERT INTO events (id, client_id, job_id, type, payload, created_at)
        SELECT {event_id}, {client_id}, {job_id}, {event_type}, {payload}, {at} FROM {source}
        RETURNING id, client_id, job_id, type, created_at
    ), queued AS (
        INSERT INTO deliveries (id, client_id, event_id, job_id, endpoint_id, url,
                                next_attempt_at)
        SELECT uuid7(), ev.client_id, ev.id, ev.job_id, e.id, NULL, ev.created_at
        FROM event ev JOIN webhook_endpoints e ON e.client_id = ev.client_id
        WHERE e.enabled AND ev.type = ANY(e.event_types)
        UNION ALL
        SELECT uuid7(), {client_id}, {event_id}, {job_id}, NULL, {callback_url}, {at}
        FROM {source} WHERE {callback_url} IS NOT NULL
        RETURNING id, client_id, event_id, endpoint_id, url, next_attempt_at
    ), enqueued AS (
        {ENQUEUE} FROM queued
    )"""


RECORD_EVENT = f"""
WITH {
    recording(
        source="(SELECT) AS one",
        event_id="$1::uuid",
        client_id="$2::uuid",
        job_id="$3::uuid",
        event_type="$4::text",
        payload="$5::jsonb",
        at="$6::timestamptz",
        callback_url="$7::text",
    )
}
SELECT count(*) FROM queued
"""

# A test event goes to the one endpoint it was asked for, whatever its subscriptions.
RECORD_PING = f"""
WITH event AS (
    INSERT INTO events (id, client_id, job_id, type, payload, created_at)
    VALUES ($1, $2, NULL, 'ping', $3, $4)
    RETURNING id
), queued AS (
    INSERT INTO deliveries (id, client_id, event_id, job_id, endpoint_id, url, next_attempt_at)
    VALUES ($5, $2, $1, NULL, $6, NULL, $4)
    RETURNING id, client_id, event_id, endpoint_id, url, next_attempt_at
)
{ENQUEUE} FROM queued
"""


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
    queued: int = await conn.fetchval(
        RECORD_EVENT, event_id, client_id, job_id, event_type, payload, at, to_callback
    )
    return queued


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
