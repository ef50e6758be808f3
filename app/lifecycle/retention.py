"""Automatic retention: a supervised worker loop (app.worker.runner) that deletes finished jobs
`retention_days` after they finished, a batch per iteration.

Any number of replicas run it: a batch is claimed with FOR UPDATE SKIP LOCKED, so two never
take the same jobs and none waits on another. After a full batch the loop rests four times as
long as the batch took (a fifth of the time at most goes to purging, whatever the backlog) and
goes on; once nothing is due, it deletes expired console sessions and due keys of the file
outbox, then sleeps `retention_interval_seconds`. With retention off, only the outbox is worked
(the files of jobs deleted through the API).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from app.db.pool import Pool
from app.lifecycle import files
from app.lifecycle.files import ObjectDeleter
from app.lifecycle.purge import purge_batch, purge_sessions
from app.settings import Settings

log = logging.getLogger(__name__)

# After a full batch, rest this many times as long as the batch took. A batch keeps a core of
# Postgres busy while it runs: with intake saturating the machine, resting as long as it took
# made intake's p99 4.5 times its p99 without a purge, three times as long 1.41 times, with
# the purge at 2,723 and 818 jobs/s (bench/README.md, purge under load).
REST = 4.0


def utcnow() -> datetime:
    return datetime.now(UTC)


class Retention:
    def __init__(
        self,
        pool: Pool,
        settings: Settings,
        store: ObjectDeleter | None,
        *,
        pause: Callable[[float], Awaitable[None]],
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.store = store
        self.pause = pause
        self.now = now

    @property
    def stall_after(self) -> float:
        """An iteration's bound: the sleep is part of it, and is no stall."""
        return self.settings.retention_interval_seconds + self.settings.loop_stall_seconds

    async def iterate(self) -> None:
        settings = self.settings
        if settings.retention_days is not None:
            started = time.monotonic()
            cutoff = self.now() - timedelta(days=settings.retention_days)
            limit = settings.retention_batch_size
            batch = await purge_batch(
                self.pool,
                cutoff,
                limit=limit,
                store=self.store,
                copy_lease_seconds=settings.mirror_lease_seconds,
            )
            if batch.jobs:
                log.info(
                    "retention: deleted %d jobs finished before %s (%d events, %d deliveries, "
                    "%d attempts, %d files, %d files left for later)",
                    batch.jobs,
                    cutoff.isoformat(),
                    batch.events,
                    batch.deliveries,
                    batch.delivery_attempts,
                    batch.files,
                    batch.files_pending,
                )
            if batch.jobs >= limit:
                await self.pause(REST * (time.monotonic() - started))
                return  # more are due
            sessions = await purge_sessions(self.pool, self.now())
            if sessions:
                log.info("retention: deleted %d expired console sessions", sessions)
        if self.store is not None and await files.drain(self.pool, self.store) >= files.STORE_BATCH:
            return  # a backlog (the store was down): the next batch at once
        await self.pause(settings.retention_interval_seconds)
