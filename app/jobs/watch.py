"""One poller per process for everyone waiting on a job to change.

Open event streams (`GET /v1/jobs/{id}/events`) and `Prefer: wait` requests wait for a job's
next transition. Each used to read Postgres four times a second on its own; with thousands
open that was thousands of queries a second for nothing new. Here one task reads the
`updated_at` of every watched job in one indexed query (`id = ANY($1)`) a few times a second
and wakes only the waiters whose job moved: the database's cost no longer grows with the
number of waiters, only with the number of jobs that change.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import datetime

from app.db.availability import UNAVAILABLE
from app.db.pool import Pool

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
UPDATED_AT = "SELECT id, updated_at FROM jobs WHERE id = ANY($1::uuid[])"


class JobWatcher:
    def __init__(self, pool: Pool, *, poll_seconds: float = POLL_SECONDS) -> None:
        self._pool = pool
        self._poll_seconds = poll_seconds
        self._waiters: dict[uuid.UUID, set[asyncio.Event]] = {}
        self._seen: dict[uuid.UUID, datetime] = {}
        self._someone_waits = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def watch(self, job_id: uuid.UUID) -> AsyncIterator[asyncio.Event]:
        """An event set whenever the job changes (clear it before each wait)."""
        changed = asyncio.Event()
        # Set from the start: the waiter's first wait returns at once and it reads, so a change
        # made before it registered (and already seen by the poller) is never missed.
        changed.set()
        self._waiters.setdefault(job_id, set()).add(changed)
        self._someone_waits.set()
        if self._task is None or self._task.done():
            # A context of its own, not the first waiter's request's (its trace, its log ids).
            self._task = asyncio.create_task(
                self._run(), name="job-watcher", context=contextvars.Context()
            )
        try:
            yield changed
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(changed)
                if not waiters:
                    del self._waiters[job_id]
                    self._seen.pop(job_id, None)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            if not self._waiters:
                self._someone_waits.clear()
                await self._someone_waits.wait()
            await asyncio.sleep(self._poll_seconds)
            try:
                await self._poll()
            except UNAVAILABLE as exc:
                # Waiters wake on their own timeouts and read (and fail) themselves.
                log.warning("job watcher: the database is unavailable: %r", exc)
            except Exception:
                # Never let the one poller die: every waiter of the process depends on it.
                log.exception("job watcher: a poll failed; polling on")

    async def _poll(self) -> None:
        watched = list(self._waiters)
        if not watched:
            return
        rows = await self._pool.fetch(UPDATED_AT, watched)
        for row in rows:
            job_id, updated_at = row["id"], row["updated_at"]
            # A job polled for the first time wakes its waiters too: it may have moved
            # between their own read and this one, and one read of theirs settles it.
            if self._seen.get(job_id) != updated_at:
                for changed in self._waiters.get(job_id, ()):
                    changed.set()
                self._seen[job_id] = updated_at
