"""A job's events as Server-Sent Events: replayed from the events table, then followed.

The stream holds no database connection while it waits. It reads what is new with one short
indexed query when the process's job watcher (app.jobs.watch) says the job moved, so a thousand
open streams of quiet jobs cost the database the watcher's few queries a second, not a
thousand connections or a thousand reads. The stream ends right after the job's
terminal event, when the process starts draining, or when the database cannot be read: the
client reconnects with `Last-Event-ID` and misses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from app import ids
from app.db.pool import Pool
from app.errors import BadRequest, NotFound
from app.events import history
from app.events.types import TERMINAL_EVENT_TYPES
from app.ids import EVENT_ID_PREFIX, JOB_ID_PREFIX
from app.jobs import repository as jobs
from app.jobs.watch import JobWatcher

log = logging.getLogger(__name__)


class UnknownLastEventId(BadRequest):
    title = "Unknown Last-Event-ID"
    slug = "unknown-last-event-id"


MEDIA_TYPE = "text/event-stream"
# How soon a client whose stream ended comes back.
# Comment lines keep proxies from closing a quiet stream and show us a departed client.
HEARTBEAT_SECONDS = 15.0
RETRY = b"retry: 1000\n\n"
HEARTBEAT = b": keep-alive\n\n"
# How soon a stream waiting on the watcher notices that the process is draining.
STOP_CHECK_SECONDS = 1.0


def frame(row: asyncpg.Record | dict[str, Any]) -> bytes:
    """One event: its id (the deliveries' `webhook-id`), its type, and the webhook body."""
    event_id = ids.encode(EVENT_ID_PREFIX, row["id"])
    data = orjson.dumps(row["payload"])
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (event_id.encode(), row["type"].encode(), data)


async def open_job_stream(
    pool: Pool,
    client_id: uuid.UUID,
    public_job_id: str,
    last_event_id: str | None,
    *,
    stopping: Callable[[], bool],
    watcher: JobWatcher,
) -> AsyncIterator[bytes]:
    """The client's job's event stream, resumed after `last_event_id`. Raises before the
    stream starts, so a wrong id is a problem+json answer and not a broken stream."""
    job_id = ids.decode(JOB_ID_PREFIX, public_job_id)
    status = None if job_id is None else await jobs.get_status(pool, client_id, job_id)
    if job_id is None or status is None:
        raise NotFound(f"No job {public_job_id!r}.")
    after = history.START
    if last_event_id:
        event_id = ids.decode(EVENT_ID_PREFIX, last_event_id.strip())
        seen = None if event_id is None else await history.position(pool, job_id, event_id)
        if seen is None:
            raise UnknownLastEventId(f"{last_event_id!r} is not an event of job {public_job_id}.")
        after, seen_type = seen
        if seen_type in TERMINAL_EVENT_TYPES:
            return _ended()
    return job_events(pool, job_id, after, stopping=stopping, watcher=watcher, status=status)


async def _ended() -> AsyncIterator[bytes]:
    yield RETRY


async def job_events(
    pool: Pool,
    job_id: uuid.UUID,
    after: tuple[datetime, uuid.UUID],
    *,
    stopping: Callable[[], bool],
    watcher: JobWatcher,
    status: str | None = None,
) -> AsyncIterator[bytes]:
    """Frames of the job's events after `after`, until its terminal event. The stream reads
    only when the process's one poller says the job moved, and sends heartbeats meanwhile.

    `status`: the job's status read before this began. Every event comes with a change of
    status, so the watcher wakes the stream only when the job's differs from it, not "in case"
    at its first poll: the read below, made after the watch began, misses nothing before."""
    yield RETRY
    last_write = time.monotonic()
    async with watcher.watch(job_id, status) as watch:
        changed = watch.changed
        while True:
            changed.clear()  # before the read: a change after it wakes the wait below
            try:
                rows = await history.list_after(pool, job_id, after)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("event stream of job %s ended: database unavailable: %r", job_id, exc)
                return
            for row in rows:
                yield frame(row)
                last_write = time.monotonic()
                if row["type"] in TERMINAL_EVENT_TYPES:
                    return
                after = (row["created_at"], row["id"])
            if len(rows) == history.PAGE_SIZE:
                continue  # more may be waiting behind a full page
            while not changed.is_set():
                if stopping():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=STOP_CHECK_SECONDS)
                if not changed.is_set() and time.monotonic() - last_write >= HEARTBEAT_SECONDS:
                    yield HEARTBEAT
                    last_write = time.monotonic()
