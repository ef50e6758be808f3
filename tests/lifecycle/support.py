"""Jobs with everything that hangs off them, written straight to Postgres, and the checks that
nothing of a deleted job is left: no row (followed through every foreign key that leads to
`jobs`, read from the catalog, so a table added later is checked too) and no file."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from app.db.pool import Pool

TYPES = ("job.submitted", "job.running")


class RecordingStore:
    """Stands in for app.storage's ObjectStore where only deletes matter: records every key
    it is asked to delete, or fails every call while `fail` is set."""

    def __init__(self) -> None:
        self.deleted: list[str] = []
        self.calls = 0
        self.fail = False

    async def delete(self, keys: Sequence[str]) -> None:
        self.calls += 1
        if self.fail:
            raise OSError("the store is down")
        self.deleted.extend(keys)

    async def aclose(self) -> None:
        return None


async def endpoint(pool: Pool, client_id: uuid.UUID) -> uuid.UUID:
    endpoint_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO webhook_endpoints (id, client_id, url, event_types, secrets) "
        "VALUES ($1, $2, 'https://example.com/hook', $3, '[]'::jsonb)",
        endpoint_id,
        client_id,
        ["job.submitted", "job.running", "job.succeeded", "job.failed", "job.canceled"],
    )
    return endpoint_id


def files_for(job_id: uuid.UUID, count: int = 2) -> list[dict[str, Any]]:
    return [
        {
            "key": f"jobs/{job_id}/{n}-image.png",
            "thumbnail_key": f"jobs/{job_id}/{n}-image.webp" if n == 0 else None,
            "size": 1234,
            "sha256": "00" * 32,
            "content_type": "image/png",
            "error": None,
        }
        for n in range(count)
    ]


def keys_of(job_id: uuid.UUID, count: int = 2) -> set[str]:
    return {
        key
        for entry in files_for(job_id, count)
        for key in (entry["key"], entry["thumbnail_key"])
        if key
    }


async def seed_job(
    pool: Pool,
    client_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    *,
    status: str = "succeeded",
    finished_ago: timedelta = timedelta(days=60),
    files: bool = True,
    copying: bool = False,
    retrying: bool = False,
) -> uuid.UUID:
    """A job as the product leaves it: its events (one per state change), a delivery of each
    to the endpoint and of the last to the job's callback_url, one attempt per delivery, its
    mirrored files (two, one with a thumbnail) and an idempotency key. With `retrying`, the
    callback_url's delivery was answered 503 and waits in the delivery queue for its retry."""
    job_id = uuid.uuid4()
    now = datetime.now(UTC)
    completed = now - finished_ago
    finished = status in ("succeeded", "failed", "canceled")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """
            INSERT INTO jobs (id, client_id, model, status, input, callback_url,
                              idempotency_key, request_fingerprint, files, mirror_retry_at,
                              created_at, completed_at, next_attempt_at)
            VALUES ($1, $2, 'imagineart/imagineart-2.0-preview/text-to-image', $3,
                    '{"prompt": "a fox"}', 'https://example.com/cb', $4, '\\x00', $5, $6,
                    $7, $8, NULL)
            """,
            job_id,
            client_id,
            status,
            f"key-{job_id}",
            files_for(job_id) if files else None,
            now + timedelta(minutes=5) if copying else None,
            completed - timedelta(seconds=10),
            completed if finished else None,
        )
        types = [*TYPES, f"job.{status}"] if finished else ["job.submitted"]
        for n, event_type in enumerate(types):
            event_id = uuid.uuid4()
            at = completed - timedelta(seconds=len(types) - n)
            await conn.execute(
                "INSERT INTO events (id, client_id, job_id, type, payload, created_at) "
                "VALUES ($1, $2, $3, $4, $5, $6)",
                event_id,
                client_id,
                job_id,
                event_type,
                {"type": event_type, "data": {"id": str(job_id)}},
                at,
            )
            targets: list[tuple[uuid.UUID | None, str | None]] = [(endpoint_id, None)]
            if n == len(types) - 1:
                targets.append((None, "https://example.com/cb"))
            for target_endpoint, url in targets:
                delivery_id = uuid.uuid4()
                pending = retrying and url is not None
                await conn.execute(
                    "INSERT INTO deliveries (id, client_id, event_id, job_id, endpoint_id, url, "
                    "status, attempt_count) VALUES ($1, $2, $3, $4, $5, $6, $7, 1)",
                    delivery_id,
                    client_id,
                    event_id,
                    job_id,
                    target_endpoint,
                    url,
                    "pending" if pending else "succeeded",
                )
                if pending:
                    await conn.execute(
                        "INSERT INTO delivery_queue (id, client_id, event_id, url,"
                        " next_attempt_at, attempt_count)"
                        " VALUES ($1, $2, $3, $4, now() + interval '1 hour', 1)",
                        delivery_id,
                        client_id,
                        event_id,
                        url,
                    )
                await conn.execute(
                    "INSERT INTO delivery_attempts (id, delivery_id, attempted_at, duration_ms, "
                    "status_code) VALUES ($1, $2, $3, 12, $4)",
                    uuid.uuid4(),
                    delivery_id,
                    at,
                    503 if pending else 200,
                )
    return job_id


