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

# The endpoint cap: creates of one client take turns on its clients row (FOR NO KEY UPDATE
# leaves the foreign-key checks of other inserts alone), and the insert counts in a statement
# of its own, after the lock, so it sees every endpoint a previous holder committed.
LOCK_CLIENT = "SELECT 1 FROM clients WHERE id = $1 FOR NO KEY UPDATE"
INSERT_ENDPOINT_WITHIN_CAP = f"""
INSERT INTO webhook_endpoints (id, client_id, url, description, event_types, secrets)
SELECT $1, $2, $3, $4, $5, $6
WHERE (SELECT count(*) FROM webhook_endpoints WHERE client_id = $2) < $7
RETURNING {ENDPOINT_COLUMNS}
"""

COUNT_ENDPOINTS = "SELECT count(*) FROM webhook_endpoints WHERE client_id = $1"

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
    -- Re-enabled or pointed elsewhere: the failures that opened the breaker were another
    -- receiver's (or before a fix), so deliveries flow again at once.
    consecutive_failures = CASE WHEN $7 OR $3 IS NOT NULL THEN 0 ELSE consecutive_failures END,
    breaker_open_until = CASE WHEN $7 OR $3 IS NOT NULL THEN NULL ELSE breaker_open_until END,
    updated_at = now()
WHERE id = $1 AND client_id = $2
RETURNING {ENDPOINT_COLUMNS}
"""

DELETE_ENDPOINT = "DELETE FROM webhook_endpoints WHERE id = $1 AND client_id = $2 RETURNING id"


def _rotated(secrets: str, *, expires_at: str, now: str, secret: str, keep: str) -> str:
    """A secrets list (`[{"secret", "expires_at"}]`, oldest first) after a rotation: the current
    secret expires at `expires_at`; secrets expired by `now` are dropped, and so are the oldest
    grace secrets beyond `keep` - 1, so that with the new one at most `keep` remain however
    often it is rotated (every active secret signs every delivery)."""
    return f"""(
        SELECT COALESCE(jsonb_agg(kept.s ORDER BY kept.n), '[]'::jsonb) FROM (
            SELECT CASE WHEN s->>'expires_at' IS NULL
                        THEN jsonb_set(s, '{{expires_at}}', to_jsonb({expires_at}::timestamptz))
                        ELSE s END AS s, n
            FROM jsonb_array_elements({secrets}) WITH ORDINALITY AS old(s, n)
            WHERE COALESCE((s->>'expires_at')::timestamptz, {expires_at}::timestamptz) > {now}
            ORDER BY n DESC
            LIMIT {keep}::int - 1
        ) AS kept
    ) || jsonb_build_array(jsonb_build_object('secret', {secret}::text, 'expires_at', NULL))"""


ROTATE_SECRET = f"""
UPDATE webhook_endpoints SET
    secrets = {_rotated("secrets", expires_at="$3", now="$4", secret="$5", keep="$6")},
    updated_at = now()
WHERE id = $1 AND client_id = $2
RETURNING id
"""

# A client's default secrets. A client made by a release before the list existed has only
# `webhook_secret`: it becomes the list's current secret on first use. `webhook_secret` is
# kept equal to the current secret, for that release's replicas during a rolling upgrade.
_CLIENT_SECRETS = """CASE WHEN webhook_secrets = '[]'::jsonb AND webhook_secret IS NOT NULL
    THEN jsonb_build_array(jsonb_build_object('secret', webhook_secret, 'expires_at', NULL))
    ELSE webhook_secrets END"""

SELECT_CLIENT_SECRETS = "SELECT webhook_secrets FROM clients WHERE id = $1"

# Made on first use. The WHERE is checked again on the locked row, so of two racing first
# uses one makes it and the other finds no row to change (and reads the winner's).
ENSURE_CLIENT_SECRETS = f"""
UPDATE clients SET
    webhook_secrets = CASE WHEN {_CLIENT_SECRETS} = '[]'::jsonb
        THEN jsonb_build_array(jsonb_build_object('secret', $2::text, 'expires_at', NULL))
        ELSE {_CLIENT_SECRETS} END,
    webhook_secret = COALESCE(webhook_secret, $2)
WHERE id = $1 AND webhook_secrets = '[]'::jsonb
RETURNING webhook_secrets
"""

_ROTATED_CLIENT_SECRETS = _rotated(
    _CLIENT_SECRETS, expires_at="$2", now="$3", secret="$4", keep="$5"
)
ROTATE_CLIENT_SECRET = f"""
UPDATE clients SET
    webhook_secrets = {_ROTATED_CLIENT_SECRETS},
    webhook_secret = $4
