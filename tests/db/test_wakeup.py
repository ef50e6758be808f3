"""Wake-ups: a process's own NOTIFY is not heard back by its listener (the worker it wakes was
woken when the work was made, and hearing it again would only cost a claim that finds
nothing), and a job leaving fal wakes submissions only when they wait for a slot there."""

from __future__ import annotations

import asyncio

import asyncpg

from app.db.pool import Pool, asyncpg_dsn
from app.db.wakeup import CHANNEL, FREED, Listener, Wakeup


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


def test_a_job_leaving_fal_wakes_submissions_only_while_they_are_held_back() -> None:
    """FREED, made here or heard from another process: the submission loop is woken only if
    its last claim may have left due jobs for want of a slot at fal; every other topic wakes
    its own loop."""
    wakeup = Wakeup(None)
    assert wakeup.submissions_held_back  # before any claim: every wake-up is taken
    wakeup.notify(FREED)
    assert wakeup.local["submit"].is_set()

    wakeup.local["submit"].clear()
    wakeup.submissions_held_back = False
    wakeup.notify(FREED)
    wakeup.wake_here(FREED)
    assert not any(event.is_set() for event in wakeup.local.values())
    wakeup.notify("submit")  # new work always wakes it
    assert wakeup.local["submit"].is_set()

    wakeup.local["submit"].clear()
    wakeup.submissions_held_back = True
    wakeup.wake_here(FREED)
    assert wakeup.local["submit"].is_set()
    wakeup.wake_here("no such topic")  # a notification from a newer release: ignored
