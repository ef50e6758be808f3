"""SQL for webhook endpoints, deliveries and attempts."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from app.db.pool import Pool

ENDPOINT_COLUMNS = (
    "id, url, description, event_types, enabled, disabled_reason, failing_since, "
    "created_at, updated_at"
)

INSERT_ENDPOINT = f"""
INSERT INTO webhook_endpoints (id, client_id, url, description, event_types, secrets)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING {ENDPOINT_COLUMNS}
"""

SELECT_ENDPOINT = (
    f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND client_id = $2"
)

LIST_ENDPOINTS = f"""
SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints
WHERE client_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
ORDER BY created_at DESC, id DESC
LIMIT $4
"""

# Each field changes only when given ($n IS NULL keeps it); enabling clears the failure record.
UPDATE_ENDPOINT = f"""
UPDATE webhook_endpoints SET
    url = COALESCE($3, url),
    description = CASE WHEN $4 THEN $5 ELSE description END,
    event_types = COALESCE($6, event_types),
    enabled = COALESCE($7, enabled),
    disabled_reason = CASE WHEN $7 IS NULL THEN disabled_reason
                           WHEN $7 THEN NULL ELSE 'disabled by the client' END,
    failing_since = CASE WHEN $7 THEN NULL ELSE failing_since END,
    updated_at = now()
WHERE id = $1 AND client_id = $2
RETURNING {ENDPOINT_COLUMNS}
"""

DELETE_ENDPOINT = "DELETE FROM webhook_endpoints WHERE id = $1 AND client_id = $2 RETURNING id"

# Old secrets that have expired are dropped; the current one gets an expiry; the new one none.
ROTATE_SECRET = """
UPDATE webhook_endpoints SET
    secrets = (
        SELECT COALESCE(jsonb_agg(
            CASE WHEN s->>'expires_at' IS NULL
                 THEN jsonb_set(s, '{expires_at}', to_jsonb($3::timestamptz))
                 ELSE s END), '[]'::jsonb)
        FROM jsonb_array_elements(secrets) AS s
        WHERE s->>'expires_at' IS NULL OR (s->>'expires_at')::timestamptz > $4
    ) || jsonb_build_array(jsonb_build_object('secret', $5::text, 'expires_at', NULL)),
    updated_at = now()
WHERE id = $1 AND client_id = $2
RETURNING id
"""

ENSURE_CLIENT_SECRET = """
UPDATE clients SET webhook_secret = COALESCE(webhook_secret, $2) WHERE id = $1
RETURNING webhook_secret
"""

DELIVERY_COLUMNS = """
d.id, d.event_id, ev.type AS event_type, d.job_id, d.endpoint_id,
COALESCE(e.url, d.url) AS url, d.status, d.attempt_count, d.next_attempt_at,
d.last_status_code, d.last_error, d.created_at, d.succeeded_at
"""

DELIVERY_FROM = """
FROM deliveries d
JOIN events ev ON ev.id = d.event_id
LEFT JOIN webhook_endpoints e ON e.id = d.endpoint_id
"""

SELECT_DELIVERY = f"SELECT {DELIVERY_COLUMNS} {DELIVERY_FROM} WHERE d.id = $1 AND d.client_id = $2"

SELECT_ATTEMPTS = """
SELECT attempted_at, duration_ms, status_code, error, response_body
FROM delivery_attempts WHERE delivery_id = $1 ORDER BY attempted_at, id
"""

# A manual retry: one more attempt now, whatever the delivery's state; if it fails and the
# schedule was used up, it is failed again.
# A delivery being sent right now keeps its lease: the retry is then simply the next attempt.
RETRY_DELIVERY = """
UPDATE deliveries SET status = 'pending', next_attempt_at = now(), updated_at = now(),
    locked_until = CASE WHEN locked_until > now() THEN locked_until END
WHERE id = $1 AND client_id = $2
RETURNING id
"""

RECOVER_FAILED = """
UPDATE deliveries SET status = 'pending', next_attempt_at = now(), locked_until = NULL,
    updated_at = now()
