"""Loops that never stop silently.

Every long-running loop of a process (submission, reconciliation, delivery, recording results,
LISTEN) runs under a `Supervisor`, one iteration at a time. Any exception an iteration raises,
of any type, is logged with its traceback and the loop starts again after a capped, jittered
backoff; an iteration that outlives `stall_after` is cancelled and counts as a failure. Only a
stop ends a loop. (Before, one unexpected exception type in one loop stopped the whole worker
while the API went on answering 201.)

A completed iteration is a heartbeat. A loop whose last heartbeat is older than `stall_after`
is stalled: `/readyz` answers 503 naming it. One silent for `LIVENESS_FACTOR` times as long
is one the supervisor could not mend: `/livez` fails, and Kubernetes restarts the process. An
iteration that failed only because the database is unreachable still shows the loop alive:
a restart would not bring the database back, and would drop the results workers hold for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from app.db.availability import is_unavailable
from app.metrics import LOOP_RESTARTS

log = logging.getLogger(__name__)

RESTART_FIRST_SECONDS = 0.1
# Short enough that loops are back within seconds of their database, long enough that a
# failing loop logs a traceback a few times a minute, not hundreds.
RESTART_MAX_SECONDS = 5.0
LIVENESS_FACTOR = 3

Iteration = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class LoopHealth:
    name: str
    stall_after: float
    last_beat: float  # the last completed iteration
    last_alive: float  # the last iteration that completed or failed for want of a database
    failures: int = 0  # in a row; a completed iteration resets it
    # What went wrong last, coarsely (it is shown by unauthenticated probes): "stalled",
    # "database unavailable", or the exception's type; the traceback is in the log.
    last_error: str | None = None
    restarts: int = field(default=0)

    def silent_for(self, now: float) -> float:
        return now - self.last_beat


class Supervisor:
    """Runs named loops until `stop`, restarting each after any failure."""

    def __init__(
        self,
        *,
        stall_after: float,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stall_after = stall_after
        self.loops: dict[str, LoopHealth] = {}
        self._rng = rng or random.Random()
        self._clock = clock
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, name: str, iteration: Iteration, *, stall_after: float | None = None) -> None:
        now = self._clock()
        health = LoopHealth(name, stall_after or self.stall_after, last_beat=now, last_alive=now)
        self.loops[name] = health
        self._tasks.append(asyncio.create_task(self._run(health, iteration), name=name))

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def pause(self, seconds: float) -> None:
        """Sleep, for a loop that works on a timer, but wake at once on `stop`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def wait(self) -> None:
        """Until every loop has ended (after `stop`)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def stalled(self) -> list[LoopHealth]:
        """Loops with no completed iteration within their bound: the process is not ready."""
        now = self._clock()
        return [h for h in self.loops.values() if h.silent_for(now) > h.stall_after]

    def dead(self) -> list[LoopHealth]:
        """Loops silent so long that restarting them in place has not helped: restart the
        process."""
        now = self._clock()
        return [
            h for h in self.loops.values() if now - h.last_alive > LIVENESS_FACTOR * h.stall_after
        ]

    async def _run(self, health: LoopHealth, iteration: Iteration) -> None:
        while not self._stop.is_set():
            bound = asyncio.timeout(health.stall_after)
            try:
                async with bound:
                    await iteration()
            except (KeyboardInterrupt, SystemExit):
                raise
            except asyncio.CancelledError:
                # Cancelled from outside (the process is going down), not by our bound:
                # asyncio.timeout turns its own cancellation into TimeoutError.
                raise
            except BaseException as exc:
                if isinstance(exc, TimeoutError) and bound.expired():
                    self._failed(health, "stalled")
                    log.error(
                        "loop %s stalled for %g s; restarting it",
                        health.name,
                        health.stall_after,
                        extra={"loop": health.name},
                    )
                elif is_unavailable(exc):
                    health.last_alive = self._clock()
                    self._failed(health, "database unavailable")
                    log.warning(
                        "loop %s: the database is unavailable; retrying",
                        health.name,
                        exc_info=exc,
                        extra={"loop": health.name},
                    )
                else:
                    self._failed(health, type(exc).__name__)
                    log.exception(
                        "loop %s failed (%d in a row); restarting it",
                        health.name,
                        health.failures,
                        extra={"loop": health.name},
                    )
            else:
                health.last_beat = health.last_alive = self._clock()
                health.failures = 0
                continue
            await self._backoff(health)

    def _failed(self, health: LoopHealth, error: str) -> None:
        health.failures += 1
        health.restarts += 1
        health.last_error = error
        LOOP_RESTARTS.labels(health.name).inc()

    async def _backoff(self, health: LoopHealth) -> None:
        ceiling = min(RESTART_FIRST_SECONDS * 2 ** (health.failures - 1), RESTART_MAX_SECONDS)
        # Full jitter between half and all of the ceiling: replicas that failed together (a
        # database restart) come back spread out.
        delay = ceiling * self._rng.uniform(0.5, 1.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=delay)