async def ping(pool: Pool, client_id: uuid.UUID, endpoint_id: uuid.UUID) -> uuid.UUID:
    """A test event and its delivery: no job, so no purge of jobs may touch it."""
    event_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO events (id, client_id, job_id, type, payload, created_at) "
        "VALUES ($1, $2, NULL, 'ping', '{}', now() - interval '90 days')",
        event_id,
        client_id,
    )
    await pool.execute(
        "INSERT INTO deliveries (id, client_id, event_id, job_id, endpoint_id, status) "
        "VALUES ($1, $2, $3, NULL, $4, 'succeeded')",
        uuid.uuid4(),
        client_id,
        event_id,
        endpoint_id,
    )
    return event_id


async def _referencing(pool: Pool, table: str) -> list[tuple[str, str]]:
    """(table, column) of every foreign key that points at `table`."""
    rows = await pool.fetch(
        """
        SELECT c.conrelid::regclass::text AS tbl, a.attname AS col
        FROM pg_constraint c
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
        WHERE c.contype = 'f' AND c.confrelid = $1::regclass
        ORDER BY 1, 2
        """,
        table,
    )
    return [(row["tbl"], row["col"]) for row in rows]


async def hanging_off(pool: Pool, job_ids: Sequence[uuid.UUID]) -> dict[str, set[uuid.UUID]]:
    """Every row that references these jobs, directly or through other rows, by table."""
    found: dict[str, set[uuid.UUID]] = {"jobs": set()}
    rows = await pool.fetch("SELECT id FROM jobs WHERE id = ANY($1::uuid[])", list(job_ids))
    found["jobs"] = {row["id"] for row in rows}
    frontier = [("jobs", set(job_ids))]
    while frontier:
        table, ids = frontier.pop()
        for child, column in await _referencing(pool, table):
            rows = await pool.fetch(
                f"SELECT id FROM {child} WHERE {column} = ANY($1::uuid[])",
                list(ids),
            )
            child_ids = {row["id"] for row in rows}
            found.setdefault(child, set()).update(child_ids)
            # Followed even when empty, so the answer names every table that leads to jobs.
            frontier.append((child, child_ids))
    return found


async def table_counts(pool: Pool) -> dict[str, int]:
    """Rows per table of the schema (exact counts): what a dry run must leave as it was."""
    tables = await pool.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
    )
    return {
        row["tablename"]: await pool.fetchval(f'SELECT count(*) FROM "{row["tablename"]}"')
        for row in tables
    }


async def bulk_old_jobs(
    pool: Pool, client_id: uuid.UUID, endpoint_id: uuid.UUID, count: int
) -> None:
    """`count` jobs that succeeded 60 days ago, in a few statements: each with a file, three
    events, a delivery of each to the endpoint and an attempt of each delivery."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "CREATE TEMP TABLE old_jobs ON COMMIT DROP AS "
            "SELECT gen_random_uuid() AS id, now() - interval '60 days' - g * interval '1 ms' "
            "AS at FROM generate_series(1, $1::int) AS g",
            count,
        )
        await conn.execute(
            """
            INSERT INTO jobs (id, client_id, model, status, input, created_at, completed_at,
                              next_attempt_at, files)
            SELECT id, $1, 'imagineart/imagineart-2.0-preview/text-to-image', 'succeeded',
                   '{"prompt": "a fox"}', at, at, NULL,
                   jsonb_build_array(jsonb_build_object('key', 'jobs/' || id || '/0-a.png'))
            FROM old_jobs
            """,
            client_id,
        )
        await conn.execute(
            """
            INSERT INTO events (id, client_id, job_id, type, payload, created_at)
            SELECT gen_random_uuid(), $1, j.id, t.type, '{}', j.at
            FROM old_jobs j,
                 unnest(ARRAY['job.submitted', 'job.running', 'job.succeeded']) AS t(type)
            """,
            client_id,
        )
        await conn.execute(
            """
            INSERT INTO deliveries (id, client_id, event_id, job_id, endpoint_id, status,
                                    attempt_count)
            SELECT gen_random_uuid(), $1, e.id, e.job_id, $2, 'succeeded', 1
            FROM events e JOIN old_jobs j ON j.id = e.job_id
            """,
            client_id,
            endpoint_id,
        )
        await conn.execute(
            """
            INSERT INTO delivery_attempts (id, delivery_id, attempted_at, duration_ms,
                                           status_code)
            SELECT gen_random_uuid(), d.id, j.at, 10, 200
            FROM deliveries d JOIN old_jobs j ON j.id = d.job_id
            """
        )
        await conn.execute("ANALYZE jobs, events, deliveries, delivery_attempts")
