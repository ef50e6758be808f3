"""Bulk rows in one statement (`INSERT ... SELECT generate_series`): thousands to millions of
jobs in seconds, shaped like the rows falrelay writes."""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Any

import asyncpg

from bench.workload import job_request, succeeded_event


def uuid7_sql(ts: str, n: str, salt: str) -> str:
    """A UUIDv7 in SQL (Postgres 16 has no uuidv7()): the timestamp's milliseconds, then bits
    from md5(n, salt). Like `app.ids.uuid7`, it keeps new rows at the right of the index."""
    rand = f"md5({n}::text || '{salt}')"
    return (
        f"(lpad(to_hex((extract(epoch FROM {ts}) * 1000)::bigint), 12, '0') || '7' || "
        f"substr({rand}, 1, 3) || '8' || substr({rand}, 4, 15))::uuid"
    )


async def insert_queued_jobs(conn: asyncpg.Connection[Any], client_id: uuid.UUID, n: int) -> None:
    """n jobs as `POST /v1/jobs` leaves them: queued and due now."""
    salt = secrets.token_hex(4)
    request = job_request()
    await conn.execute(
        f"""
        INSERT INTO jobs (id, client_id, model, input, metadata)
        SELECT {uuid7_sql("clock_timestamp()", "g", salt)}, $1, $2, $3::jsonb, $4::jsonb
        FROM generate_series(1, $5) AS g
        """,
        client_id,
        request["model"],
        json.dumps({**request["input"], "reasoning": "low"}),
        json.dumps(request["metadata"]),
        n,
    )


async def insert_finished_jobs(
    conn: asyncpg.Connection[Any], client_id: uuid.UUID, n: int, *, chunk: int = 100_000
) -> None:
    """n finished jobs of one client, created 100 ms apart up to now, as a busy tenant's
    history looks: mostly succeeded (with output and fal's URLs), some failed or canceled."""
    salt = secrets.token_hex(4)
    request = job_request()
    output = succeeded_event("job_x", "2026-01-01T00:00:00Z")["data"]["output"]
    base = "https://queue.fal.run/imagineart/imagineart-2.0-preview/requests/"
    for start in range(1, n + 1, chunk):
        stop = min(n, start + chunk - 1)
        await conn.execute(
            f"""
            INSERT INTO jobs (id, client_id, model, status, input, metadata, output, error,
                fal_request_id, fal_status_url, fal_response_url, fal_cancel_url, attempts,
                created_at, submitted_at, started_at, completed_at, updated_at,
                next_attempt_at)
            SELECT {uuid7_sql("t.ts", "g", salt)}, $1, $2, s.status, $3::jsonb, $4::jsonb,
                CASE WHEN s.status = 'succeeded' THEN $5::jsonb END,
                CASE WHEN s.status = 'failed'
                     THEN '{{"type": "model_error", "message": "the model failed"}}'::jsonb END,
                r.id, $6 || r.id || '/status', $6 || r.id, $6 || r.id || '/cancel', 1,
                t.ts, t.ts + interval '1 s', t.ts + interval '2 s', t.ts + interval '9 s',
                t.ts + interval '9 s', NULL
            FROM generate_series($7::int, $8::int) AS g
            CROSS JOIN LATERAL (SELECT now() - ($9::int - g) * interval '100 ms' AS ts) AS t
            CROSS JOIN LATERAL (SELECT md5(g::text || '{salt}') AS id) AS r
            CROSS JOIN LATERAL (SELECT CASE WHEN g % 50 = 0 THEN 'failed'
                                            WHEN g % 97 = 0 THEN 'canceled'
                                            ELSE 'succeeded' END AS status) AS s
            """,
            client_id,
            request["model"],
            json.dumps({**request["input"], "reasoning": "low"}),
            json.dumps(request["metadata"]),
            json.dumps(output),
            base,
            start,
            stop,
            n,
        )
