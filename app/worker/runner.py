"""The worker: loops (submission, reconciliation, delivery) claiming due rows and working them.

Each loop claims at most as many rows as it has free slots, works each claimed row in a task
of its own, and sleeps until it is woken (new work, a free slot) or the poll interval passes.
On stop it claims nothing more and gives the calls in flight `shutdown_timeout_seconds` to end;
what is still running then is cancelled, and its lease brings it back to a worker later.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from app.catalog.registry import CATALOG, REFRESH_SECONDS
from app.db.wakeup import Listener, Topic
from app.jobs import queue
from app.lifecycle.retention import Retention
from app.runtime import Runtime, open_runtime
from app.settings import Settings
from app.webhooks.delivery import Sender
from app.worker import mirrorer, reconciler, submitter
from app.worker.deliverer import Deliverer
from app.worker.probes import ProbeServer
from app.worker.supervision import Supervisor

log = logging.getLogger(__name__)

Claim = Callable[[Runtime, int], Awaitable[list[asyncpg.Record]]]
Work = Callable[[Runtime, asyncpg.Record], Coroutine[Any, Any, None]]


async def _claim_submissions(runtime: Runtime, limit: int) -> list[asyncpg.Record]:
    settings = runtime.settings
    claimed = await queue.claim_submissions(
        runtime.pool,
        limit,
        settings.submit_lease_seconds,
        max_in_flight=settings.fal_max_in_flight,
        default_client_max_in_flight=settings.default_max_in_flight,
        fair_share=settings.fair_share,
    )
    runtime.wakeup.submissions_held_back = claimed.held_back
    return claimed.rows


async def _claim_reconciliations(runtime: Runtime, limit: int) -> list[asyncpg.Record]:
    return await queue.claim_reconciliations(
        runtime.pool, limit, runtime.settings.reconcile_lease_seconds
    )


async def _claim_mirrors(runtime: Runtime, limit: int) -> list[asyncpg.Record]:
    return await queue.claim_mirrors(runtime.pool, limit, runtime.settings.mirror_lease_seconds)


@dataclass(eq=False)
class _Queue:
    """One claim loop and the steps it started; kept outside the loop's iteration so that a
    restarted loop still knows what is in flight (and drains it at stop)."""

    topic: Topic
    claim: Claim
    work: Work
    capacity: int
    # Whether the last claim left due rows for what this worker has in flight (fair share of
    # deliveries counts them, and each target's cap): then a step that ends may let it take
    # more.
    held_back: Callable[[], bool] = lambda: False
    in_flight: set[asyncio.Task[None]] = field(default_factory=set)
    # The last claim filled every free slot: more may be due, and a slot freeing lets the loop
    # take it. A claim that took less found nothing more (or only what the counts held back).
    saturated: bool = True

    @property
    def batch(self) -> int:
        # Under load, slots free one at a time; claiming then would cost a query per row.
        # While work is in flight, claim only once this many slots are free.
        return max(1, self.capacity // 8)


class Worker:
    """Submission and reconciliation loops, and — given a `Deliverer` — the delivery loop and
    its recorder, each supervised (app.worker.supervision)."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        listen_url: str | None,
        deliverer: Deliverer | None = None,
    ) -> None:
        self.runtime = runtime
        self._deliverer = deliverer
        settings = runtime.settings
        self._listener = (
            Listener(
                listen_url,
                self._on_topic,
                check_every=min(10.0, settings.loop_stall_seconds / 3),
                ignore=runtime.wakeup.sent_here,
            )
            if listen_url
            else None
        )
        self.supervisor = Supervisor(stall_after=settings.loop_stall_seconds, rng=runtime.rng)
        self._queues = [
            _Queue("submit", _claim_submissions, submitter.submit, settings.worker_concurrency),
            _Queue(
                "reconcile",
                _claim_reconciliations,
                reconciler.reconcile,
                settings.worker_concurrency,
            ),
        ]
        if deliverer is not None:
            self._queues.append(
                _Queue(
                    "deliver",
                    deliverer.claim,
                    deliverer.work,
                    deliverer.lease_capacity,
                    held_back=lambda: deliverer.held_back,
                )
            )
        self._queues.append(
            _Queue("mirror", _claim_mirrors, mirrorer.mirror, settings.mirror_concurrency)
        )

    def stop(self) -> None:
        self.supervisor.stop()
        for event in self.runtime.wakeup.local.values():
            event.set()
        if self._deliverer is not None:
            self._deliverer.stop()
        if self._listener is not None:
            self._listener.stop()

    async def _refresh_catalog(self) -> None:
        # Imported models reach this process's job views (the `files` of webhook payloads)
        # within a refresh period; intake re-reads on its own when a job names a new model.
        await CATALOG.refresh(self.runtime.pool)
        await self.supervisor.pause(REFRESH_SECONDS)

    async def run(self) -> None:
        """Until `stop`; then the steps in flight get `shutdown_timeout_seconds` to end."""
        for q in self._queues:
            self.supervisor.start(q.topic, functools.partial(self._iterate, q))
        if self._deliverer is not None:
            self.supervisor.start("record", self._deliverer.record_pending)
        # Its iteration sleeps between refreshes; the sleep is not a stall.
        self.supervisor.start(
            "catalog",
            self._refresh_catalog,
            stall_after=REFRESH_SECONDS + self.supervisor.stall_after,
        )
        # Retention and the outbox of files to delete (app.lifecycle); idle, it sleeps.
        retention = Retention(
            self.runtime.pool,
            self.runtime.settings,
            self.runtime.store,
            pause=self.supervisor.pause,
            now=self.runtime.now,
        )
        self.supervisor.start("retention", retention.iterate, stall_after=retention.stall_after)
        listener = self._listener
        if listener is not None:
            self.supervisor.start("listen", listener.iterate)
        try:
            await self.supervisor.wait()
            await asyncio.gather(*(self._drain(q) for q in self._queues))
        finally:
            if listener is not None:
                await listener.aclose()

    def _on_topic(self, topic: str) -> None:
        self.runtime.wakeup.wake_here(topic)

    async def _iterate(self, q: _Queue) -> None:
        """One pass: claim what free slots allow, start a step per row, then wait to be woken
        (new work, a free slot) or for the poll interval."""
        runtime = self.runtime
        wake = self.runtime.wakeup.local[q.topic]
        woken = wake.is_set()
        wake.clear()  # before claiming, so a wake-up during the claim is not lost
        free = q.capacity - len(q.in_flight)
        claimed: list[asyncpg.Record] = []
        if free < q.batch and q.in_flight:
            # Woken for work it has too few free slots to claim yet: the step that frees
            # enough must wake it, whatever the last claim found.
            q.saturated = q.saturated or woken
        elif not self.supervisor.stopping:
            claimed = await q.claim(runtime, free)
            q.saturated = len(claimed) == free
            loop = asyncio.get_running_loop()  # once, not per row: a getpid() each on 3.11
            for row in claimed:
                task = loop.create_task(q.work(runtime, row))
                q.in_flight.add(task)
                task.add_done_callback(functools.partial(self._done, q, wake))
        if claimed and len(claimed) == free:
            return  # more may be due: claim again at once
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=runtime.settings.worker_poll_seconds)

    @staticmethod
    def _done(q: _Queue, wake: asyncio.Event, task: asyncio.Task[None]) -> None:
        q.in_flight.discard(task)
        # A freed slot matters only to a loop that left work for want of one; else waking it
        # costs a claim that finds nothing (new work wakes it itself).
        if (q.saturated or q.held_back()) and q.capacity - len(q.in_flight) >= q.batch:
            wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("%s step failed", q.topic, exc_info=task.exception())

    async def _drain(self, q: _Queue) -> None:
        if not q.in_flight:
            return
        _, pending = await asyncio.wait(
            q.in_flight, timeout=self.runtime.settings.shutdown_timeout_seconds
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            log.warning("%s: %d calls cancelled at shutdown", q.topic, len(pending))


@asynccontextmanager
async def running_worker(runtime: Runtime) -> AsyncIterator[Worker]:
    """A worker running in this event loop for the duration of the block, then drained. Its
    delivery sender is its own, opened and closed here."""
    settings = runtime.settings
    sender = Sender(
        concurrency=settings.delivery_concurrency,
        timeout=settings.delivery_timeout_seconds,
        allow_private=settings.allow_private_webhook_urls,
    )
    deliverer = Deliverer(runtime, sender)
    worker = Worker(runtime, listen_url=settings.database_url, deliverer=deliverer)
    task = asyncio.create_task(worker.run(), name="worker")
    try:
        yield worker
    finally:
        worker.stop()
        await task
        await deliverer.aclose()
        await sender.close()


async def run_until_signalled(settings: Settings) -> None:
    """`falrelay worker`: the workers alone, until SIGINT or SIGTERM, then drained; with
    FALRELAY_METRICS_PORT, metrics and probes on that port until the drain is done."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        runtime = await stack.enter_async_context(open_runtime(settings))
        probes: ProbeServer | None = None
        if settings.metrics_port is not None:
            probes = ProbeServer(
                runtime.pool,
                host="0.0.0.0",
                port=settings.metrics_port,
                metrics_token=(
                    settings.metrics_token.get_secret_value() if settings.metrics_token else None
                ),
                queue_refresh_seconds=settings.metrics_queue_refresh_seconds,
            )
            await probes.start()
            stack.push_async_callback(probes.aclose)
        worker = await stack.enter_async_context(running_worker(runtime))
        if probes is not None:
            probes.watch(worker.supervisor)
        log.info("worker running")
        await stop.wait()
        log.info("worker draining")
