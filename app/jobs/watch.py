"""One poller per process for everyone waiting on a job to change.

Open event streams (`GET /v1/jobs/{id}/events`) and `Prefer: wait` requests wait for a job's
next transition. Each used to read Postgres four times a second on its own; with thousands
open that was thousands of queries a second for nothing new. Here one task reads the status
and `updated_at` of every watched job in one indexed query (`id = ANY($1)`) a few times a
second and wakes only the waiters whose job moved: the database's cost no longer grows with the
number of waiters, only with the number of jobs that change.

A waiter may say what it holds already (the job's status as it last read it): it is then woken
only when the job is seen to differ from that, not "in case" on the first poll, and a change
made between its read and its registration still differs from what it holds, so none is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime

from app.db.availability import UNAVAILABLE
from app.db.pool import Pool

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
STATES = "SELECT id, status, updated_at FROM jobs WHERE id = ANY($1::uuid[])"


class Watch:
    """One waiter's registration. `changed` is set when the job moved past what the waiter
    holds (clear it before each read)."""

    __slots__ = ("_checked", "_status", "_updated_at", "changed")

    def __init__(self, status: str | None) -> None:
        self.changed = asyncio.Event()
        self._status = status
        self._updated_at: datetime | None = None
        # When the job was last known to be as the waiter holds it: at registration, the
        # waiter's own read; then each poll that found it unmoved.
        self._checked = time.monotonic()

    def holds_current(self, within: float) -> bool:
        """Whether what the waiter holds is the job as it stands, as far as the watcher has
        seen within the last `within` seconds: nothing seen to move since, and a poll (or
        the waiter's own read) that recent. If not, the waiter should read."""
        return not self.changed.is_set() and time.monotonic() - self._checked <= within

    def _see(self, status: str, updated_at: datetime, polled: float) -> None:
        if self._updated_at is None:
            # First poll since registration. A waiter that said what it holds is woken only
            # if the status differs; one that did not is woken to read, in case it moved.
            moved = self._status is None or status != self._status
        else:
            moved = updated_at != self._updated_at
        self._updated_at = updated_at
        if moved:
            self.changed.set()
        else:
            self._checked = max(self._checked, polled)


class JobWatcher:
    def __init__(self, pool: Pool, *, poll_seconds: float = POLL_SECONDS) -> None:
        self._pool = pool
        self.poll_seconds = poll_seconds
        self._waiters: dict[uuid.UUID, set[Watch]] = {}
        self._someone_waits = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def watch(self, job_id: uuid.UUID, status: str | None = None) -> AsyncIterator[Watch]:
        """Watch the job until the block ends. `status`: the job's status as the waiter read it
        (from a read before this call); without it, the first poll wakes the waiter anyway."""
        watch = Watch(status)
        self._waiters.setdefault(job_id, set()).add(watch)
        self._someone_waits.set()
        if self._task is None or self._task.done():
            # A context of its own, not the first waiter's request's (its trace, its log ids).
            self._task = asyncio.create_task(
                self._run(), name="job-watcher", context=contextvars.Context()
            )
        try:
            yield watch
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(watch)
                if not waiters:
                    del self._waiters[job_id]

    def watching(self, job_id: uuid.UUID) -> bool:
        return job_id in self._waiters

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
            await asyncio.sleep(self.poll_seconds)
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
        # Before the query: what it returns is the jobs as they stood at least this late.
        polled = time.monotonic()
        rows = await self._pool.fetch(STATES, watched)
        for row in rows:
            for watch in self._waiters.get(row["id"], ()):
                watch._see(row["status"], row["updated_at"], polled)
