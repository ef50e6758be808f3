"""No orphan files, in the real stores (app.storage): a directory, and a bucket on the session's
`moto_server`. A purge and a delete remove exactly their jobs' objects (files and thumbnails)
and leave every other job's; the outbox ends empty. Keys no store would accept are dropped."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.db.pool import Pool
from app.lifecycle import files, purge
from app.settings import Settings
from app.storage import ObjectNotFound, ObjectStore, open_store
from app.storage.filesystem import FileStore
from tests.lifecycle.support import RecordingStore, endpoint, keys_of, seed_job
from tests.moto import BUCKET, MotoServer

LEASE = 600.0


@pytest.fixture(params=["file", "s3"])
async def real_store(
    request: pytest.FixtureRequest, tmp_path: Path, database_url: str, pool: Pool
) -> AsyncIterator[ObjectStore]:
    """A directory, or a prefix of its own in the session's moto_server bucket."""
    if request.param == "file":
        settings = Settings(database_url=database_url, storage_url=(tmp_path / "f").as_uri())
    else:
        moto: MotoServer = request.getfixturevalue("moto")
        settings = Settings(
            database_url=database_url,
            storage_url=f"s3://{BUCKET}/lifecycle-{secrets.token_hex(4)}",
            s3_endpoint_url=moto.url,
        )
    store = await open_store(settings, pool)
    assert store is not None
    yield store
    await store.aclose()


async def put_all(store: ObjectStore, keys: set[str]) -> None:
    for key in sorted(keys):
        await store.put_bytes(key, f"bytes of {key}".encode(), content_type="image/png")


async def present(store: ObjectStore, keys: set[str]) -> set[str]:
    found = set()
    for key in keys:
        try:
            await store.read(key)
        except ObjectNotFound:
            continue
        found.add(key)
    return found


def on_disk(store: FileStore) -> set[str]:
    root = Path(store.root)
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}


async def test_purge_and_delete_remove_exactly_their_jobs_objects(
    db: Pool, real_store: ObjectStore
) -> None:
    from app.auth import service as auth_service

    client_id, _ = await auth_service.create_client(db, "stored")
    hook = await endpoint(db, client_id)
    old = [await seed_job(db, client_id, hook) for _ in range(3)]
    kept = await seed_job(db, client_id, hook, finished_ago=timedelta(days=1))
    deleted_one = await seed_job(db, client_id, hook, finished_ago=timedelta(days=2))
    every = {key for job in [*old, kept, deleted_one] for key in keys_of(job)}
    await put_all(real_store, every)
    assert await present(real_store, every) == every

    now = datetime.now(UTC)
    removed = await purge.purge(
        db,
        now - timedelta(days=30),
        now=now,
        batch_size=2,
        store=real_store,
        copy_lease_seconds=LEASE,
    )
    old_keys = {key for job in old for key in keys_of(job)}
    assert (removed.jobs, removed.files, removed.files_pending) == (3, len(old_keys), 0)
    assert await present(real_store, every) == every - old_keys

    public = f"job_{deleted_one.hex}"
    one = await purge.delete_job(db, real_store, client_id, public)
    assert (one.jobs, one.files) == (1, len(keys_of(deleted_one)))
    assert await present(real_store, every) == keys_of(kept)
    if isinstance(real_store, FileStore):
        assert on_disk(real_store) == keys_of(kept)  # nothing else in the directory
    assert await db.fetchval("SELECT count(*) FROM file_deletions") == 0


async def test_a_delete_through_the_api_removes_the_files_from_the_apps_store(
    db: Pool, tmp_path: Path, fresh_database_url: str
) -> None:
    from app.auth import service as auth_service
    from app.main import create_app
    from tests.support import http_client

    settings = Settings(database_url=fresh_database_url, storage_url=(tmp_path / "f").as_uri())
    app = create_app(settings)
    client_id, key = await auth_service.create_client(db, "api")
    job = await seed_job(db, client_id, await endpoint(db, client_id))
    async with app.router.lifespan_context(app), http_client(app, key) as http:
        store = app.state.runtime.store
        assert isinstance(store, FileStore)
        await put_all(store, keys_of(job))
        assert on_disk(store) == keys_of(job)
        response = await http.delete(f"/v1/jobs/job_{job.hex}")
        assert response.status_code == 204
        assert on_disk(store) == set()
    assert await db.fetchval("SELECT count(*) FROM file_deletions") == 0


async def test_keys_no_store_accepts_are_dropped_and_do_not_hold_the_others(db: Pool) -> None:
    store = RecordingStore()
    good = ["jobs/a/0-x.png", "jobs/a/0-x.png.thumb.webp"]
    bad = ["../outside.png", "/absolute.png"]
    await db.execute("INSERT INTO file_deletions (key) SELECT unnest($1::text[])", [*bad, *good])
    assert await files.drain(db, store) == len(good)
    assert sorted(store.deleted) == sorted(good)
    assert await db.fetchval("SELECT count(*) FROM file_deletions") == 0


async def test_discard_deletes_objects_nothing_refers_to_or_keeps_them_owed(db: Pool) -> None:
    store = RecordingStore()
    store.fail = True
    assert await files.discard(db, store, ["jobs/b/1-late.png"]) == 0
    assert await db.fetchval("SELECT key FROM file_deletions") == "jobs/b/1-late.png"
    store.fail = False
    await db.execute("UPDATE file_deletions SET due_at = now()")
    assert await files.drain(db, store) == 1
    assert store.deleted == ["jobs/b/1-late.png"]
