"""Deleting a deleted job's mirrored files, through the `file_deletions` outbox.

The keys are written in the transaction that deletes the job; the store is called only after
the commit (no network call with a transaction open), and a key leaves the outbox only once the
store has deleted it. So a store that is down, or a process that dies in between, delays a
deletion and never leaks a file: the retention loop of any replica with a store retries the
keys that are due, with a backoff up to an hour.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from app.db.pool import Pool
from app.lifecycle import repository
from app.metrics import DELETED
from app.storage import InvalidKey, check_key

log = logging.getLogger(__name__)

# Keys per store call: S3's DeleteObjects takes at most 1,000.
STORE_BATCH = 1000
# How long a key written by a deleting transaction stays with that process: long enough for
# its store call (the store's own timeouts are far shorter), after which anyone may retry it.
DELETE_LEASE_SECONDS = 300.0


class ObjectDeleter(Protocol):
    """What lifecycle needs of the object store (app.storage's `ObjectStore`): delete these
    objects, a missing one counting as deleted."""

    async def delete(self, keys: list[str]) -> None: ...


def keys_of(files: Any) -> list[str]:
    """The object keys a job's `files` names: each file's copy and its thumbnail."""
    if not isinstance(files, list):
        return []
    keys: list[str] = []
    for entry in files:
        if not isinstance(entry, dict):
            continue
        for name in ("key", "thumbnail_key"):
            key = entry.get(name)
            if isinstance(key, str) and key:
                keys.append(key)
    return keys


async def delete_held(pool: Pool, store: ObjectDeleter, keys: Sequence[str]) -> int:
    """Delete keys whose outbox lease this process holds; how many are gone. A store failure
    is logged and the keys are rescheduled (never raised: the rows are gone already)."""
    valid = []
    for key in keys:
        try:
            valid.append(check_key(key))
        except InvalidKey:
            # No store writes under such a key, so there is nothing to delete; kept, it would
            # fail its whole batch at every try.
            log.error("not a storage key, dropped from the deletions: %r", key)
            await repository.files_deleted(pool, [key])
    deleted = 0
    for start in range(0, len(valid), STORE_BATCH):
        chunk = valid[start : start + STORE_BATCH]
        try:
            await store.delete(chunk)
        except Exception as exc:  # the store's errors are its library's; any one means "later"
            log.warning("deleting %d files failed; they will be retried: %r", len(chunk), exc)
            await repository.files_failed(pool, chunk, repr(exc)[:500])
            continue
        await repository.files_deleted(pool, chunk)
        DELETED.labels("files").inc(len(chunk))
        deleted += len(chunk)
    return deleted


async def drain(pool: Pool, store: ObjectDeleter, *, limit: int = STORE_BATCH) -> int:
    """One batch of due keys (left by a failed delete, a crash, a store-less process, or a
    grace period): deleted from the store and the outbox. Returns how many were deleted."""
    keys = await repository.claim_files(pool, limit, DELETE_LEASE_SECONDS)
    if not keys:
        return 0
    return await delete_held(pool, store, keys)


async def discard(pool: Pool, store: ObjectDeleter, keys: Sequence[str]) -> int:
    """Delete objects nothing refers to any more (a copy that landed after its job was
    deleted), through the outbox like a deleted job's: a failure leaves them to be retried."""
    async with pool.acquire() as conn:
        await repository.record_files(conn, keys, [DELETE_LEASE_SECONDS] * len(keys))
    return await delete_held(pool, store, keys)
