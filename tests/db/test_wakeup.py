"""A process's own NOTIFY is not heard back by its listener: the worker it wakes was woken when
the work was made, and hearing it again would only cost a claim that finds nothing."""

from __future__ import annotations

import asyncio

import asyncpg

from app.db.pool import Pool, asyncpg_dsn
from app.db.wakeup import CHANNEL, Listener, Wakeup


async def test_a_process_does_not_hear_its_own_notifications(pool: Pool, database_url: str) -> None:
    wakeup = Wakeup(pool, coalesce=0)
    heard: list[str] = []
    connected, reconcile = asyncio.Event(), asyncio.Event()

    def on_topic(topic: str) -> None:
        heard.append(topic)
        connected.set()
        if topic == "reconcile":
            reconcile.set()

    listener = Listener(database_url, on_topic, ignore=wakeup.sent_here)
    listening = asyncio.create_task(listener.iterate())
    other = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await asyncio.wait_for(connected.wait(), 30)  # connecting wakes every topic once
        heard.clear()
        reconcile.clear()
        wakeup.notify("deliver")
        await asyncio.wait_for(asyncio.gather(*wakeup._pending.values()), 30)
        assert wakeup.local["deliver"].is_set()  # woken here, at once
        # Another process's notification, sent after ours: heard, and ours (before it) not.
        await other.execute("SELECT pg_notify($1, 'reconcile')", CHANNEL)
        await asyncio.wait_for(reconcile.wait(), 30)
        assert heard == ["reconcile"]
    finally:
        listener.stop()
        await listening
        await listener.aclose()
        await other.close()
        await wakeup.aclose()
