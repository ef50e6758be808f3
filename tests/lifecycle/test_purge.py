"""Purging finished jobs by age: every row that hangs off them goes, nothing else does, and
their files are deleted from the store exactly once, now or (the store down, no store in the
process, a copy possibly in flight) later through the outbox.

The store here is `RecordingStore` (tests/lifecycle/support.py), which records the keys it is
asked to delete; what the lifecycle asks of app.storage is only `delete(keys)`."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from app.db.pool import Pool, create_pool
from app.lifecycle import files, purge
from app.lifecycle.purge import Removed
from tests.lifecycle.conftest import Seeded
from tests.lifecycle.support import (
    RecordingStore,
    endpoint,
    hanging_off,
    keys_of,
    seed_job,
    table_counts,
)

RETENTION = timedelta(days=30)
LEASE = 600.0  # the mirror loop's (mirror_lease_seconds)
# Each seeded finished job: 3 events; 3 endpoint deliveries and a callback one; an attempt each.
EVENTS, DELIVERIES = 3, 4


def cutoff() -> datetime:
    return datetime.now(UTC) - RETENTION


def expected(seeded: Seeded, *, files_deleted: int) -> Removed:
    jobs = len(seeded.old)
    return Removed(
        jobs=jobs,
        events=EVENTS * jobs,
        deliveries=DELIVERIES * jobs,
        delivery_attempts=DELIVERIES * jobs,
        console_sessions=1,
        files=files_deleted,
        files_pending=0,
    )


def deleted_total(kind: str) -> float:
    return REGISTRY.get_sample_value("falrelay_deleted_total", {"kind": kind}) or 0.0


def all_keys(job_ids: list[uuid.UUID]) -> set[str]:
    return {key for job_id in job_ids for key in keys_of(job_id)}


async def outbox(pool: Pool) -> dict[str, tuple[int, float]]:
    """key -> (attempts, seconds until due)."""
    rows = await pool.fetch(
        "SELECT key, attempts, extract(epoch FROM due_at - now())::float8 AS due_in "
        "FROM file_deletions"
    )
    return {row["key"]: (row["attempts"], row["due_in"]) for row in rows}


async def test_purge_leaves_no_orphan_rows_or_files_and_keeps_the_rest(
    db: Pool, seeded: Seeded, store: RecordingStore
) -> None:
    before_old = await hanging_off(db, seeded.old)
    for table in ("events", "deliveries", "delivery_attempts"):
        assert before_old[table], table  # the seed made real work
    before_kept = await hanging_off(db, seeded.kept)
    counts = await table_counts(db)
    metered = {kind: deleted_total(kind) for kind in ("jobs", "events", "files")}

    removed = await purge.purge(
        db, cutoff(), now=datetime.now(UTC), batch_size=2, store=store, copy_lease_seconds=LEASE
    )

    keys = all_keys(seeded.old_with_files)
    assert removed == expected(seeded, files_deleted=len(keys))
    assert sorted(store.deleted) == sorted(keys)  # each once
    # At least ours: other tests in this process count too.
    assert deleted_total("jobs") - metered["jobs"] >= removed.jobs
    assert deleted_total("events") - metered["events"] >= removed.events
    assert deleted_total("files") - metered["files"] >= len(keys)
    # Nothing of the purged jobs is left, in any table that leads to `jobs`.
    after_old = await hanging_off(db, seeded.old)
    assert after_old == {table: set() for table in before_old}
    assert await hanging_off(db, seeded.kept) == before_kept
    assert await outbox(db) == {}

    after = await table_counts(db)
    purged = {
        "jobs": removed.jobs,
        "events": removed.events,
        "deliveries": removed.deliveries,
        "delivery_attempts": removed.delivery_attempts,
        "console_sessions": 1,
    }
    # Everything else is as it was: clients, keys, endpoints, the ping, the money.
    assert after == {table: n - purged.get(table, 0) for table, n in counts.items()}
    assert await db.fetchval("SELECT spent_usd FROM client_spend") == 1.5
    sessions = await db.fetch("SELECT id FROM console_sessions")
    assert [row["id"] for row in sessions] == [seeded.live_session]
    assert await db.fetchval("SELECT count(*) FROM events WHERE id = $1", seeded.ping_event) == 1

    # Run again: nothing more is due.
    again = await purge.purge(
        db, cutoff(), now=datetime.now(UTC), batch_size=2, store=store, copy_lease_seconds=LEASE
    )
    assert again == Removed()


async def test_a_purged_jobs_idempotency_key_can_be_used_again(
    db: Pool, seeded: Seeded, store: RecordingStore
) -> None:
    (job_id, *_) = seeded.old
    key = f"key-{job_id}"
    client_id = await db.fetchval("SELECT client_id FROM jobs WHERE id = $1", job_id)
    await purge.purge(
        db, cutoff(), now=datetime.now(UTC), batch_size=500, store=store, copy_lease_seconds=LEASE
    )
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE idempotency_key = $1", key) == 0
    await db.execute(
        "INSERT INTO jobs (id, client_id, model, input, idempotency_key) "
        "VALUES ($1, $2, 'm', '{}', $3)",
        uuid.uuid4(),
        client_id,
        key,
    )


async def test_dry_run_counts_what_the_purge_then_removes_and_changes_nothing(
    db: Pool, seeded: Seeded, store: RecordingStore
) -> None:
    counts = await table_counts(db)
    now = datetime.now(UTC)
    counted = await purge.count(db, cutoff(), now=now)
    assert await table_counts(db) == counts
    assert store.calls == 0

    keys = all_keys(seeded.old_with_files)
    assert counted == expected(seeded, files_deleted=len(keys))
    removed = await purge.purge(
        db, cutoff(), now=now, batch_size=3, store=store, copy_lease_seconds=LEASE
    )
    assert removed == counted


async def test_files_the_store_failed_to_delete_stay_in_the_outbox_until_it_works(
    db: Pool, seeded: Seeded, store: RecordingStore
) -> None:
    store.fail = True
    removed = await purge.purge(
        db, cutoff(), now=datetime.now(UTC), batch_size=2, store=store, copy_lease_seconds=LEASE
    )

    keys = all_keys(seeded.old_with_files)
    # The rows are gone regardless; the files are owed.
    assert removed.jobs == len(seeded.old)
    assert (removed.files, removed.files_pending) == (0, len(keys))
    pending = await outbox(db)
    assert set(pending) == keys
    assert all(attempts == 1 and due_in > 20 for attempts, due_in in pending.values())
    assert await files.drain(db, store) == 0  # none due yet

    store.fail = False
    await db.execute("UPDATE file_deletions SET due_at = now() - interval '1 second'")
    assert await files.drain(db, store) == len(keys)
    assert sorted(store.deleted) == sorted(keys)
    assert await outbox(db) == {}


async def test_without_a_store_the_keys_wait_for_a_process_that_has_one(
    db: Pool, seeded: Seeded, store: RecordingStore
) -> None:
    removed = await purge.purge(
        db, cutoff(), now=datetime.now(UTC), batch_size=2, store=None, copy_lease_seconds=LEASE
    )
    keys = all_keys(seeded.old_with_files)
    assert (removed.jobs, removed.files, removed.files_pending) == (len(seeded.old), 0, len(keys))
    assert set(await outbox(db)) == keys
    assert all(due_in <= 0 for _, due_in in (await outbox(db)).values())

    assert await files.drain(db, store) == len(keys)
    assert sorted(store.deleted) == sorted(keys)
    assert await outbox(db) == {}


async def test_a_job_whose_failed_copy_may_be_in_flight_waits_for_a_later_purge(
    db: Pool, seeded: Seeded, store: RecordingStore
) -> None:
    """A retried copy writes a key the job's `files` does not name yet: the job is left alone
    while the mirror loop's lease on it may run (`mirror_retry_at` within the next lease)."""
    client_id = seeded.clients[0]
    copying = await seed_job(
        db, client_id, await endpoint(db, client_id), finished_ago=timedelta(days=60), copying=True
    )
    removed = await purge.purge(
        db, cutoff(), now=datetime.now(UTC), batch_size=500, store=store, copy_lease_seconds=LEASE
    )
    assert removed.jobs == len(seeded.old)
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE id = $1", copying) == 1
    assert not set(store.deleted) & keys_of(copying)

    # Its next try is further off than a lease: no copy can be running now.
    await db.execute(
        "UPDATE jobs SET mirror_retry_at = now() + interval '2 hours' WHERE id = $1", copying
    )
    removed = await purge.purge(
        db, cutoff(), now=datetime.now(UTC), batch_size=500, store=store, copy_lease_seconds=LEASE
    )
    assert removed.jobs == 1
    assert keys_of(copying) <= set(store.deleted)


async def test_two_purges_at_once_never_take_the_same_jobs(
    db: Pool, fresh_database_url: str, seeded: Seeded, store: RecordingStore
) -> None:
    client_id = seeded.clients[1]
    hook = await endpoint(db, client_id)
    more = [await seed_job(db, client_id, hook) for _ in range(30)]
    old = [*seeded.old, *more]
    with_files = [*seeded.old_with_files, *more]
    pools = [await create_pool(fresh_database_url, min_size=1, max_size=2) for _ in range(2)]
    try:
        now = datetime.now(UTC)
        results = await asyncio.gather(
            *(
                purge.purge(
                    p, cutoff(), now=now, batch_size=3, store=store, copy_lease_seconds=LEASE
                )
                for p in pools
            )
        )
    finally:
        for p in pools:
            await p.close()

    total = Removed()
    for result in results:
        total.add(result)
    assert total.jobs == len(old)
    assert total.events == EVENTS * len(old)
    assert total.deliveries == total.delivery_attempts == DELIVERIES * len(old)
    assert total.console_sessions == 1
    assert sorted(store.deleted) == sorted(all_keys(with_files))  # no key twice
    assert await hanging_off(db, old) == {
        table: set() for table in await hanging_off(db, seeded.kept)
    }