WHERE id = $1
RETURNING webhook_secrets
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
# schedule was used up, it is failed again. A delivery no longer pending goes back to the queue
# (migration 0030); one pending is due now, and one being sent right now keeps its lease: the
# retry is then simply the next attempt. The attempt count the queue row starts from is the
# one the update returns, the latest (LOCK_QUEUED_DELIVERY says why it is).
RETRY_DELIVERY = """
WITH retried AS (
    UPDATE deliveries SET status = 'pending', next_attempt_at = now(), updated_at = now()
    WHERE id = $1 AND client_id = $2
    RETURNING id, client_id, event_id, endpoint_id, url, next_attempt_at, attempt_count
), queued AS (
    INSERT INTO delivery_queue (id, client_id, event_id, endpoint_id, url, next_attempt_at,
                                attempt_count)
    SELECT * FROM retried
    ON CONFLICT (id) DO UPDATE SET next_attempt_at = now()
)
SELECT id FROM retried
"""

# Taken first by a retry: a result being recorded locks the queue row, then the delivery
# (app.webhooks.queue), and a retry that locked the delivery first could deadlock with it.
# Once a result has deleted the row, its delivery is final and its attempt count current.
LOCK_QUEUED_DELIVERY = "SELECT FROM delivery_queue WHERE id = $1 AND client_id = $2 FOR UPDATE"

# Failed deliveries, pending again: back in the delivery queue, due now.
RECOVER_FAILED = """
WITH recovered AS (
    UPDATE deliveries SET status = 'pending', next_attempt_at = now(), updated_at = now()
    WHERE endpoint_id = $1 AND client_id = $2 AND status = 'failed' AND created_at >= $3
    RETURNING id, client_id, event_id, endpoint_id, url, next_attempt_at, attempt_count
)
INSERT INTO delivery_queue (id, client_id, event_id, endpoint_id, url, next_attempt_at,
                            attempt_count)
SELECT * FROM recovered
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
    cap: int | None = None,
) -> asyncpg.Record | None:
    """The new endpoint, or None when the client has `cap` already (nothing is stored)."""
    args = (
        endpoint_id,
        client_id,
        url,
        description,
        event_types,
        [{"secret": secret, "expires_at": None}],
    )
    if cap is None:
        return await pool.fetchrow(INSERT_ENDPOINT, *args)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(LOCK_CLIENT, client_id)
        return await conn.fetchrow(INSERT_ENDPOINT_WITHIN_CAP, *args, cap)


async def count_endpoints(pool: Pool, client_id: uuid.UUID) -> int:
    count: int = await pool.fetchval(COUNT_ENDPOINTS, client_id)
    return count


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
    keep: int,
) -> bool:
    row = await pool.fetchval(
        ROTATE_SECRET, endpoint_id, client_id, old_expires_at, now, secret, keep
    )
    return row is not None


async def client_secrets(pool: Pool, client_id: uuid.UUID, candidate: str) -> list[dict[str, Any]]:
    """The client's default secrets, oldest first; `candidate` becomes the first one if it has
    none yet."""
    secrets: list[dict[str, Any]] = await pool.fetchval(SELECT_CLIENT_SECRETS, client_id)
    if secrets:
        return secrets
    made = await pool.fetchval(ENSURE_CLIENT_SECRETS, client_id, candidate)
    if made is not None:
        return list(made)
    secrets = await pool.fetchval(SELECT_CLIENT_SECRETS, client_id)
    return secrets


async def rotate_client_secret(
    pool: Pool,
    client_id: uuid.UUID,
    *,
    old_expires_at: datetime,
    now: datetime,
    secret: str,
    keep: int,
) -> None:
    await pool.execute(ROTATE_CLIENT_SECRET, client_id, old_expires_at, now, secret, keep)


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
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(LOCK_QUEUED_DELIVERY, delivery_id, client_id)
        return await conn.fetchval(RETRY_DELIVERY, delivery_id, client_id) is not None


async def recover_failed(
    pool: Pool, client_id: uuid.UUID, endpoint_id: uuid.UUID, since: datetime
) -> int:
    status = await pool.execute(RECOVER_FAILED, endpoint_id, client_id, since)
    return int(status.rsplit(" ", 1)[-1])