WHERE endpoint_id = $1 AND client_id = $2 AND status = 'failed' AND created_at >= $3
"""


async def insert_endpoint(
    pool: Pool,
    *,
    endpoint_id: uuid.UUID,
    client_id: uuid.UUID,
    url: str,
    description: str | None,
    event_types: list[str],
    secret: str,
) -> asyncpg.Record:
    row = await pool.fetchrow(
        INSERT_ENDPOINT,
        endpoint_id,
        client_id,
        url,
        description,
        event_types,
        [{"secret": secret, "expires_at": None}],
    )
    assert row is not None
    return row


async def get_endpoint(
    pool: Pool, client_id: uuid.UUID, endpoint_id: uuid.UUID
) -> asyncpg.Record | None:
    return await pool.fetchrow(SELECT_ENDPOINT, endpoint_id, client_id)


async def list_endpoints(
    pool: Pool, client_id: uuid.UUID, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[asyncpg.Record]:
    created_at, last_id = after if after is not None else (None, None)
    return await pool.fetch(LIST_ENDPOINTS, client_id, created_at, last_id, limit)


async def update_endpoint(
    pool: Pool,
    client_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    *,
    url: str | None,
    description: tuple[bool, str | None],
    event_types: list[str] | None,
    enabled: bool | None,
) -> asyncpg.Record | None:
    given, text = description
    return await pool.fetchrow(
        UPDATE_ENDPOINT, endpoint_id, client_id, url, given, text, event_types, enabled
    )


async def delete_endpoint(pool: Pool, client_id: uuid.UUID, endpoint_id: uuid.UUID) -> bool:
    return await pool.fetchval(DELETE_ENDPOINT, endpoint_id, client_id) is not None


async def rotate_secret(
    pool: Pool,
    client_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    *,
    old_expires_at: datetime,
    now: datetime,
    secret: str,
) -> bool:
    row = await pool.fetchval(ROTATE_SECRET, endpoint_id, client_id, old_expires_at, now, secret)
    return row is not None


async def ensure_client_secret(pool: Pool, client_id: uuid.UUID, candidate: str) -> str:
    secret: str = await pool.fetchval(ENSURE_CLIENT_SECRET, client_id, candidate)
    return secret


async def get_delivery(
    pool: Pool, client_id: uuid.UUID, delivery_id: uuid.UUID
) -> asyncpg.Record | None:
    return await pool.fetchrow(SELECT_DELIVERY, delivery_id, client_id)


async def attempts(pool: Pool, delivery_id: uuid.UUID) -> list[asyncpg.Record]:
    return await pool.fetch(SELECT_ATTEMPTS, delivery_id)


async def list_deliveries(
    pool: Pool,
    client_id: uuid.UUID,
    *,
    endpoint_id: uuid.UUID | None = None,
    job_id: uuid.UUID | None = None,
    status: str | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Newest first, keyset on (created_at, id); served by the endpoint or job index."""
    clauses = ["d.client_id = $1"]
    args: list[Any] = [client_id]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if endpoint_id is not None:
        clauses.append(f"d.endpoint_id = {arg(endpoint_id)}")
    if job_id is not None:
        clauses.append(f"d.job_id = {arg(job_id)}")
    if status is not None:
        clauses.append(f"d.status = {arg(status)}")
    if after is not None:
        clauses.append(f"(d.created_at, d.id) < ({arg(after[0])}, {arg(after[1])})")
    sql = (
        f"SELECT {DELIVERY_COLUMNS} {DELIVERY_FROM} WHERE {' AND '.join(clauses)} "
        f"ORDER BY d.created_at DESC, d.id DESC LIMIT {arg(limit)}"
    )
    return await pool.fetch(sql, *args)


async def retry_delivery(pool: Pool, client_id: uuid.UUID, delivery_id: uuid.UUID) -> bool:
    return await pool.fetchval(RETRY_DELIVERY, delivery_id, client_id) is not None


async def recover_failed(
    pool: Pool, client_id: uuid.UUID, endpoint_id: uuid.UUID, since: datetime
) -> int:
    status = await pool.execute(RECOVER_FAILED, endpoint_id, client_id, since)
    return int(status.rsplit(" ", 1)[-1])
