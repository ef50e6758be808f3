"""Waking workers when there is work: a hint, never the only way work is found.

In the process that made the work, the worker's event is set at once. Other processes hear a
Postgres NOTIFY, sent from its own short transaction after the work was committed (a NOTIFY in
the writing transaction would take Postgres's global notify lock at every commit and serialise
them) and coalesced to at most one per topic per `coalesce` seconds. Workers poll as well, so a
lost notification only costs latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Literal

import asyncpg

from app.db.pool import Pool, asyncpg_dsn

log = logging.getLogger(__name__)

CHANNEL = "falrelay_work"
Topic = Literal["submit", "reconcile", "deliver"]
TOPICS: tuple[Topic, ...] = ("submit", "reconcile", "deliver")


class Wakeup:
    def __init__(self, pool: Pool | None, *, coalesce: float = 0.02) -> None:
        self._pool = pool
        self._coalesce = coalesce
        self.local: dict[Topic, asyncio.Event] = {topic: asyncio.Event() for topic in TOPICS}
        self._pending: dict[Topic, asyncio.Task[None]] = {}

    def notify(self, topic: Topic) -> None:
        self.local[topic].set()
        if self._pool is None or topic in self._pending:
            return
        self._pending[topic] = asyncio.create_task(self._send(topic))

    async def _send(self, topic: Topic) -> None:
        try:
            await asyncio.sleep(self._coalesce)
            assert self._pool is not None
            await self._pool.execute("SELECT pg_notify($1, $2)", CHANNEL, topic)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("NOTIFY failed (workers will find the work by polling): %r", exc)
        finally:
            self._pending.pop(topic, None)

    async def aclose(self) -> None:
        tasks = list(self._pending.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def listen(database_url: str, on_topic: Callable[[str], None], stop: asyncio.Event) -> None:
    """LISTEN on a dedicated connection until `stop`; reconnects after a loss."""
    while not stop.is_set():
        conn: asyncpg.Connection[Any] | None = None
        try:
            conn = await asyncpg.connect(asyncpg_dsn(database_url))
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
            await conn.add_listener(CHANNEL, lambda _c, _pid, _ch, payload: on_topic(payload))
            # Anything committed while we were not listening is found by the first poll.
            for topic in TOPICS:
                on_topic(topic)
            stop_wait = asyncio.create_task(stop.wait())
            lost_wait = asyncio.create_task(lost.wait())
            await asyncio.wait({stop_wait, lost_wait}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            lost_wait.cancel()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("LISTEN connection failed, retrying: %r", exc)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2)
        if not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
