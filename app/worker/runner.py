"""The worker: loops (submission, reconciliation, delivery) claiming due rows and working them.

Each loop claims at most as many rows as it has free slots, works each claimed row in a task
of its own, and sleeps until it is woken (new work, a free slot) or the poll interval passes.
On stop it claims nothing more and gives the calls in flight `shutdown_timeout_seconds` to end;
what is still running then is cancelled, and its lease brings it back to a worker later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from app.db.wakeup import Topic, Wakeup, listen
from app.services import Services, open_services
from app.settings import Settings
from app.webhooks.delivery import make_session
from app.worker import queue, reconciler, submitter
from app.worker.context import WorkerContext
from app.worker.deliverer import Deliverer

log = logging.getLogger(__name__)

Claim = Callable[[WorkerContext, int], Awaitable[list[asyncpg.Record]]]
Work = Callable[[WorkerContext, asyncpg.Record], Coroutine[Any, Any, None]]


async def _claim_submissions(ctx: WorkerContext, limit: int) -> list[asyncpg.Record]:
    return await queue.claim_submissions(ctx.pool, limit, ctx.settings.submit_lease_seconds)


async def _claim_reconciliations(ctx: WorkerContext, limit: int) -> list[asyncpg.Record]:
    return await queue.claim_reconciliations(ctx.pool, limit, ctx.settings.reconcile_lease_seconds)


class Worker:
    """Submission and reconciliation loops, and — given a `Deliverer` — the delivery loop."""

    def __init__(
        self,
        ctx: WorkerContext,
        wakeup: Wakeup,
        *,
        listen_url: str | None,
        deliverer: Deliverer | None = None,
    ) -> None:
        self.ctx = ctx
        self.wakeup = wakeup
        self._listen_url = listen_url
        self._stop = asyncio.Event()
        settings = ctx.settings
        self._loops: dict[Topic, tuple[Claim, Work, int]] = {
            "submit": (_claim_submissions, submitter.submit, settings.worker_concurrency),
            "reconcile": (
                _claim_reconciliations,
                reconciler.reconcile,
                settings.worker_concurrency,
            ),
        }
        if deliverer is not None:
            self._loops["deliver"] = (
                deliverer.claim,
                deliverer.work,
                settings.delivery_concurrency,
            )

    def stop(self) -> None:
        self._stop.set()
        for event in self.wakeup.local.values():
            event.set()

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(self._loop(topic, *loop), name=f"worker-{topic}")
            for topic, loop in self._loops.items()
        ]
        if self._listen_url:
            tasks.append(
                asyncio.create_task(
                    listen(self._listen_url, self._on_topic, self._stop), name="worker-listen"
                )
            )
        try:
            await asyncio.gather(*tasks)
        except Exception:
            log.exception("a worker loop died; stopping the worker")
            raise
        finally:
            for task in tasks:
                task.cancel()

    def _on_topic(self, topic: str) -> None:
        if topic in self.wakeup.local:
            self.wakeup.local[topic].set()

    async def _loop(self, topic: Topic, claim: Claim, work: Work, capacity: int) -> None:
        ctx = self.ctx
        wake = self.wakeup.local[topic]
        in_flight: set[asyncio.Task[None]] = set()
        # Under load, slots free one at a time; claiming then would cost a query per row.
        # While work is in flight, claim only once this many slots are free.
        batch = max(1, capacity // 8)

        def done(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            if capacity - len(in_flight) >= batch:
                wake.set()
            if not task.cancelled() and task.exception() is not None:
                log.error("%s step failed", topic, exc_info=task.exception())

        while not self._stop.is_set():
            wake.clear()  # before claiming, so a wake-up during the claim is not lost
            free = capacity - len(in_flight)
            claimed: list[asyncpg.Record] = []
            if free >= batch or (free > 0 and not in_flight):
                try:
                    claimed = await claim(ctx, free)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("%s claim failed, retrying: %r", topic, exc)
                for row in claimed:
                    task = asyncio.create_task(work(ctx, row))
                    in_flight.add(task)
                    task.add_done_callback(done)
            if claimed and len(claimed) == free:
                await asyncio.sleep(0)  # more may be due: claim again at once
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=ctx.settings.worker_poll_seconds)

        if in_flight:
            _, pending = await asyncio.wait(
                in_flight, timeout=ctx.settings.shutdown_timeout_seconds
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if pending:
                log.warning("%s: %d calls cancelled at shutdown", topic, len(pending))


@asynccontextmanager
async def running_worker(services: Services) -> AsyncIterator[Worker]:
    """A worker running in this event loop for the duration of the block, then drained."""
    settings = services.settings
    ctx = WorkerContext(
        pool=services.pool,
        fal=services.fal,
        settings=settings,
        wakeup=services.wakeup,
        callback_urls=services.callback_urls,
    )
    session = make_session(
        concurrency=settings.delivery_concurrency,
        timeout=settings.delivery_timeout_seconds,
        allow_private=settings.allow_private_webhook_urls,
    )
    deliverer = Deliverer(ctx, session)
    worker = Worker(ctx, services.wakeup, listen_url=settings.database_url, deliverer=deliverer)
    task = asyncio.create_task(worker.run(), name="worker")
    try:
        yield worker
    finally:
        worker.stop()
        await task
        await deliverer.aclose()
        await session.close()


async def run_until_signalled(settings: Settings) -> None:
    """`falrelay worker`: the workers alone, until SIGINT or SIGTERM, then drained."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with open_services(settings) as services, running_worker(services):
        log.info("worker running")
        await stop.wait()
        log.info("worker draining")
