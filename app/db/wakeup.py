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
# A worker loop's topic: new work for it.
Topic = Literal["submit", "reconcile", "deliver", "mirror"]
TOPICS: tuple[Topic, ...] = ("submit", "reconcile", "deliver", "mirror")
# Not a loop's: a job left fal, so a slot there is free. It wakes the submission loop only
# while that loop's last claim may have left due jobs for want of such a slot (the account's
# or a client's cap); else it would cost a claim that finds nothing, one per finished job.
FREED: Literal["freed"] = "freed"


# How many of the sessions this process sent a NOTIFY from are remembered (`sent_here`): a
# pool's worth, and more as its connections are replaced.
_SENDERS_KEPT = 64


class Wakeup:
    def __init__(self, pool: Pool | None, *, coalesce: float = 0.02) -> None:
        self._pool = pool
        self._coalesce = coalesce
        self.local: dict[Topic, asyncio.Event] = {topic: asyncio.Event() for topic in TOPICS}
        # Set by this process's submission loop after each claim (see FREED). True until its
        # first claim: a worker that knows nothing yet takes every wake-up.
        self.submissions_held_back = True
        self._pending: dict[Topic | Literal["freed"], asyncio.Task[None]] = {}
        # Backend pids, oldest first (a dict as an ordered set).
        self._senders: dict[int, None] = {}

    def sent_here(self, pid: int) -> bool:
        """Whether a NOTIFY from backend `pid` is likely this process's own: its worker was
        woken when the work was made, so hearing it again would only cost a claim that finds
        nothing. (A pid Postgres gave another process's session since can make a foreign
        notification be skipped: a hint lost, which polling makes up for.)"""
        return pid in self._senders

    def notify(self, topic: Topic | Literal["freed"]) -> None:
        self.wake_here(topic)
        if self._pool is None or topic in self._pending:
            return
        if topic == FREED and "submit" in self._pending:
            return  # the "submit" on its way wakes other processes' submissions anyway
        self._pending[topic] = asyncio.create_task(self._send(topic))

    def wake_here(self, topic: str) -> None:
        """This process's loops for `topic`, made here or heard from another process."""
        if topic == FREED:
            if self.submissions_held_back:
                self.local["submit"].set()
        elif topic in self.local:
            self.local[topic].set()

    async def _send(self, topic: Topic | Literal["freed"]) -> None:
        try:
            await asyncio.sleep(self._coalesce)
            assert self._pool is not None
            async with self._pool.acquire() as conn:
                pid = conn.get_server_pid()
                self._senders.pop(pid, None)
                self._senders[pid] = None
                if len(self._senders) > _SENDERS_KEPT:
                    del self._senders[next(iter(self._senders))]
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, topic)
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


class Listener:
    """LISTEN on a dedicated connection, one supervised iteration at a time.

    An iteration connects if need be, then waits for the connection to be lost, for at most
    `check_every` seconds; a connection still there is pinged, so a half-open socket (a
    database that vanished without a FIN) is noticed, and a completed iteration is the loop's
    heartbeat. Errors are left to the supervisor, which reconnects after its backoff.
    """

    def __init__(
        self,
        database_url: str,
        on_topic: Callable[[str], None],
        *,
        check_every: float = 10.0,
        ignore: Callable[[int], bool] = lambda _pid: False,
    ) -> None:
        """`ignore(pid)`: skip a notification sent from that backend (`Wakeup.sent_here`)."""
        self._dsn = asyncpg_dsn(database_url)
        self._on_topic = on_topic
        self._ignore = ignore
        self._check_every = check_every
        self._conn: asyncpg.Connection[Any] | None = None
        self._lost = asyncio.Event()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Ends the current iteration's wait at once (the supervisor then runs no more)."""
        self._stopping.set()

    async def iterate(self) -> None:
        if self._conn is None or self._conn.is_closed():
            await self._connect()
        assert self._conn is not None
        waits = [asyncio.ensure_future(e.wait()) for e in (self._lost, self._stopping)]
        try:
            await asyncio.wait(waits, timeout=self._check_every, return_when="FIRST_COMPLETED")
        finally:
            for waiting in waits:
                waiting.cancel()
        if self._stopping.is_set():
            return
        if self._lost.is_set():
            await self.aclose()
            raise ConnectionError("the LISTEN connection was lost")
        await self._conn.execute("SELECT 1", timeout=self._check_every)

    async def _connect(self) -> None:
        await self.aclose()
        self._lost = asyncio.Event()
        lost = self._lost
        conn = await asyncpg.connect(
            self._dsn,
            timeout=self._check_every,
            server_settings={"application_name": "falrelay-listen"},
        )
        self._conn = conn
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(CHANNEL, self._heard)
        # Anything committed while we were not listening is found by the first poll.
        for topic in TOPICS:
            self._on_topic(topic)

    def _heard(self, _conn: Any, pid: int, _channel: str, payload: object) -> None:
        if not self._ignore(pid):
            self._on_topic(str(payload))

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
