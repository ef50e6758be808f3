from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from app.auth import service as auth_service
from app.db.pool import Pool, create_pool
from tests.lifecycle.support import RecordingStore, endpoint, ping, seed_job

OLD = timedelta(days=60)
RECENT = timedelta(days=1)


@dataclass
class Seeded:
    """Two clients' jobs: some finished long ago (to go), the rest (to stay)."""

    old: list[uuid.UUID] = field(default_factory=list)
    old_with_files: list[uuid.UUID] = field(default_factory=list)
    kept: list[uuid.UUID] = field(default_factory=list)
    clients: list[uuid.UUID] = field(default_factory=list)
    expired_session: uuid.UUID | None = None
    live_session: uuid.UUID | None = None
    ping_event: uuid.UUID | None = None


@pytest.fixture
async def db(fresh_database_url: str) -> AsyncIterator[Pool]:
    """A database of the test's own: purges commit, and see every client's jobs."""
    pool = await create_pool(fresh_database_url, min_size=1, max_size=6)
    yield pool
    await pool.close()


@pytest.fixture
def store() -> RecordingStore:
    return RecordingStore()


async def _session(pool: Pool, client_id: uuid.UUID, expires_in: str) -> uuid.UUID:
    session_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO console_sessions (id, token_hash, api_key_id, expires_at) "
        "SELECT $1, $2, id, now() + $3::text::interval FROM api_keys WHERE client_id = $4",
        session_id,
        uuid.uuid4().bytes + uuid.uuid4().bytes,
        expires_in,
        client_id,
    )
    return session_id


@pytest.fixture
async def seeded(db: Pool) -> Seeded:
    seeded = Seeded()
    for name in ("a", "b"):
        client_id, _ = await auth_service.create_client(db, name)
        seeded.clients.append(client_id)
    a, b = seeded.clients
    a_hook, b_hook = await endpoint(db, a), await endpoint(db, b)
    for client_id, hook, status in [
        (a, a_hook, "succeeded"),
        (a, a_hook, "failed"),
        (a, a_hook, "canceled"),
        (b, b_hook, "succeeded"),
        (b, b_hook, "succeeded"),
    ]:
        files = status == "succeeded"
        job_id = await seed_job(db, client_id, hook, status=status, finished_ago=OLD, files=files)
        seeded.old.append(job_id)
        if files:
            seeded.old_with_files.append(job_id)
    seeded.kept += [
        await seed_job(db, a, a_hook, finished_ago=RECENT),
        # Created long ago but not finished: never purged, whatever their age.
        await seed_job(db, a, a_hook, status="queued", finished_ago=OLD, files=False),
        await seed_job(db, b, b_hook, status="running", finished_ago=OLD, files=False),
    ]
    seeded.ping_event = await ping(db, a, a_hook)
    seeded.expired_session = await _session(db, a, "-1 hour")
    seeded.live_session = await _session(db, b, "1 hour")
    # The month's money: never purged.
    await db.execute(
        "INSERT INTO client_spend (client_id, month, reserved_usd, spent_usd) "
        "VALUES ($1, date_trunc('month', now() - interval '60 days')::date, 0, 1.5)",
        a,
    )
    return seeded
