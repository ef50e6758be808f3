"""One poller per process for everyone waiting on a job to change.

Open event streams (`GET /v1/jobs/{id}/events`) and `Prefer: wait` requests wait for a job's
next transition. Each used to read Postgres four times a second on its own; with thousands
open that was thousands of queries a second for nothing new. Here one task reads the status
and `updated_at` of every watched job in one indexed query (`id = ANY($1)`) a few times a
second and wakes only the waiters whose job moved: the database's cost no longer grows with the
number of waiters, only with the number of jobs that change.

Between polls, a finished job wakes the poller at once: the processes that finish jobs send a
Postgres NOTIFY then (app.db.wakeup's FREED, meant for the workers: a slot at fal is free; or
the "submit" it gives way to when one is on its way), and the watcher LISTENs for both while
anyone waits, so a wait or stream hears of its job's end within a few tens of milliseconds
rather than at the next poll. It is a hint: a poll follows it, no sooner than
`MIN_GAP_SECONDS` after the last, and the regular polls go on regardless.

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
from app.db.wakeup import FREED, Listener

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
# However many jobs finish (or are created: "submit" is their hint too), the poller reads no
# more often than once in this long: at most 10 polls a second against 4 without the hint.
MIN_GAP_SECONDS = 0.1
LISTEN_RETRY_SECONDS = 5.0
SLOW_CYCLE_SECONDS = 0.75
# The hints that a job finished (app.jobs.lifecycle sends FREED for every terminal transition,
# unless a "submit" is about to go, which then stands for it).
FINISHED_TOPICS = frozenset({FREED, "submit"})
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
    def __init__(
        self, pool: Pool, *, poll_seconds: float = POLL_SECONDS, listen_url: str | None = None
    ) -> None:
        """`listen_url`: the database to LISTEN on for finished jobs (none: polls only)."""
        self._pool = pool
        self.poll_seconds = poll_seconds
        self._listen_url = listen_url
        self._waiters: dict[uuid.UUID, set[Watch]] = {}
        self._someone_waits = asyncio.Event()
        self._poke = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @contextlib.asynccontextmanager
    async def watch(self, job_id: uuid.UUID, status: str | None = None) -> AsyncIterator[Watch]:
        """Watch the job until the block ends. `status`: the job's status as the waiter read it
        (from a read before this call); without it, the first poll wakes the waiter anyway."""
        watch = Watch(status)
        self._waiters.setdefault(job_id, set()).add(watch)
        self._someone_waits.set()
        if not self._tasks or self._tasks[0].done():
            self._start()
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
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _start(self) -> None:
        for task in self._tasks:
            task.cancel()
        # A context of their own, not the first waiter's request's (its trace, its log ids).
        context = contextvars.Context()
        self._tasks = [asyncio.create_task(self._run(), name="job-watcher", context=context)]
        if self._listen_url is not None:
            self._tasks.append(
                asyncio.create_task(
                    self._listen(self._listen_url), name="job-watcher-listen", context=context
                )
            )

    def _on_topic(self, topic: str) -> None:
        if topic in FINISHED_TOPICS:
            self._poke.set()

    async def _listen(self, url: str) -> None:
        listener = Listener(url, self._on_topic)
        try:
            while True:
                try:
                    await listener.iterate()
                except Exception as exc:
                    # The regular polls go on: a lost hint only costs latency.
                    log.warning("job watcher: LISTEN failed, retrying: %r", exc)
                    await asyncio.sleep(LISTEN_RETRY_SECONDS)
        finally:
            await listener.aclose()

    async def _run(self) -> None:
        while True:
            if not self._waiters:
                self._someone_waits.clear()
                await self._someone_waits.wait()
            slept = time.monotonic()
            await asyncio.sleep(MIN_GAP_SECONDS)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._poke.wait(), timeout=max(0.0, self.poll_seconds - MIN_GAP_SECONDS)
                )
            self._poke.clear()  # before the poll: a job finished during it brings another
            try:
                started = time.monotonic()
                connected = await self._poll()
                took = time.monotonic() - started
                if started - slept + took > SLOW_CYCLE_SECONDS:
                    # Every waiter's wake-up is late by as much: say where the time went.
                    log.warning(
                        "job watcher: a poll cycle took %.3f s: %.3f s to wake up, %.3f s "
                        "waiting for a connection, %.3f s the poll of %d jobs",
                        started - slept + took,
                        started - slept,
                        connected - started,
                        time.monotonic() - connected,
                        len(self._waiters),
                    )
            except UNAVAILABLE as exc:
                # Waiters wake on their own timeouts and read (and fail) themselves.
                log.warning("job watcher: the database is unavailable: %r", exc)
            except Exception:
                # Never let the one poller die: every waiter of the process depends on it.
                log.exception("job watcher: a poll failed; polling on")

    async def _poll(self) -> float:
        """Reads the watched jobs and wakes whom it concerns; answers when it had a connection."""
        watched = list(self._waiters)
        # Before the query: what it returns is the jobs as they stood at least this late.
        polled = time.monotonic()
        if not watched:
            return polled
        async with self._pool.acquire() as conn:
            connected = time.monotonic()
            rows = await conn.fetch(STATES, watched)
        for row in rows:
            for watch in self._waiters.get(row["id"], ()):
                watch._see(row["status"], row["updated_at"], polled)
        return connected
